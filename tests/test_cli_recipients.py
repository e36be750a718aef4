"""`import`, `skip`, `suppress`, `unsuppress`, `resolve`, `retry-failed`: exact lines and exit codes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from email_automation.database import connect
from tests.cli_helpers import EXAMPLE, cli


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    assert cli("init", "--db", "x.db").exit_code == 0
    return tmp_path / "x.db"


def test_import_says_which_columns_a_template_reads_under_another_name(db, tmp_path, monkeypatch):
    """`Role,role` became {{ role }} and {{ role_2 }}, and a `Campaign` column hid behind the built-in
    {{ campaign }}, without a word."""
    (tmp_path / "people.csv").write_text("email,Role,role,Campaign,Job Title\nada@example.com,CTO,cto,Spring,Lead\n")
    result = cli("import", "people.csv", "--db", "x.db")
    assert result.stdout.splitlines()[1:] == [
        "Note: in templates, 'role' is {{ role_2 }}, 'Campaign' is {{ fields.campaign }} (a recipient field, a "
        "built-in, another column or a word Jinja keeps has its name)."]
    assert cli("template", "set", "--subject", "{{ fields.campaign }} / {{ role_2 }} / {{ campaign }}", "--db",
               "x.db").exit_code == 0
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    assert "Subject: Spring / cto / default\n" in cli("preview", "--db", "x.db").stdout


def test_import_lists_each_rejected_row_with_file_and_row_number(db, tmp_path):
    (tmp_path / "people.csv").write_text(textwrap.dedent("""\
        email,first_name
        ada@example.com,Ada
        not-an-address,Bob
        ada@example.com,Ada again
        bob@@example.com,Bob
    """))
    result = cli("import", "people.csv", "--db", "x.db", "-c", "spring")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "people.csv: 1 added to campaign 'spring', 1 duplicate(s) skipped, 2 invalid.",
        "  people.csv:3: 'email': An email address must have an @-sign.",
        "  people.csv:5: 'email': The part after the @-sign contains invalid characters: '@'.",
        "Invalid rows written to people.rejects.csv",
    ]


def test_import_shows_twenty_rejects_then_how_many_more(db, tmp_path):
    (tmp_path / "bad.csv").write_text("email\n" + "".join(f"nobody{i}\n" for i in range(23)))
    lines = cli("import", "bad.csv", "--db", "x.db").stdout.splitlines()
    assert lines[0] == "bad.csv: 0 added to campaign 'default', 0 duplicate(s) skipped, 23 invalid."
    assert lines[20] == "  bad.csv:21: 'email': An email address must have an @-sign."
    assert lines[21:] == ["  ... and 3 more", "Invalid rows written to bad.rejects.csv"]


def test_the_rejects_file_is_named_as_import_help_and_the_readme_say(db, tmp_path):
    # The file's extension is replaced, not kept: bad3.csv -> bad3.rejects.csv (not bad3.csv.rejects.csv).
    (tmp_path / "bad3.csv").write_text("email\nnope\n")
    result = cli("import", "bad3.csv", "--db", "x.db")
    assert result.stdout.splitlines()[-1] == "Invalid rows written to bad3.rejects.csv"
    assert (tmp_path / "bad3.rejects.csv").is_file()

    help_text = " ".join(cli("import", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "recipients.csv -> recipients.rejects.csv, beside it" in help_text
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "(`recipients.csv` -> `recipients.rejects.csv`;" in readme
    assert "FILE.rejects.csv" not in help_text + readme


def test_import_of_a_file_that_is_not_a_csv_exits_2_and_changes_nothing(db, tmp_path):
    bad = tmp_path / "photo.csv"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    result = cli("import", str(bad), "--db", "x.db")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {bad}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert connect(db).execute("SELECT count(*) FROM recipients").fetchone()[0] == 0


def test_suppress_resolve_and_friends_report_what_they_did(db):
    cli("import", str(EXAMPLE), "--db", "x.db")
    email = connect(db).execute("SELECT email FROM recipients ORDER BY id LIMIT 1").fetchone()[0]
    assert cli("suppress", email.upper(), "--db", "x.db", "--reason", "unsubscribe").stdout == (
        f"{email} suppressed (unsubscribe); 1 pending recipient(s) skipped.\n"
    )
    assert cli("unsuppress", f" {email.upper()} ", "--db", "x.db").stdout == (
        f"{email} may be mailed again; 1 recipient(s) back in the queue.\n")
    missing = cli("resolve", email, "--sent", "--db", "x.db")
    assert missing.exit_code == 2
    assert missing.stderr == f"Error: {email}: no recipient in unknown state with that address\n"
    assert cli("retry-failed", "--db", "x.db").stdout == "0 failed recipient(s) are pending again.\n"


def test_the_same_actions_with_json(db):
    cli("import", str(EXAMPLE), "--db", "x.db")
    first, second = [r[0] for r in connect(db).execute("SELECT email FROM recipients ORDER BY id LIMIT 2")]
    connect(db).execute("UPDATE recipients SET status = 'unknown' WHERE email = ?", (second,))

    def run(*args):
        result = cli(*args, "--db", "x.db", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert run("skip", first.upper()) == {"email": first, "skipped": 1}
    suppressed = run("suppress", first, "--reason", "complaint")
    assert suppressed == {"email": first, "reason": "complaint", "since": suppressed["since"], "added": True, "skipped": 0}
    again = run("suppress", first, "--reason", "manual")  # the first reason and date are kept
    assert again == {"email": first, "reason": "complaint", "since": suppressed["since"], "added": False, "skipped": 0}
    assert run("unsuppress", first) == {"email": first, "unsuppressed": True, "requeued": 0}, "skipped by hand: stays"
    assert run("resolve", second, "--pending") == {"email": second, "marked": "pending", "recipients": 1}
    assert run("retry-failed") == {"pending_again": 0}


def test_unsuppress_puts_back_in_the_queue_the_recipients_the_suppress_skipped(db, tmp_path):
    """A mistaken suppress is undone: the waiting recipient is pending again, and `status` says so."""
    (tmp_path / "people.csv").write_text("email\np1@co1.example.com\np3@co3.example.com\n")
    cli("import", "people.csv", "--db", "x.db")
    assert cli("suppress", "p3@co3.example.com", "--db", "x.db").stdout == (
        "p3@co3.example.com suppressed (manual); 1 pending recipient(s) skipped.\n")
    assert cli("unsuppress", "p3@co3.example.com", "--db", "x.db").stdout == (
        "p3@co3.example.com may be mailed again; 1 recipient(s) back in the queue.\n")
    status = json.loads(cli("status", "--db", "x.db", "--json").stdout)
    assert (status["campaigns"]["default"]["pending"], status["campaigns"]["default"]["skipped"]) == (2, 0)
    again = cli("import", "people.csv", "--db", "x.db").stdout
    assert again.startswith("people.csv: 0 added to campaign 'default', 2 duplicate(s) skipped"), "queued once, not twice"


def test_resolve_without_a_decision_names_both_choices_and_exits_2(db):
    result = cli("resolve", "a@example.com", "--db", "x.db")
    assert result.exit_code == 2
    assert result.stderr == "Error: say what happened: --sent (it went out) or --pending (it did not; send it again)\n"


def test_text_that_looks_like_an_emoji_code_is_shown_as_written(db, tmp_path):
    """`root:x:0` is a user's own text: the terminal must not turn its `:x:` into an emoji."""
    (tmp_path / "passwd.csv").write_text("root:x:0:0:root\n")
    result = cli("import", "passwd.csv", "--db", "x.db")
    assert (result.exit_code, result.stderr) == (2, "Error: passwd.csv: no email column (found: root:x:0:0:root)\n")


