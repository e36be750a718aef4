"""A subject that renders empty for a recipient is a render error, wherever it is rendered:
`template set` (for the first recipient), `preview`, a run (the campaign is held back) and the
dashboard's draft preview. A follow-up without a subject of its own (`Re: ` + step 1's) and a
recipient's own `custom_subject` are subjects too."""

from __future__ import annotations

import sqlite3

import pytest

from email_automation import workspace
from email_automation.errors import TemplateRenderError
from email_automation.workspace import TemplateDraft

from .cli_helpers import cli, without_times
from .smtp_sink import SmtpSink

NO_COMPANY = ("Error: campaign 'default': the subject renders empty for noco@example.net (it reads company): every "
              "message needs a subject; give them a value or change the template\n")


@pytest.fixture(autouse=True)
def sender(monkeypatch):
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")


@pytest.fixture
def db(tmp_path):
    """A database made by `init` with Ada (company Acme), whose subject is `{{ company }}`; then
    Noco, without a company, imported after the template was set (import renders nothing)."""
    (tmp_path / "ada.csv").write_text("email,first_name,company\nada@example.org,Ada,Acme\n")
    (tmp_path / "noco.csv").write_text("email,first_name,company\nnoco@example.net,Noco,\n")
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("import", "ada.csv", "--db", "x.db").exit_code == 0
    assert cli("template", "set", "--db", "x.db", "--subject", "{{ company }}").exit_code == 0
    assert cli("import", "noco.csv", "--db", "x.db").exit_code == 0
    return tmp_path / "x.db"


def first_only(tmp_path, row: str, *, header: str = "email,first_name,company") -> None:
    """A fresh database whose only recipient is `row`."""
    (tmp_path / "one.csv").write_text(f"{header}\n{row}\n")
    assert cli("init", "--db", "one.db").exit_code == 0
    assert cli("import", "one.csv", "--db", "one.db").exit_code == 0


@pytest.mark.parametrize("subject, message", [
    ("{{ company }}", NO_COMPANY),
    ("{% if fields.role is defined %}Hi {{ fields.role }}{% endif %}",
     "Error: campaign 'default': the subject renders empty for noco@example.net (it reads fields.role): every "
     "message needs a subject; give them a value or change the template\n"),
    ("   {{ company }}  ", NO_COMPANY),
])
def test_template_set_refuses_a_subject_empty_for_the_first_recipient(tmp_path, monkeypatch, subject, message):
    """`{{ company }}` was accepted (exit 0) and the run sent the message with subject ''."""
    first_only(tmp_path, "noco@example.net,N,")
    before = cli("template", "show", "--db", "one.db").stdout
    refused = cli("template", "set", "--db", "one.db", "--subject", subject)
    assert (refused.exit_code, refused.stdout, refused.stderr) == (2, "", message)
    assert cli("template", "show", "--db", "one.db").stdout == before


def test_a_subject_variant_empty_for_the_first_recipient_is_named(tmp_path):
    first_only(tmp_path, "noco@example.net,N,")
    refused = cli("template", "set", "--db", "one.db", "--subject", "Hello {{ first_name }}", "--subject",
                  "{{ company }}")
    assert (refused.exit_code, refused.stderr) == (2, (
        "Error: campaign 'default': the subject variant 2 of 2 renders empty for noco@example.net (it reads "
        "company): every message needs a subject; give them a value or change the template\n"))


def test_a_subject_empty_for_everyone_is_refused_before_any_recipient_is_imported(tmp_path):
    """`--subject ''` was refused, `--subject '{{ "" }}'` accepted."""
    assert cli("init", "--db", "x.db").exit_code == 0
    (tmp_path / "x.html").write_text("<p>Following up</p>")
    for subject in ('{{ "" }}', "{% if false %}Hi{% endif %}"):
        refused = cli("template", "set", "--db", "x.db", "--subject", subject)
        assert (refused.exit_code, refused.stderr) == (2, (
            "Error: campaign 'default': the subject template renders empty whoever the recipient: every message "
            "needs a subject\n"))
    step = cli("step", "add", "--db", "x.db", "--after-days", "2", "--html", "x.html", "--subject", '{{ "" }}')
    assert step.exit_code == 2 and "renders empty whoever the recipient" in step.stderr


