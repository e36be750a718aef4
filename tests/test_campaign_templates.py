"""`template set`: a template is checked against the campaign's recipients before it is stored."""

from __future__ import annotations

import textwrap
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from email_automation.cli import app
from email_automation.database import connect
from email_automation.email_templates import CampaignTemplate

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def db(tmp_path, monkeypatch):
    """A database with campaign 'spring' holding recipients imported with an extra `role` column."""
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    monkeypatch.setenv("DELAY_SECONDS", "0")
    path = tmp_path / "t.db"
    csv = tmp_path / "people.csv"
    csv.write_text("email,first_name,role\nada@example.org,Ada,CTO\n")
    assert cli("init", "--db", path).exit_code == 0
    assert cli("import", csv, "--campaign", "spring", "--db", path).exit_code == 0
    return path


def stored(path, campaign="spring"):
    row = connect(path).execute("SELECT subject_template, html_template FROM campaigns WHERE name = ?",
                                (campaign,)).fetchone()
    return tuple(row) if row else None


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_column_a_waiting_recipient_lacks_is_refused_naming_template_line_recipient_and_column(db, tmp_path):
    before = stored(db)
    html = write(tmp_path, "t.html", "<p>Hi {{ first_name }},</p>\n<p>I like {{ favourite_color }}.</p>")
    result = cli("template", "set", "--html", html, "--campaign", "spring", "--db", db)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: campaign 'spring': HTML body template line 2 reads {{ favourite_color }}, but ada@example.org "
        "(pending), who may still get this template, has no 'favourite_color' column; write "
        "{{ favourite_color | default('') }} to make it optional, or skip that recipient\n")
    assert stored(db) == before, "nothing saved"


def test_imported_columns_builtins_and_template_variables_are_accepted(db, tmp_path):
    html = write(tmp_path, "t.html", textwrap.dedent("""\
        {% set greeting = 'Hi' %}{% for word in [first_name, role] %}{{ word }}{% endfor %}
        <p>{{ greeting }} {{ subject }} {{ fields['role'] }} {{ unsubscribe_url }} {{ range(2)|list }}</p>"""))
    result = cli("template", "set", "--html", html, "--subject", "For {{ role }}", "--campaign", "spring", "--db", db)
    assert result.exit_code == 0, result.output
    assert result.stdout == "Templates of campaign 'spring' updated.\n"
    assert stored(db)[0] == "For {{ role }}"


def test_a_column_of_another_campaign_is_only_noted_for_a_new_campaign(db):
    result = cli("template", "set", "--subject", "For {{ role }}", "--campaign", "autumn", "--db", db)
    assert (result.exit_code, result.stdout) == (0, (
        "Templates of campaign 'autumn' updated.\n"
        "Note: 'role' is not a column of any recipient waiting for the campaign's own template yet: import refuses "
        "rows for it without that column.\n"))
    assert stored(db, "autumn")[0] == "For {{ role }}"


def test_the_subject_cannot_use_itself(db):
    result = cli("template", "set", "--subject", "Re: {{ subject }}", "--campaign", "spring", "--db", db)
    assert result.exit_code == 2 and "subject template line 1: unknown variable 'subject'" in result.stderr


@pytest.mark.parametrize("args, message", [
    ((), "Error: nothing to set: give --subject, --html, --text and/or --attach\n"),
    (("--subject", "  "), "Error: campaign 'spring': the subject template is empty\n"),
])
def test_template_set_with_nothing_to_set_is_an_error(db, args, message):
    before = stored(db)
    result = cli("template", "set", *args, "--campaign", "spring", "--db", db)
    assert (result.exit_code, result.stderr) == (2, message)
    assert stored(db) == before


class Structure(HTMLParser):
    """The document tags, in order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag in ("html", "head", "body"):
            self.tags.append(tag)

    def handle_endtag(self, tag):
        if tag in ("html", "head", "body"):
            self.tags.append("/" + tag)


@pytest.mark.parametrize("first_name", ["Ada", ""])
def test_a_template_starting_with_if_is_a_whole_document_in_every_branch(settings, first_name):
    html = ("<style>p { color: #123456; }</style>{% if first_name %}<p>Hi {{ first_name }}</p>"
            "{% else %}<p>Hello</p>{% endif %}")
    rendered = CampaignTemplate("spring", "Hi", html).render(
        {"email": "ada@example.org", "first_name": first_name, "fields": "{}"}, settings)
    assert Structure(rendered.html).tags == ["html", "head", "/head", "body", "/body", "/html"]
    assert '<p style="color: #123456;">' in rendered.html


def test_run_sends_the_other_campaigns_and_exits_2_naming_the_broken_one(db, tmp_path):
    # 'spring' reads {{ role }}; a recipient without that column (import refuses one now: here a
    # database edited by hand) cannot be rendered.
    assert cli("template", "set", "--subject", "For {{ role }}", "--campaign", "spring", "--db", db).exit_code == 0
    later = write(tmp_path, "later.csv", "email,first_name,role\nbob@example.org,Bob,CFO\n")
    assert cli("import", later, "--campaign", "spring", "--db", db).exit_code == 0
    with connect(db) as conn:
        conn.execute("UPDATE recipients SET fields = '{}' WHERE email = 'bob@example.org'")
    other = write(tmp_path, "other.csv", "email,first_name\ncyd@example.org,Cyd\n")
    assert cli("import", other, "--campaign", "autumn", "--db", db).exit_code == 0
    result = cli("run", "--db", db)
    assert result.exit_code == 2
    assert "Dry run: 1 message(s) written to" in result.stdout
    assert result.stderr == ("Error: campaign 'spring': cannot render the subject for bob@example.org: "
                             "'role' is undefined (add that column to the CSV, or change the template)\n")


@pytest.mark.parametrize("html, message", [
    ("<p>{{ " + "(" * 50000 + "1" + ")" * 50000 + " }}</p>", "the HTML body template is nested too deeply"),
    ("<p>" + "x" * 1_000_001 + "</p>", "the HTML body template is 1,000,008 characters, more than the limit of 1,000,000"),
])
def test_a_pathological_template_is_one_line_and_nothing_saved(db, tmp_path, html, message):
    before = stored(db)
    result = cli("template", "set", "--html", write(tmp_path, "t.html", html), "--campaign", "spring", "--db", db)
    assert (result.exit_code, result.stderr) == (2, f"Error: campaign 'spring': {message}\n")
    assert stored(db) == before


@pytest.mark.parametrize("html, problem", [
    ("<p>{{ 1 / 0 }}</p>", "cannot render the HTML body for ada@example.org: ZeroDivisionError: division by zero"),
    ("<p>{{ 'x' * 10**9 }}</p>", "the HTML body template stopped for ada@example.org: a repeated value would be "
                                 "1,000,000,000 characters, more than the limit of 1,000,000"),
])
def test_a_template_that_cannot_render_for_the_first_recipient_is_refused_when_set(db, tmp_path, html, problem):
    before = stored(db)
    result = cli("template", "set", "--html", write(tmp_path, "t.html", html), "--campaign", "spring", "--db", db)
    assert (result.exit_code, result.stderr) == (2, f"Error: campaign 'spring': {problem}\n")
    assert stored(db) == before