def test_suppress_of_something_that_is_not_an_address_is_bad_input(db):
    result = cli("suppress", "notanemail", "--db", "x.db")
    assert (result.exit_code, result.stderr) == (2, "Error: 'notanemail' is not an email address\n")


def test_rejects_file_that_is_the_imported_file_is_refused_and_the_file_kept(db, tmp_path):
    people = tmp_path / "people.csv"
    people.write_text("email\nada@example.com\nnot-an-address\n")
    before = people.read_bytes()
    result = cli("import", "people.csv", "--db", "x.db", "--rejects", "./people.csv")
    assert (result.exit_code, result.stderr) == (
        2, "Error: people.csv: --rejects people.csv is the file being imported; name another file\n")
    assert people.read_bytes() == before
    assert connect(db).execute("SELECT count(*) FROM recipients").fetchone()[0] == 0


@pytest.mark.parametrize("target", ["x.db", "x.db-wal"])
def test_rejects_file_that_is_the_database_is_refused_and_the_database_kept(db, tmp_path, target):
    """A mistyped --rejects must not replace the send ledger (or its WAL) with a CSV."""
    (tmp_path / "people.csv").write_text("email\nada@example.com\nnot-an-address\n")
    (tmp_path / "x.db-wal").touch()  # as while the database is open
    result = cli("import", "people.csv", "--db", "x.db", "--rejects", target)
    assert (result.exit_code, result.stderr) == (
        2, f"Error: people.csv: --rejects {target} is a database file; name another file\n")
    assert cli("status", "--db", "x.db").exit_code == 0