def test_the_first_recipients_own_subject_is_their_subject(tmp_path):
    first_only(tmp_path, "noco@example.net,N,,Our talk on Tuesday",
               header="email,first_name,company,custom_subject")
    done = cli("template", "set", "--db", "one.db", "--subject", "{{ company }}")
    assert (done.exit_code, done.stderr) == (0, "")
    shown = cli("preview", "--db", "one.db")
    assert shown.stdout.splitlines()[2] == "Subject: Our talk on Tuesday"


def test_preview_refuses_a_recipient_whose_subject_is_empty_and_shows_the_others(db):
    """`preview` printed From and To and no Subject line at all, exit code 0."""
    empty = cli("preview", "--db", "x.db", "noco@example.net")
    assert (empty.exit_code, empty.stdout, empty.stderr) == (2, "", NO_COMPANY)
    shown = cli("preview", "--db", "x.db", "ada@example.org")
    assert shown.exit_code == 0
    assert shown.stdout.splitlines()[:3] == ["From: jane@example.com", "To: Ada <ada@example.org>", "Subject: Acme"]


def test_a_real_run_holds_back_the_campaign_and_sends_no_message_without_a_subject(db, tmp_path, monkeypatch):
    """The run sent Noco a message with subject ''."""
    (tmp_path / "other.csv").write_text("email,first_name\nbo@example.com,Bo\n")
    assert cli("import", "other.csv", "--db", "x.db", "--campaign", "other").exit_code == 0
    with SmtpSink() as sink:
        for name, value in sink.run_settings().items():
            monkeypatch.setenv(name, value)
        result = cli("run", "--db", "x.db")
    assert result.exit_code == 2
    assert [d.rcpt_tos for d in sink.deliveries] == [["bo@example.com"]]
    assert result.stderr == NO_COMPANY
    assert without_times(result.stdout).splitlines()[0] == (
        "ERROR campaign 'default' held back, its recipients stay pending: " + NO_COMPANY[len("Error: "):-1])
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT email, status FROM recipients ORDER BY id").fetchall() == [
            ("ada@example.org", "pending"), ("noco@example.net", "pending"), ("bo@example.com", "sent")]


def test_a_follow_up_without_a_subject_of_its_own_is_re_the_first_one(db, tmp_path):
    """Its subject template is empty on purpose: `Re: ` + what step 1 sends (or would send)."""
    (tmp_path / "f.html").write_text("<p>Following up, {{ first_name }}</p>")
    added = cli("step", "add", "--db", "x.db", "--after-days", "2", "--html", "f.html")
    assert (added.exit_code, added.stderr) == (0, "")
    shown = cli("preview", "--db", "x.db", "--step", "2", "ada@example.org")
    assert (shown.exit_code, shown.stdout.splitlines()[2]) == (0, "Subject: Re: Acme")
    # Noco's step 1 has no subject, so neither has the `Re:` of it: the same error as step 1's.
    empty = cli("preview", "--db", "x.db", "--step", "2", "noco@example.net")
    assert (empty.exit_code, empty.stderr) == (2, NO_COMPANY)


def test_a_follow_up_subject_of_its_own_empty_for_the_first_recipient_is_refused(tmp_path):
    first_only(tmp_path, "noco@example.net,N,")
    (tmp_path / "f.html").write_text("<p>Following up</p>")
    assert cli("step", "add", "--db", "one.db", "--after-days", "2", "--html", "f.html").exit_code == 0
    refused = cli("step", "set", "2", "--db", "one.db", "--subject", "{{ company }}")
    assert (refused.exit_code, refused.stderr) == (2, (
        "Error: campaign 'default', step 2: the subject renders empty for noco@example.net (it reads company): "
        "every message needs a subject; give them a value or change the template\n"))


def test_the_dashboards_draft_preview_says_the_subject_is_empty(db, settings):
    from email_automation.database import connect

    conn = connect(db)
    draft = TemplateDraft(None, ("{{ company }}",), "<p>Hi {{ first_name }}</p>", None)
    assert workspace.render_draft(conn, settings, "default", "ada@example.org", draft).rendered.subject == "Acme"
    with pytest.raises(TemplateRenderError) as refused:
        workspace.render_draft(conn, settings, "default", "noco@example.net", draft)
    assert f"Error: {refused.value}\n" == NO_COMPANY
    # With a subject of their own, the draft's subject does not apply to them: shown, empty, no error.
    conn.execute("UPDATE recipients SET custom_subject = 'Our talk' WHERE email = 'noco@example.net'")
    conn.commit()
    shown = workspace.render_draft(conn, settings, "default", "noco@example.net", draft)
    assert (shown.rendered.subject, shown.subjects, shown.own_subject) == ("Our talk", ("",), True)
