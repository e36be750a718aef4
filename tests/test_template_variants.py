"""Named templates per segment (`template add/show/remove`, the CSV's `template` column) and
subject variants: chosen per recipient, stable, balanced, recorded on the send, replies counted."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.cli_helpers import cli
from tests.smtp_sink import SmtpSink

STARTUP_HTML = "<p>Hi {{ first_name }}, I love what {{ company }} builds.</p>"
BANK_HTML = "<p>Dear {{ first_name }}, {{ company }} and reliability.</p>"


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "seg.db")
    assert cli("init", "--db", path).exit_code == 0
    (tmp_path / "startup.html").write_text(STARTUP_HTML, encoding="utf-8")
    (tmp_path / "bank.html").write_text(BANK_HTML, encoding="utf-8")
    return path


def write_csv(path, rows):
    path.write_text("email,first_name,company,template\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def add(db, tmp_path, name, *subjects, html="startup.html"):
    args = [arg for s in subjects for arg in ("--subject", s)]
    return cli("template", "add", name, "--db", db, *args, "--html", str(tmp_path / html))


def test_add_show_and_remove_a_named_template(db, tmp_path):
    added = add(db, tmp_path, "startup", "Joining {{ company }}?", "Quick question, {{ first_name }}")
    assert (added.exit_code, added.stdout) == (0, "Template 'startup' of campaign 'default' added.\n")
    assert add(db, tmp_path, "startup", "Joining {{ company }}?").stdout == (
        "Template 'startup' of campaign 'default' replaced.\n")
    add(db, tmp_path, "startup", "Joining {{ company }}?", "Quick question, {{ first_name }}")

    shown = cli("template", "show", "startup", "--db", db)
    assert shown.stdout == ("Campaign: default (active), template: startup\n"
                            "Subject 1 of 2: Joining {{ company }}?\nSubject 2 of 2: Quick question, {{ first_name }}\n\n"
                            f"--- html ---\n{STARTUP_HTML}\n--- text ---\n(derived from the HTML)\n")
    assert "--- named templates ---\nstartup\n" in cli("template", "show", "--db", db).stdout

    assert cli("template", "remove", "startup", "--db", db).stdout == "Template 'startup' of campaign 'default' removed.\n"
    gone = cli("template", "show", "startup", "--db", db)
    assert (gone.exit_code, gone.stderr) == (2, "Error: campaign 'default' has no template 'startup' (it has: none)\n")


@pytest.mark.parametrize("args, message", [
    (["default", "--subject", "x"], "template name 'default' is reserved for the campaign's own template (change it "
                                    "with `template set`)"),
    (["startup"], "template 'startup': give its --subject and --html"),
    (["startup", "--subject", "Hi {{ Nickname }}"],
     "campaign 'default': subject template line 1: unknown variable 'Nickname': not a recipient field (email, "
     "first_name, last_name, company), a built-in (fields, sender_email, sender_name, campaign, unsubscribe_url, "
     "physical_address) or a name a CSV column can have (a column `Job Title` is {{ job_title }})"),
])
def test_a_bad_template_is_refused_with_one_line_and_nothing_saved(db, tmp_path, args, message):
    html = [] if args == ["startup"] else ["--html", str(tmp_path / "startup.html")]
    result = cli("template", "add", *args, *html, "--db", db)
    assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")
    assert sqlite3.connect(db).execute("SELECT count(*) FROM templates").fetchone()[0] == 0


def test_import_rejects_a_template_the_campaign_lacks_and_accepts_default(db, tmp_path):
    add(db, tmp_path, "startup", "Joining {{ company }}?")
    csv = write_csv(tmp_path / "people.csv", [
        ("ada@example.org", "Ada", "Acme", "startup"),
        ("bob@example.org", "Bob", "Bank", "bank"),
        ("cy@example.org", "Cy", "Corp", "default"),
        ("di@example.org", "Di", "Dyn", ""),
    ])

    result = cli("import", str(csv), "--db", db)

    assert f"{csv}: 3 added" in result.stdout
    assert (f"{csv}:3: 'template': campaign 'default' has no template 'bank' (it has: startup); add it with "
            "`template add` first") in result.stdout
    stored = dict(sqlite3.connect(db).execute("SELECT email, template FROM recipients"))
    assert stored == {"ada@example.org": "startup", "cy@example.org": None, "di@example.org": None}


def test_a_template_in_use_by_waiting_recipients_is_not_removed(db, tmp_path):
    add(db, tmp_path, "startup", "Joining {{ company }}?")
    cli("import", str(write_csv(tmp_path / "p.csv", [("ada@example.org", "Ada", "Acme", "startup")])), "--db", db)
    result = cli("template", "remove", "startup", "--db", db)
    assert (result.exit_code, result.stderr) == (2, "Error: template 'startup' of campaign 'default' is used by 1 "
                                                    "recipient(s) not sent yet: it stays; change it with `template add` instead\n")


def test_removing_a_template_only_failed_recipients_use_gives_them_the_campaigns_own(db, tmp_path, monkeypatch):
    """Removal was allowed; after retry-failed they were pending with a template that no longer
    existed, and the next run held back the whole campaign."""
    add(db, tmp_path, "startup", "Joining {{ company }}?")
    cli("import", str(write_csv(tmp_path / "p.csv", [("ada@example.org", "Ada", "Acme", "startup"),
                                                      ("bob@example.org", "Bob", "Bank", "startup"),
                                                      ("cy@example.org", "Cy", "Corp", "")])), "--db", db)
    with sqlite3.connect(db) as conn:  # as a run leaves recipients whose server refused them for good
        conn.execute("UPDATE recipients SET status = 'failed', last_error = 'refused' WHERE template = 'startup'")

    removed = cli("template", "remove", "startup", "--db", db)

    assert (removed.exit_code, removed.stdout) == (0, (
        "Template 'startup' of campaign 'default' removed; 2 failed recipient(s) that used it get the campaign's "
        "own template if retried.\n"))
    assert cli("retry-failed", "--db", db).exit_code == 0
    received = send_all(db, monkeypatch)
    assert sorted(received) == ["ada@example.org", "bob@example.org", "cy@example.org"]
    assert str(received["ada@example.org"]["Subject"]) == str(received["cy@example.org"]["Subject"]).replace("Corp", "Acme")


def send_all(db, monkeypatch):
    with SmtpSink() as sink:
        for name, value in sink.run_settings().items():
            monkeypatch.setenv(name, value)
        run = cli("run", "--db", db, "--json")
    assert run.exit_code == 0, run.output
    return {d.rcpt_tos[0]: d.message for d in sink.deliveries}


def test_each_segment_gets_its_template_and_alternating_subject_variants_recorded_on_the_send(db, tmp_path, monkeypatch):
    add(db, tmp_path, "startup", "Joining {{ company }}?", "Quick question, {{ first_name }}")
    add(db, tmp_path, "bank", "Reliability at {{ company }}", html="bank.html")
    assert cli("template", "set", "--db", db, "--subject", "Hello A {{ first_name }}", "--subject",
               "Hello B {{ first_name }}", "--subject", "Hello C {{ first_name }}").exit_code == 0
    rows = [(f"p{i}@example.org", f"P{i}", f"Co{i}", ("startup", "", "bank", "startup", "")[i % 5]) for i in range(10)]
    cli("import", str(write_csv(tmp_path / "p.csv", rows)), "--db", db)
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    previewed = cli("preview", "--db", db, "--email", "p3@example.org").stdout

    received = send_all(db, monkeypatch)

    subjects = {email: str(m["Subject"]) for email, m in received.items()}
    startup = [subjects[f"p{i}@example.org"] for i in (0, 3, 5, 8)]
    own = [subjects[f"p{i}@example.org"] for i in (1, 4, 6, 9)]
    assert startup == ["Joining Co0?", "Quick question, P3", "Joining Co5?", "Quick question, P8"]
    assert own == ["Hello A P1", "Hello B P4", "Hello C P6", "Hello A P9"]
    assert subjects["p2@example.org"] == "Reliability at Co2"
    assert "I love what Co3 builds" in received["p3@example.org"].get_body(("html",)).get_content()
    assert "Subject: Quick question, P3\n" in previewed  # the preview showed what was sent
    logged = dict(sqlite3.connect(db).execute(
        "SELECT r.email, l.template || ' | ' || l.subject_variant FROM send_log l JOIN recipients r ON r.id = l.recipient_id"))
    assert logged["p3@example.org"] == "startup | Quick question, {{ first_name }}"
    assert logged["p1@example.org"] is None  # the campaign's own template has no name
    assert sqlite3.connect(db).execute("SELECT subject_variant FROM send_log l JOIN recipients r"
                                       " ON r.id = l.recipient_id WHERE r.email = 'p1@example.org'").fetchone() == (
        "Hello A {{ first_name }}",)


def test_status_shows_the_reply_rate_per_subject_variant(db, tmp_path, monkeypatch):
    add(db, tmp_path, "startup", "Joining {{ company }}?", "Quick question, {{ first_name }}")
    rows = [(f"p{i}@example.org", f"P{i}", f"Co{i}", "startup") for i in range(4)]
    cli("import", str(write_csv(tmp_path / "p.csv", rows)), "--db", db)
    send_all(db, monkeypatch)
    assert cli("mark", "p1@example.org", "replied", "--db", db).exit_code == 0
    assert cli("mark", "p3@example.org", "interview", "--db", db).exit_code == 0
    assert cli("mark", "p0@example.org", "replied", "--db", db).exit_code == 0

    shown = cli("status", "--db", db).stdout

    assert ("Replies per subject variant:\n"
            "  default/startup subject 'Joining {{ company }}?': 2 contacted -> 1 replied (50%)\n"
            "  default/startup subject 'Quick question, {{ first_name }}': 2 contacted -> 2 replied (100%)\n") in shown
    data = json.loads(cli("status", "--db", db, "--json").stdout)["subject_variants"]
    assert data[1] == {"campaign": "default", "template": "startup", "subject": "Quick question, {{ first_name }}",
                       "contacted": 2, "replied": 2, "reply_rate": 1.0}


def test_the_dashboard_shows_the_reply_rate_per_subject_variant(db, tmp_path, monkeypatch, settings):
    from streamlit.testing.v1 import AppTest

    from email_automation import dashboard
    from email_automation.config import load_settings
    from email_automation.dashboard_data import Reports

    add(db, tmp_path, "startup", "Joining {{ company }}?", "Quick question, {{ first_name }}")
    cli("import", str(write_csv(tmp_path / "p.csv", [(f"p{i}@example.org", f"P{i}", "Co", "startup")
                                                      for i in range(2)])), "--db", db)
    send_all(db, monkeypatch)
    cli("mark", "p1@example.org", "replied", "--db", db)
    dashboard.clear_cache()
    at = AppTest.from_function(dashboard.render, args=(Reports(db, load_settings(db_path=db)),), default_timeout=30)
    at.session_state[dashboard.TAB_KEY] = "Replies"
    at.run()

    assert "Replies per subject variant" in [h.value for h in at.subheader]
    [table] = [d.value for d in at.dataframe if "subject" in d.value.columns and "reply rate" in d.value.columns]
    assert table.to_dict("records") == [
        {"campaign": "default", "template": "startup", "subject": "Joining {{ company }}?", "contacted": 1,
         "replied": 0, "reply rate": "0.00%"},
        {"campaign": "default", "template": "startup", "subject": "Quick question, {{ first_name }}", "contacted": 1,
         "replied": 1, "reply rate": "100.00%"}]
