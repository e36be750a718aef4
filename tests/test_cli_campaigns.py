"""`preview`, `template show/set`, `pause`, `resume`: exact lines and exit codes."""

from __future__ import annotations

import json
import os

import pytest

from email_automation.database import connect
from tests.cli_helpers import EXAMPLE, cli


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("import", str(EXAMPLE), "--db", "x.db").exit_code == 0
    return tmp_path / "x.db"


def test_template_set_checks_syntax_before_storing(db, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text("<p>Hello {{ first_name </p>")
    result = cli("template", "set", "--html", str(broken), "--db", "x.db")
    assert result.exit_code == 2
    assert "line 1" in result.stderr
    good = tmp_path / "good.html"
    good.write_text("<p>Hello {{ first_name }}</p>")
    assert cli("template", "set", "--html", str(good), "--subject", "Hi {{ first_name }}", "--db", "x.db").exit_code == 0
    shown = cli("template", "show", "--db", "x.db").stdout
    assert "Subject: Hi {{ first_name }}" in shown and "<p>Hello {{ first_name }}</p>" in shown


def test_template_set_with_a_missing_file_is_bad_input_in_plain_words(db):
    result = cli("template", "set", "--html", "missing.html", "--db", "x.db")
    assert result.exit_code == 2
    assert result.stderr == "Error: missing.html: cannot read template: No such file or directory\n"


def test_template_set_creates_a_new_campaign_with_its_templates(db, tmp_path):
    (tmp_path / "t.html").write_text("<p>Hi {{ first_name }}</p>")
    result = cli("template", "set", "-c", "spring", "--html", "t.html", "--db", "x.db")
    assert result.stdout == "Templates of campaign 'spring' updated.\n"
    row = connect(db).execute("SELECT html_template, status FROM campaigns WHERE name = 'spring'").fetchone()
    assert tuple(row) == ("<p>Hi {{ first_name }}</p>", "active")


@pytest.mark.parametrize("args", [["preview", "-c", "nosuch"], ["template", "show", "-c", "nosuch"],
                                  ["pause", "nosuch"], ["resume", "nosuch"]], ids=lambda a: a[0])
def test_a_campaign_that_does_not_exist_is_bad_input(db, args):
    result = cli(*args, "--db", "x.db")
    assert result.exit_code == 2
    assert result.stderr == "Error: no campaign named 'nosuch'\n"


@pytest.mark.parametrize("args", [
    ["import", str(EXAMPLE), "-c"], ["pause"], ["resume"], ["preview", "-c"], ["template", "show", "-c"],
    ["template", "add", "x", "--subject", "Hi", "-c"], ["step", "list", "-c"], ["skip", "a@example.com", "-c"],
    ["retry-failed", "-c"], ["resolve", "a@example.com", "-c"],
], ids=lambda a: " ".join(a[:2]) if a[0] in ("template", "step") else a[0])
def test_an_empty_campaign_name_is_refused_in_one_line_and_stores_nothing(db, args):
    # `retry-failed -c ""` used to retry every campaign's failed recipients.
    before = [tuple(r) for r in connect(db).execute("SELECT name, status FROM campaigns ORDER BY id")]

    result = cli(*args, "", "--db", "x.db")

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "Error: campaign name '' is blank: give the campaign a name\n"
    assert [tuple(r) for r in connect(db).execute("SELECT name, status FROM campaigns ORDER BY id")] == before


def test_a_campaign_name_of_spaces_is_never_created(db):
    before = [tuple(r) for r in connect(db).execute("SELECT name FROM campaigns ORDER BY id")]
    result = cli("import", str(EXAMPLE), "-c", "   ", "--db", "x.db")
    assert (result.exit_code, result.stderr) == (2, "Error: campaign name '   ' is blank: give the campaign a name\n")
    assert cli("pause", "   ", "--db", "x.db").stderr == "Error: no campaign named '   '\n"
    assert [tuple(r) for r in connect(db).execute("SELECT name FROM campaigns ORDER BY id")] == before


def test_a_blank_named_campaign_made_before_names_were_checked_can_still_be_paused(db):
    # An older version let `import -c " "` create one; it may be sending: it must stay manageable.
    connect(db).execute("INSERT INTO campaigns (name, subject_template, html_template, created_at)"
                        " SELECT ' ', subject_template, html_template, created_at FROM campaigns LIMIT 1")
    assert cli("pause", " ", "--db", "x.db").stdout == "Campaign ' ' paused.\n"
    assert cli("resume", " ", "--db", "x.db").exit_code == 0


def test_a_blank_campaign_name_with_json_is_one_json_object(db):
    result = cli("import", str(EXAMPLE), "-c", "", "--db", "x.db", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": "campaign name '' is blank: give the campaign a name"}


def test_a_campaign_name_longer_than_a_line_is_refused_before_anything_is_imported(db):
    before = [tuple(r) for r in connect(db).execute("SELECT name FROM campaigns ORDER BY id")]
    result = cli("import", str(EXAMPLE), "-c", "x" * 5000, "--db", "x.db")
    assert (result.exit_code, result.stderr) == (2, f"Error: campaign name {'x' * 20!r}... is 5,000 characters long: "
                                                    "keep it to 100 or fewer\n")
    assert [tuple(r) for r in connect(db).execute("SELECT name FROM campaigns ORDER BY id")] == before
    assert cli("import", str(EXAMPLE), "-c", "y" * 100, "--db", "x.db").exit_code == 0


@pytest.mark.parametrize("name", ["z" * 120, "a\tb"])
def test_a_campaign_made_before_names_were_checked_still_takes_imports_and_templates(db, name):
    connect(db).execute("INSERT INTO campaigns (name, subject_template, html_template, created_at)"
                        " SELECT ?, subject_template, html_template, created_at FROM campaigns LIMIT 1", (name,))
    assert cli("import", str(EXAMPLE), "-c", name, "--db", "x.db").exit_code == 0
    assert cli("template", "set", "--subject", "Hi {{ first_name }}", "-c", name, "--db", "x.db").exit_code == 0


@pytest.mark.parametrize("name", ["\x1b[31mred\x1b[0m", "a\nb", "a\tb"])
def test_a_campaign_name_with_a_control_character_is_refused(db, name):
    """An escape sequence went to the terminal with every `status`; a line break split the import's line."""
    result = cli("import", str(EXAMPLE), "-c", name, "--db", "x.db")
    assert (result.exit_code, result.stderr) == (2, f"Error: campaign name {name!r}: use printable characters (no "
                                                    "tabs, line breaks or control characters)\n")


@pytest.mark.parametrize("name", ["(the campaign's own)", "+ new template", "(x)"])
def test_a_template_name_the_dashboards_template_box_uses_for_its_own_entries_is_refused(db, name):
    result = cli("template", "add", name, "--subject", "Hi", "--db", "x.db")
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: template name {name!r}: a name cannot start with")


def test_template_show_of_a_missing_template_prints_only_the_error_and_trims_the_name_as_add_does(db, tmp_path):
    missing = cli("template", "show", "nope", "--db", "x.db")
    assert (missing.exit_code, missing.stdout) == (2, "")
    assert missing.stderr.startswith("Error: campaign 'default' has no template 'nope'")
    html = tmp_path / "sp.html"
    html.write_text("<p>Hi</p>", encoding="utf-8")
    assert cli("template", "add", "  sp  ", "--subject", "Hi", "--html", str(html), "--db", "x.db").exit_code == 0
    shown = cli("template", "show", "  sp  ", "--db", "x.db")
    assert shown.exit_code == 0 and shown.stdout.startswith("Campaign: default (active), template: sp\nSubject: Hi\n")


def test_a_campaign_name_with_spaces_around_it_is_still_taken_as_given(db):
    assert cli("import", str(EXAMPLE), "-c", " spring ", "--db", "x.db").stdout.startswith(
        f"{EXAMPLE}: 20 added to campaign ' spring '")
    assert cli("pause", " spring ", "--db", "x.db").stdout == "Campaign ' spring ' paused.\n"


@pytest.mark.parametrize("out, reason", [("no-such-dir/x.eml", "No such file or directory"),
                                         ("x.db/x.eml", "Not a directory"), (".", "Is a directory")])
def test_preview_to_an_unwritable_file_is_refused_before_anything_is_printed(db, out, reason):
    result = cli("preview", "--db", "x.db", "--out", out)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"Error: {out}: cannot write: {reason}\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_preview_into_a_read_only_folder_is_refused_before_anything_is_printed(db, tmp_path):
    (tmp_path / "locked").mkdir(mode=0o555)
    result = cli("preview", "--db", "x.db", "--out", "locked/x.eml")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "Error: locked/x.eml: cannot write: Permission denied\n"


@pytest.mark.parametrize("out", ["x.db", "x.db-wal", "x.db-shm", "x.db-journal"])
def test_preview_out_to_the_database_is_refused_and_the_database_kept(db, out):
    """The WAL file is there only while a connection is open: its name was accepted between runs,
    and a run starting meanwhile would have had its log written over."""
    result = cli("preview", "--db", "x.db", "--out", out)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"Error: {out}: is a database file; name another file for --out\n"
    assert cli("status", "--db", "x.db").exit_code == 0


def test_preview_out_to_a_file_named_like_a_companion_alone_is_written(db, tmp_path):
    """`-wal` beside nothing: no database's companion (its check raised ValueError: a traceback)."""
    result = cli("preview", "--db", "x.db", "--out", "./-wal")
    assert result.exit_code == 0 and result.stdout.endswith("Written to -wal\n")
    assert (tmp_path / "-wal").read_bytes().startswith(b"<!DOCTYPE html>")  # the HTML part


def test_preview_shows_the_recipient_the_next_run_sends_first(db):
    (first, _, _), second = connect(db).execute("SELECT email, first_name, last_name FROM recipients ORDER BY id LIMIT 2")
    conn = connect(db)  # `first` was already mailed in another campaign: the run will skip it
    conn.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) VALUES ('older', 's', 'h', 'x')")
    conn.execute("INSERT INTO recipients (campaign_id, email, status, created_at) VALUES (2, ?, 'sent', 'x')", (first,))
    shown = cli("preview", "--db", "x.db").stdout
    assert shown.startswith(f"From: jane@example.com\nTo: {second[1]} {second[2]} <{second[0]}>\n")


def test_pause_and_resume(db):
    assert cli("pause", "default", "--db", "x.db").stdout == "Campaign 'default' paused.\n"
    assert json.loads(cli("resume", "default", "--db", "x.db", "--json").stdout) == {"campaign": "default", "state": "active"}


def test_preview_does_not_pick_someone_a_colleagues_reply_stops(db):
    """The first queued, Sarah's colleague James, is skipped by the run once Sarah answered."""
    assert cli("mark", "sarah.klein@example.com", "replied", "--db", "x.db").exit_code == 0
    shown = cli("preview", "--db", "x.db").stdout
    assert shown.startswith("From: jane@example.com\nTo: María González <maria.gonzalez@example.org>\n")
