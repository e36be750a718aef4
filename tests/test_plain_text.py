"""The text part converted once per template: the same text as converting each message, for less."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings as hypothesis_settings, strategies as st

from markupsafe import escape

from email_automation import plain_text
from email_automation.email_templates import CampaignTemplate
from email_automation.plain_text import html_to_text

PROPERTY = hypothesis_settings(max_examples=300, deadline=None, derandomize=True)
# What recipient_context reads; a plain object, as hypothesis reruns a test without its fixtures.
SETTINGS = SimpleNamespace(sender_email="jane@example.com", sender_name="Jane Sender", unsubscribe_url="",
                           physical_address="1 Main St")
LINKED = SimpleNamespace(**{**vars(SETTINGS), "unsubscribe_url": "https://example.com/u?e={email}"})

# Pieces of templates, the awkward places for a value among them: tables, <pre>, attributes,
# comments, links, the title, half an entity or tag before a value, whitespace around it.
PIECES = ["<p>", "</p>", "<br>", "Hi ", " ", "\n  ", ",", "<li>", "<ul>", "</ul>", "<b>", "</b>", "&amp;", "&",
          "&am", "<", "</", "<table><tr><td>", "</td><td>", "</td></tr></table>", "<pre>", "</pre>", "<!-- ",
          " -->", "<title>", "</title>", "<div style=\"display:none\">", "</div>", "<h1>", "</h1>",
          '<a href="', '">', '<a href="https://x.example/">', '<a href="mailto:', "</a>", "<span title=\"",
          "\">", '<a href="https://x.example/?a&lt=', "{% if company %} at {{ company }}{% endif %}", "{% if first_name == 'Ann' %}Ann!{% endif %}",
          "<blockquote>", "</blockquote>", "&lt;", "\u00a0", "<style>p{}</style>"]
VARIABLES = ["{{ first_name }}", "{{ company }}", "{{ email }}", "{{ first_name or 'there' }}",
             "{{ company|upper }}", "{{ role }}", "{{ fields['Job Title'] }}", "{{ subject }}",
             "{{ unsubscribe_url }}", "{{ first_name[0] if first_name else '' }}"]
WORDS = ["Ann", "Zoë Müller", "x", "https://y.example/", "mailto:a@b.example", "A  B", " lead", "trail ", "a\tb",
         "a\nb", "<b>", "&", "&amp;", "&lt;b&gt;", "amp;", "p;", "\u00a0", "\u200b", "你好", "O'Brien & Sons", "\ue000\ue101\ue001", ""]
VALUE = st.sampled_from(WORDS) | st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


def recipient(first_name: str, company: str, role: str, title: str, email: str = "ann@example.com") -> dict:
    return {"email": email, "first_name": first_name, "last_name": "", "company": company, "custom_subject": None,
            "custom_body": None, "fields": json.dumps({"role": role, "Job Title": title})}


@PROPERTY
@given(parts=st.lists(st.sampled_from(PIECES) | st.sampled_from(VARIABLES), min_size=1, max_size=14),
       people=st.lists(st.tuples(VALUE, VALUE, VALUE, VALUE), min_size=1, max_size=4),
       linked=st.booleans())
@example(parts=["<p>Hi ", "{{ first_name }}", ",</p>"], people=[("Ann", "", "", ""), ("A  B", "", "", "")],
         linked=False)
@example(parts=["<p>", "&am", "{{ first_name }}", "</p>"], people=[("p;", "", "", "")], linked=False)
@example(parts=["<table><tr><td>", "{{ first_name }}", "</td><td>", "Hi", "</td></tr><tr><td>", "A long cell",
                "</td><td>", "Hi", "</td></tr></table>"],
         people=[("Ann", "", "", ""), ("Zoë Müller", "", "", "")], linked=False)
@example(parts=['<a href="https://x.example/?a&lt=', "{{ email }}", '">', "Go", "</a>"], people=[("", "", "", "")],
         linked=False)
@example(parts=["<p>", "{{ first_name }}", "</p>"], people=[("&amp;", "", "", "")], linked=False)
@example(parts=["<p>", "<!-- ", " -->", "&amp;", "{{ company }}", "</p>"], people=[("", "copy", "", "")],
         linked=False)  # after a comment, "&" and the value make an entity
@example(parts=['<a href="https://x.example/?a&lt=', "{{ company }}", '<a href="'], people=[("", "\x1f", "", "")],
         linked=False)
@example(parts=['<a href="', "{{ unsubscribe_url }}", '">', "Unsubscribe", "</a>"], people=[("", "", "", "")],
         linked=True)
def test_the_text_is_what_converting_each_message_gives(parts, people, linked):
    template = CampaignTemplate("c", "Hi {{ company }}", "".join(parts))
    for n, values in enumerate(people):
        rendered = template.render(recipient(*values, email=f"p{n}@example.com"), LINKED if linked else SETTINGS)
        assert rendered.text == html_to_text(rendered.html)


@pytest.mark.parametrize("own", ["\ue000\uf000\ue001 \ue002\uf001\ue003", "\ue000\ue050\ue001", "\ue000\ue100\ue001"])
def test_a_template_whose_own_text_looks_like_a_placeholder_is_converted_per_message(own):
    """An icon font's private-use characters, some shaped like a placeholder (one used to crash the run)."""
    template = CampaignTemplate("c", "Hi", f"<p>{own} {{{{ first_name }}}}</p>")
    rendered = template.render(recipient("Ann", "", "", ""), SETTINGS)
    assert rendered.text == html_to_text(rendered.html) == f"{own} Ann\n"


