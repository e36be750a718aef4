"""Rendering campaign templates for one recipient: variables, precedence, escaping, CSS."""

from __future__ import annotations

import json
import textwrap
from html.parser import HTMLParser

import pytest

from email_automation import email_templates
from email_automation.database import default_templates
from email_automation.email_templates import (
    CampaignTemplate,
    RenderedEmail,
    check_template,
    recipient_context,
)
from email_automation.errors import TemplateRenderError


def recipient(**overrides):
    """A row shaped like `recipients` (sqlite3.Row behaves like this dict)."""
    row = {
        "email": "ada@example.org", "first_name": "Ada", "last_name": "Lovelace",
        "company": "Analytical Engines", "custom_subject": None, "custom_body": None,
        "fields": json.dumps({"role": "CTO", "Job Title": "Chief Technology Officer"}),
    }
    row.update(overrides)
    return row


def campaign(subject="Hello {{ first_name }}", html="<p>Hi {{ first_name }}</p>", text=None, name="spring"):
    return {"name": name, "subject_template": subject, "html_template": html, "text_template": text}


class Tags(HTMLParser):
    """Every start tag and its attributes, as a browser would see them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


# --- variables ------------------------------------------------------------------------------

def test_every_recipient_field_and_extra_csv_column_is_a_variable(settings):
    template = CampaignTemplate.from_campaign(campaign(
        subject="{{ first_name }}, a question for {{ company }}",
        html=textwrap.dedent("""\
            <p>{{ first_name }} {{ last_name }} &lt;{{ email }}&gt;, {{ role }} at {{ company }}</p>
            <p>{{ fields["Job Title"] }} / {{ campaign }} / {{ sender_name }} {{ sender_email }}</p>"""),
    ))
    rendered = template.render(recipient(), settings)
    assert rendered.subject == "Ada, a question for Analytical Engines"
    assert "<p>Ada Lovelace &lt;ada@example.org&gt;, CTO at Analytical Engines</p>" in rendered.html
    assert "<p>Chief Technology Officer / spring / Jane Sender jane@example.com</p>" in rendered.html


def test_context_has_quoted_unsubscribe_url_and_address_that_csv_columns_cannot_override(settings):
    settings = settings.model_copy(update={
        "unsubscribe_url": "https://example.com/unsub?e={email}", "physical_address": "1 Main St, Springfield"})
    # A CSV column named like a built-in must not redirect the unsubscribe link or fake the sender.
    row = recipient(email="a+b@example.org", fields=json.dumps(
        {"unsubscribe_url": "https://evil.example", "sender_email": "ceo@bank.example", "team": "R&D"}))
    context = recipient_context(row, settings, "spring")
    assert context["unsubscribe_url"] == "https://example.com/unsub?e=a%2Bb%40example.org"
    assert context["sender_email"] == "jane@example.com"
    assert context["physical_address"] == "1 Main St, Springfield"
    assert context["team"] == "R&D"
    assert context["campaign"] == "spring"


def test_unsubscribe_url_is_empty_when_not_configured(settings):
    assert recipient_context(recipient(), settings, "spring")["unsubscribe_url"] == ""


def test_subject_is_available_to_the_body(settings):
    template = CampaignTemplate.from_campaign(campaign(html="<title>{{ subject }}</title><p>x</p>"))
    assert "<title>Hello Ada</title>" in template.render(recipient(), settings).html


# --- custom subject and body ----------------------------------------------------------------

def test_custom_subject_replaces_the_campaign_subject_and_stays_on_one_line(settings):
    template = CampaignTemplate.from_campaign(campaign())
    rendered = template.render(recipient(custom_subject="Following up\non our talk"), settings)
    assert rendered.subject == "Following up on our talk"
    assert "Hi Ada" in rendered.html  # the campaign body is still used


def test_custom_body_replaces_the_campaign_body_keeping_paragraphs_and_escaping(settings):
    settings = settings.model_copy(update={
        "unsubscribe_url": "https://example.com/u/{email}", "physical_address": "1 Main St"})
    body = "Dear Ada,\n\nLoved your <b>talk</b> & slides.\nSee you soon.\n\n\nJane"
    rendered = CampaignTemplate.from_campaign(campaign()).render(recipient(custom_body=body), settings)
    assert "Hi Ada" not in rendered.html
    assert ("<p>Dear Ada,</p>\n<p>Loved your &lt;b&gt;talk&lt;/b&gt; &amp; slides.<br>\nSee you soon.</p>\n<p>Jane</p>"
            in rendered.html)
    # The compliance footer survives a custom body.
    assert 'href="https://example.com/u/ada%40example.org"' in rendered.html
    assert "1 Main St" in rendered.html
    assert rendered.text.startswith("Dear Ada,\n\nLoved your <b>talk</b> & slides.\nSee you soon.\n\nJane\n")


# --- escaping -------------------------------------------------------------------------------

HOSTILE = {
    "first_name": "<script>alert(1)</script>",
    "company": '"><img src=x onerror=alert(1)>',
    "fields": json.dumps({"role": "<iframe src=//evil>"}),
}


def test_recipient_data_never_reaches_the_html_as_markup(settings):
    html = '<p>Hi {{ first_name }}</p><a title="{{ company }}" href="https://x.example/?c={{ company }}">{{ role }}</a>'
    rendered = CampaignTemplate.from_campaign(campaign(html=html)).render(recipient(**HOSTILE), settings)
    tags = Tags(rendered.html).tags
    assert [tag for tag, _ in tags if tag in {"p", "a"}] == ["p", "a"]
    assert not [tag for tag, _ in tags if tag in {"script", "img", "iframe"}]
    assert all("onerror" not in attrs for _, attrs in tags)
    anchor = dict(tags)["a"]
    assert anchor["title"] == HOSTILE["company"]  # shown as text, not markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html


def test_default_template_escapes_recipient_data(settings):
    subject, html = default_templates()
    rendered = CampaignTemplate("default", subject, html).render(recipient(**HOSTILE), settings)
    tags = Tags(rendered.html).tags
    assert not [tag for tag, _ in tags if tag in {"script", "img", "iframe"}]
    assert all("onerror" not in attrs for _, attrs in tags)


def test_subject_is_not_html_escaped(settings):
    template = CampaignTemplate.from_campaign(campaign(subject="Hello {{ company }}"))
    rendered = template.render(recipient(company="Smith & Sons <Ltd>"), settings)
    assert rendered.subject == "Hello Smith & Sons <Ltd>"


def test_sandbox_blocks_unsafe_attribute_access(settings):
    template = CampaignTemplate.from_campaign(campaign(html="{{ ''.__class__.__mro__[1].__subclasses__() }}"))
    with pytest.raises(TemplateRenderError, match="cannot render the HTML body for ada@example.org: SecurityError"):
        template.render(recipient(), settings)


# --- errors ---------------------------------------------------------------------------------

def test_undefined_variable_names_variable_recipient_and_campaign(settings):
    template = CampaignTemplate.from_campaign(campaign(html="<p>Hi {{ first_name }}, {{ job_title }}</p>"))
    with pytest.raises(TemplateRenderError) as info:
        template.render(recipient(), settings)
    assert str(info.value) == (
        "campaign 'spring': cannot render the HTML body for ada@example.org: 'job_title' is undefined"
        " (add that column to the CSV, or change the template)"
    )


def test_undefined_variable_in_subject_is_reported_as_subject(settings):
    template = CampaignTemplate.from_campaign(campaign(subject="Hi {{ nickname }}"))
    with pytest.raises(TemplateRenderError, match="cannot render the subject for ada@example.org: 'nickname' is undefined"):
        template.render(recipient(), settings)


def test_check_template_reports_the_line_of_a_syntax_error():
    html = "<p>one</p>\n<p>two</p>\n<p>{{ first_name }</p>\n"
    with pytest.raises(TemplateRenderError) as info:
        check_template("Hello {{ first_name }}", html, None)
    assert str(info.value).startswith("HTML body template line 3: unexpected '}'")


def test_check_template_names_the_subject_and_text_parts():
    with pytest.raises(TemplateRenderError, match=r"^subject template line 1: "):
        check_template("Hello {% if x %}", "<p></p>", None)
    with pytest.raises(TemplateRenderError, match=r"^text body template line 2: "):
        check_template("Hello", "<p></p>", "Hi\n{{ first_name ")
    check_template("Hello {{ first_name }}", "<p>{{ company }}</p>", "Hi {{ first_name }}")


@pytest.mark.parametrize("subject, html, columns", [
    # Fields, built-ins, {% set %} and loop variables are no columns; {{ subject }} is one only in a body.
    ("Hi {{ first_name }}", "{% set x = 1 %}{% for w in [company] %}{{ w }}{{ x }}{% endfor %}{{ subject }}", {}),
    ("For {{ role }}", "<p>\n{{ team }} {{ role }}</p>", {"role": "subject template line 1", "team": "HTML body template line 2"}),
    # Read only through `default` or an `is defined` test: optional, no recipient needs it.
    ("{{ role | default('') }}", "{% if team is defined %}x{% endif %}{{ fields.get('title', '') }}", {}),
    # A key of `fields` is a column as a variable is, optional as a variable is:
    ("{{ fields.role }}", "{{ fields['team'] }}{{ fields.desk | default('') }}{{ fields.items() | list }}",
     {"role": "subject template line 1", "team": "HTML body template line 1"}),
    ("Hi", "{% if fields.desk is defined %}{{ fields['desk'] }}{% endif %}", {}),
    # ... and inside `{% if x is defined %}` (or the else of `is undefined`), as README shows it:
    ("{{ role | d('') }}", "{% if team is defined and x is defined %}{{ team }}{% endif %}"
                           "{% if y is undefined %}-{% else %}{{ y }}{% endif %}", {}),
    # ... not the else of `x is undefined and y`, which also runs when y is false:
    ("Hi", "{% if team is undefined and first_name %}-{% else %}{{ team }}{% endif %}",
     {"team": "HTML body template line 1"}),
    # `x` and `fields.x` are one column: either one's guard covers the other's read; so does `... if x is defined else`.
    ("{% if role is defined %}{{ fields.role }}{% endif %}", "{% if fields.team is defined %}{{ team }}{% endif %}"
     "{{ fields.desk if fields.desk is defined else 'x' }}{{ 'y' if floor is undefined else floor }}", {}),
    ("{{ role if team is defined else 'x' }}", "<p></p>", {"role": "subject template line 1"}),
    # ... and one read outside such a branch makes it needed again.
    ("{{ role | d('') }}", "{% if team is defined %}{{ team }}{% else %}{{ team }}{% endif %}",
     {"team": "HTML body template line 1"}),
])
def test_check_template_lists_the_columns_a_template_reads(subject, html, columns):
    assert check_template(subject, html, None, campaign="spring") == columns


def test_a_column_named_like_a_dict_method_is_read_through_fields(settings):
    """`{{ fields.items }}` printed `<built-in method items of dict object at 0x...>`, with an
    `items` column or without one."""
    template = CampaignTemplate.from_campaign(campaign(subject="{{ fields.items }} / {{ fields.keys }}",
                                                       html="<p>{{ fields.get('x', '-') }} {{ fields | length }}</p>"))
    rendered = template.render(recipient(fields=json.dumps({"items": "3 boxes", "keys": "two"})), settings)
    assert rendered.subject == "3 boxes / two" and "<p>- 2</p>" in rendered.html
    assert check_template("{{ fields.items }}", "<p>{{ fields['keys'] }}</p>", None) == {
        "items": "subject template line 1", "keys": "HTML body template line 1"}
    with pytest.raises(TemplateRenderError, match="fields has no 'items' column"):
        template.render(recipient(fields=json.dumps({"keys": "two"})), settings)
    optional = CampaignTemplate.from_campaign(campaign(subject="Items {{ fields.items | default('none') }}{% if "
                                                       "fields.keys is defined %} and keys{% endif %}", html="<p></p>"))
    assert optional.render(recipient(fields=json.dumps({"role": "CTO"})), settings).subject == "Items none"
    readers = CampaignTemplate.from_campaign(campaign(subject="{{ fields['x'] | default('-') }}", html=(
        "<p>{% for name, value in fields.items() %}{{ name }}={{ value }} {% endfor %}{{ fields.keys() | list }}</p>")))
    rendered = readers.render(recipient(fields=json.dumps({"role": "CTO"})), settings)
    assert rendered.subject == "-" and "<p>role=CTO ['role']</p>" in rendered.html.replace("&#39;", "'")


def test_fields_of_a_recipient_field_is_refused_with_the_variable_to_write():
    with pytest.raises(TemplateRenderError) as raised:
        check_template("Hi {{ fields.first_name }}", "<p></p>", None, campaign="spring")
    assert str(raised.value) == ("campaign 'spring': subject template line 1: fields.first_name is never set (fields "
                                 "holds the extra CSV columns only); write {{ first_name }}")


def test_malformed_extra_fields_are_a_render_error(settings):
    template = CampaignTemplate.from_campaign(campaign())
    with pytest.raises(TemplateRenderError, match="^recipient ada@example.org: extra fields are not a JSON object"):
        template.render(recipient(fields="{not json"), settings)


def test_compiling_a_broken_campaign_names_the_campaign():
    with pytest.raises(TemplateRenderError, match=r"^campaign 'spring': HTML body template line 1: "):
        CampaignTemplate.from_campaign(campaign(html="{% for x in y %}"))


# --- CSS inlining ---------------------------------------------------------------------------

STYLED = textwrap.dedent("""\
    <html><head><style>p { color: #123456; } .small { font-size: 11px; }</style></head>
    <body><p>Hi {{ first_name }}</p><p class="small">{{ company }}</p></body></html>""")


def test_css_is_inlined_into_style_attributes_and_style_tag_removed(settings):
    rendered = CampaignTemplate.from_campaign(campaign(html=STYLED)).render(recipient(), settings)
    assert '<p style="color: #123456;">Hi Ada</p>' in rendered.html
    assert '<p class="small" style="color: #123456;font-size: 11px;">Analytical Engines</p>' in rendered.html
    assert "<style" not in rendered.html


def test_css_is_inlined_once_per_template_not_per_message(settings, monkeypatch):
    calls = []
    real = email_templates._inline_css
    monkeypatch.setattr(email_templates, "_inline_css", lambda html: calls.append(html) or real(html))
    template = CampaignTemplate.from_campaign(campaign(html=STYLED))
    bodies = [template.render(recipient(first_name=name), settings).html for name in ("Ada", "Bob", "Cy")]
    assert len(calls) == 1
    assert ['style="color: #123456;">Hi ' + name in body for name, body in zip(("Ada", "Bob", "Cy"), bodies)] == [True] * 3


def test_media_queries_are_kept_for_responsive_layouts(settings):
    html = "<style>p { color: red; } @media (max-width: 600px) { p { color: blue; } }</style><p>Hi</p>"
    rendered = CampaignTemplate.from_campaign(campaign(html=html)).render(recipient(), settings)
    assert '<p style="color: red;">Hi</p>' in rendered.html
    assert "<style>@media (max-width: 600px)" in rendered.html


def test_jinja_loops_inside_tables_survive_inlining(settings):
    # Plain text between table tags would be moved out of the table by the HTML parser.
    html = "<style>td { color: red; }</style><table>{% for item in items %}<tr><td>{{ item }}</td></tr>{% endfor %}</table>"
    rendered = CampaignTemplate.from_campaign(campaign(html=html)).render(
        recipient(fields=json.dumps({"items": ["one", "two"]})), settings)
    table = rendered.html[rendered.html.index("<table>"):rendered.html.index("</table>")]
    assert '<td style="color: red;">one</td></tr>' in table
    assert '<td style="color: red;">two</td></tr>' in table


def test_jinja_values_inside_css_rules_are_inlined_once(settings, monkeypatch):
    calls = []
    real = email_templates._inline_css
    monkeypatch.setattr(email_templates, "_inline_css", lambda html: calls.append(html) or real(html))
    template = CampaignTemplate.from_campaign(campaign(html="<style>p { color: {{ color }}; }</style><p>Hi</p>"))
    first = template.render(recipient(fields=json.dumps({"color": "red"})), settings)
    second = template.render(recipient(fields=json.dumps({"color": "blue"})), settings)
    assert '<p style="color: red;">Hi</p>' in first.html
    assert '<p style="color: blue;">Hi</p>' in second.html
    assert len(calls) == 1


def test_jinja_inside_a_tag_is_inlined_per_message_instead(settings, monkeypatch):
    calls = []
    real = email_templates._inline_css
    monkeypatch.setattr(email_templates, "_inline_css", lambda html: calls.append(html) or real(html))
    html = '<style>.vip { font-weight: bold; }</style><p {% if vip %}class="vip"{% endif %}>Hi</p>'
    template = CampaignTemplate.from_campaign(campaign(html=html))
    vip = template.render(recipient(fields=json.dumps({"vip": True})), settings)
    other = template.render(recipient(fields=json.dumps({"vip": False})), settings)
    assert '<p class="vip" style="font-weight: bold;">Hi</p>' in vip.html
    assert "<p>Hi</p>" in other.html
    assert len(calls) == 3  # the attempt on the source, then one per message


# --- plain text -----------------------------------------------------------------------------

def test_text_alternative_is_derived_from_the_html(settings):
    html = '<p>Hi {{ first_name }},</p><p>line one<br>line two</p><p><a href="https://x.example/a">the link</a></p>'
    rendered = CampaignTemplate.from_campaign(campaign(html=html)).render(recipient(), settings)
    assert rendered.text == "Hi Ada,\n\nline one\nline two\n\nthe link <https://x.example/a>\n"


@pytest.mark.parametrize("html, text", [
    ('<p><a href="https://x.example/u?e=a%40b.org&amp;k=1">Unsubscribe</a> here.</p>',
     "Unsubscribe <https://x.example/u?e=a%40b.org&k=1> here.\n"),
    ('<p>See <a href="https://x.example">https://x.example</a></p>', "See https://x.example\n"),  # not twice
    ('<p>Mail <a href="mailto:jane@example.com">jane@example.com</a> or'
     ' <a href="mailto:jane@example.com">me</a></p>', "Mail jane@example.com or me <mailto:jane@example.com>\n"),
    ('<p><a href="#top">top</a> <a href="javascript:void(0)">js</a></p>', "top js\n"),  # no target worth reading
    ("<ul><li>one</li><li>two</li></ul><p>1. not a list &amp; 2&nbsp;spaces</p>",
     "  * one\n  * two\n\n1. not a list & 2 spaces\n"),
    ('<div>\n  <p>first</p>\n  <p>second<br>\n  line</p>\n</div>', "first\n\nsecond\nline\n"),
])
def test_the_text_alternative_is_plain_text_not_markdown(settings, html, text):
    rendered = CampaignTemplate.from_campaign(campaign(html=html)).render(recipient(), settings)
    assert rendered.text == text


def test_campaign_text_template_is_used_when_set(settings):
    template = CampaignTemplate.from_campaign(campaign(text="Hi {{ first_name }} & {{ company }}\n"))
    rendered = template.render(recipient(), settings)
    assert rendered == RenderedEmail(subject="Hello Ada", html="<html><head></head><body><p>Hi Ada</p></body></html>",
                                     text="Hi Ada & Analytical Engines\n")


# --- the shipped default template -------------------------------------------------------------

def test_default_template_greets_first_name_and_names_company(settings):
    settings = settings.model_copy(update={
        "unsubscribe_url": "https://example.com/unsubscribe?email={email}", "physical_address": "1 Main St, Springfield"})
    subject, html = default_templates()
    rendered = CampaignTemplate("default", subject, html).render(recipient(), settings)
    assert rendered.subject == "Interested in joining Analytical Engines"
    assert rendered.text.startswith("Hi Ada,\n")
    assert "contribute to Analytical Engines." in rendered.text
    assert "Best regards,\nJane Sender" in rendered.text
    assert '<a href="https://example.com/unsubscribe?email=ada%40example.org"' in rendered.html
    assert "1 Main St, Springfield" in rendered.text
    assert "<style" not in rendered.html and 'style="' in rendered.html


def test_default_template_without_name_or_company(settings):
    subject, html = default_templates()
    rendered = CampaignTemplate("default", subject, html).render(
        recipient(first_name="", company="", fields="{}"), settings)
    assert rendered.subject == "A quick introduction"
    assert rendered.text.startswith("Hi there,\n")
    assert "contribute to your team." in rendered.text
    assert 'Reply "unsubscribe"' in rendered.text