@pytest.mark.parametrize(("html", "website"), [
    # An unsubscribe link in a layout table: the real target is wider than any placeholder.
    ('<table><tr><td><a href="{{ unsubscribe_url }}">Unsubscribe</a></td><td>Acme Inc, 1 Main St</td></tr>'
     "<tr><td>Questions?</td><td>Write to us</td></tr></table>", "x"),
    ('<p><a href="{{ fields.website }}">our site </a>today</p>', "www.example.com"),  # no " <target>" at all
    ('<p>Book a time here:\n  <a href="{{ fields.website }}">\n    {{ fields.website }}\n  </a>.\n</p>',
     "https://cal.example/ann"),  # the label says the target
    ('<a href="https://x.example/{{ first_name }}  z">Go</a>', "x"),  # whitespace in the target
    ('<ul><li><a href="https://y.example/">{{ fields.website }}<p>Hi</p></a></li></ul>', "https://y.example/"),
])
def test_a_value_in_a_link_takes_the_conversion_of_each_message(html, website):
    template = CampaignTemplate("c", "Hi", html)
    row = {**recipient("Ann", "Acme", "", ""), "fields": json.dumps({"website": website})}
    rendered = template.render(row, LINKED)
    assert rendered.text == html_to_text(rendered.html)


def test_a_campaign_converts_its_html_once_per_set_of_empty_values(monkeypatch):
    """600 messages of a campaign, some without a first name: two conversions, not 600."""
    conversions = []
    real = plain_text._text_of
    monkeypatch.setattr(plain_text, "_text_of", lambda tree: conversions.append(1) or real(tree))
    template = CampaignTemplate("c", "A question for {{ company }}", (
        '<p>Hi {{ first_name or "there" }},</p>\n<p>I saw what {{ company }} does. <a href="https://x.example/">'
        "Our work</a></p><p>{{ physical_address }}</p>"))
    texts = [template.render(recipient("" if n % 7 == 0 else f"Person{n}", f"Company {n % 97}", "", ""), SETTINGS).text
             for n in range(600)]
    assert len(conversions) == 2
    assert texts[1] == "Hi Person1,\n\nI saw what Company 1 does. Our work <https://x.example/>\n\n1 Main St\n"
    assert texts[0].startswith("Hi there,\n")


@pytest.mark.parametrize(("before", "value"), [("&am", "p;"), ("<", "b"), ("&#", "38;")])
def test_a_value_that_completes_an_entity_or_a_tag_takes_the_conversion(before, value):
    """Even from a template whose HTML was not normalised (the CSS inliner escapes a lone "&" or "<")."""
    derived = plain_text.DerivedText(lambda context: f"<p>{before}{escape(context['x'])} and more</p>")
    html = f"<p>{before}{escape(value)} and more</p>"
    assert derived.text(html, {"x": value}) == html_to_text(html)
