"""`run`, `status` and `events` as a user sees them: exact lines, one JSON object, exit codes."""

from __future__ import annotations

import errno
import json
import os
from datetime import datetime, timezone

import pytest
from rich.cells import cell_len

from email_automation.database import connect
from email_automation.locking import run_lock
from tests.cli_helpers import cli, without_times
from tests.smtp_sink import SmtpSink

PEOPLE = "email,first_name\nada@example.com,Ada\nbob@example.com,Bob\ngone@example.com,Gone\ncy@example.com,Cy\n"


@pytest.fixture
def db(tmp_path, monkeypatch):
    """A database with four pending recipients; DAILY_LIMIT 5, no delay, SMTP for real sends."""
    for name, value in {"SENDER_EMAIL": "jane@example.com", "DELAY_SECONDS": "0", "TIMEZONE": "UTC",
                        "DAILY_LIMIT": "5", "TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
                        "SMTP_STARTTLS": "false"}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "people.csv").write_text(PEOPLE)
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("import", "people.csv", "--db", "x.db").exit_code == 0
    return tmp_path / "x.db"


@pytest.fixture
def sink(monkeypatch):
    with SmtpSink(rcpt_replies={"gone@example.com": "550 5.1.1 No such user"}) as server:
        monkeypatch.setenv("SMTP_PORT", str(server.port))
        yield server


def test_a_real_run_prints_each_message_and_the_counts(db, sink):
    result = cli("run", "--db", "x.db", "--send", "--limit", "3")
    assert (result.exit_code, result.stderr) == (0, "")
    lines = without_times(result.stdout).splitlines()
    assert lines[0] == "INFO run: 3 message(s) to send now, daily limit 5, 0 already counted today"
    assert [line.split()[1:3] for line in lines[1:3]] == [["ada@example.com", "sent"], ["bob@example.com", "sent"]]
    assert lines[3] == ("INFO gone@example.com failed (550: SMTP server refused recipient: gone@example.com: "
                        "550 5.1.1 No such user)")
    assert lines[4:] == ["Sent 2, failed 1, deferred 0, skipped 0, unknown 0; 3 left today."]
    assert [d.rcpt_tos for d in sink.deliveries] == [["ada@example.com"], ["bob@example.com"]]


def test_a_run_after_daily_limit_was_lowered_says_how_many_were_counted_today(db, sink, monkeypatch):
    """It said "daily limit 1, 1 already counted today" while `status` said 2 of 1 used."""
    cli("run", "--db", "x.db", "--send", "--limit", "2")
    monkeypatch.setenv("DAILY_LIMIT", "1")
    lines = without_times(cli("run", "--db", "x.db", "--send").stdout).splitlines()
    assert lines[0] == "INFO run: 0 message(s) to send now, daily limit 1, 2 already counted today"


def test_status_shows_the_campaigns_today_and_what_needs_a_decision(db, sink):
    cli("run", "--db", "x.db", "--send", "--limit", "3")
    connect(db).execute("UPDATE recipients SET status = 'unknown' WHERE email = 'cy@example.com'")
    today = datetime.now(timezone.utc).date()
    result = cli("status", "--db", "x.db")
    if datetime.now(timezone.utc).date() != today:
        pytest.skip("midnight passed between the run and status")
    assert result.exit_code == 0
    assert [line.rstrip() for line in result.stdout.splitlines()] == [
        " Campaign  State   Pending  Sending  Sent  Failed  Skipped  Unknown  Total",
        " default   active  0        0        2     1       0        1        4",
        # gone@ was refused with 550 5.1.1: a hard bounce, so its address is suppressed.
        f"Today ({today}): 2 sent, 2 of DAILY_LIMIT 5 used, 3 left. Suppressed addresses: 1.",
        "DRY_RUN is on: runs write .eml files to a new folder in the outbox and send nothing.",
        "Needs a decision: cy@example.com (default) may or may not have been sent; "
        "`email-automation resolve cy@example.com --sent` or `--pending`.",
        "Replies in default: 3 contacted -> 0 replied (0%) -> 0 interview -> 0 offer.",
    ]


def test_status_names_the_first_ten_that_need_a_decision_and_counts_the_rest(db):
    conn = connect(db)
    conn.executemany("INSERT INTO recipients (campaign_id, email, status, created_at) VALUES (1, ?, 'unknown', 'x')",
                     [(f"u{i:02}@example.com",) for i in range(13)])
    conn.commit()
    lines = [line for line in cli("status", "--db", "x.db").stdout.splitlines() if line.startswith("Needs a decision")]
    assert [line.split()[3] for line in lines[:10]] == [f"u{i:02}@example.com" for i in range(10)]
    assert lines[10:] == ["Needs a decision: 3 more recipients may or may not have been sent; `status --json` lists "
                          "them all (unknown_recipients), the dashboard's Recipients tab too."]
    assert len(json.loads(cli("status", "--db", "x.db", "--json").stdout)["unknown_recipients"]) == 13


def test_status_columns_stay_aligned_under_a_campaign_name_in_wide_characters(db):
    assert cli("import", "people.csv", "--db", "x.db", "--campaign", "東京 [b]x[/b]").exit_code == 0
    header, *rows = cli("status", "--db", "x.db").stdout.splitlines()[:3]
    assert header == " Campaign       State   Pending  Sending  Sent  Failed  Skipped  Unknown  Total"
    assert rows == [" default        active  4        0        0     0       0        0        4",
                    " 東京 [b]x[/b]  active  4        0        0     0       0        0        4"]


def test_status_keeps_one_line_per_campaign_for_line_breaks_and_zero_width_characters(db):
    assert cli("import", "people.csv", "--db", "x.db", "--campaign", "ไทย-สั่ง").exit_code == 0
    for name in ("Spring\nlaunch", "zero\u200bwidth"):  # refused now; made by an older version
        assert cli("import", "people.csv", "--db", "x.db", "--campaign", name).exit_code == 2
        conn = connect(db)
        conn.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at)"
                     " SELECT ?, subject_template, html_template, created_at FROM campaigns LIMIT 1", (name,))
        conn.execute("INSERT INTO recipients (campaign_id, email, created_at) SELECT id, 'x@example.com', 'x'"
                     " FROM campaigns WHERE name = ?", (name,))
        conn.close()
    header, *rows = cli("status", "--db", "x.db").stdout.splitlines()[:5]
    # Terminal columns as rich counts them (the table rich drew before status went without it).
    assert [cell_len(row[:row.index(" active ")]) for row in rows] == [header.index(" State ")] * 4
    assert any(row.startswith(" Spring launch ") for row in rows)


def test_each_dry_run_writes_a_folder_of_its_own_and_says_which(db, tmp_path):
    first = cli("run", "--db", "x.db", "--limit", "1")
    second = cli("run", "--db", "x.db", "--limit", "1")
    folders = sorted(p for p in (tmp_path / "outbox").iterdir())
    assert len(folders) == 2 and all(len(list(f.glob("*.eml"))) == 1 for f in folders)
    for result in (first, second):
        last = result.stdout.splitlines()[-1]
        folder = last.removeprefix("Dry run: 1 message(s) written to ").split("/ and nothing sent.")[0]
        assert tmp_path / folder in folders
        assert last.endswith("and nothing sent. To send for real, set DRY_RUN=false (or pass --send).")


def test_run_json_is_one_object_with_deferred_and_the_outbox(db, tmp_path):
    result = cli("run", "--db", "x.db", "--json", "--limit", "2")
    data = json.loads(result.stdout)
    assert data == {"sent": 0, "failed": 0, "deferred": 0, "skipped": 0, "unknown": 0, "remaining_today": 5,
                    "dry_run": True, "previewed": 2, "outbox": data["outbox"], "stopped": None,
                    "held_back": [], "paused": [], "steps": {"1": {"previewed": 2}}, "window": None}
    assert len(list((tmp_path / data["outbox"]).glob("*.eml"))) == 2
    assert "dry_run dry-run-" in result.stderr  # the per-message lines go to stderr, out of the JSON's way


def test_run_json_while_another_run_holds_the_lock(db):
    with run_lock(db):
        result = cli("run", "--db", "x.db", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["locked"] is True and data["message"].startswith("another run (pid ")


def test_run_json_on_an_error_is_an_error_object(db, monkeypatch):
    monkeypatch.delenv("SENDER_EMAIL")
    result = cli("run", "--db", "x.db", "--send", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": "SENDER_EMAIL is not set: set it to the verified address you send from"}


def test_an_outbox_that_cannot_be_written_is_one_line_and_claims_nothing(db, tmp_path, monkeypatch):
    (tmp_path / "blocked").write_text("a file, not a folder")
    monkeypatch.setenv("OUTBOX_DIR", "blocked")
    result = cli("run", "--db", "x.db")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: OUTBOX_DIR: cannot write blocked/")
    assert result.stderr.endswith(": Not a directory\n") and result.stderr.count("\n") == 1
    statuses = {row[0] for row in connect(db).execute("SELECT status FROM recipients")}
    assert statuses == {"pending"}


def test_a_full_disk_under_the_outbox_is_one_line(db, monkeypatch):
    from email_automation.transports import dry_run

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(dry_run, "_write_atomically", disk_full)
    result = cli("run", "--db", "x.db", "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error.startswith("OUTBOX_DIR: cannot write outbox/") and error.endswith(": No space left on device")


def test_status_shows_a_campaign_name_that_looks_like_markup_as_written(db, tmp_path):
    (tmp_path / "more.csv").write_text("email\nzed@example.com\n")
    assert cli("import", "more.csv", "--db", "x.db", "-c", "[/x]").exit_code == 0
    result = cli("status", "--db", "x.db")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[2].split() == ["[/x]", "active", "1", "0", "0", "0", "0", "0", "1"]


def test_a_log_file_that_is_the_database_is_refused_before_anything_is_sent(db, sink):
    """Appending log lines to the ledger, then rotating it away at 1 MB, would lose every send."""
    result = cli("run", "--db", "x.db", "--send", "--log-file", "x.db")
    assert (result.exit_code, result.stderr) == (
        2, "Error: invalid setting LOG_FILE=x.db: it is a database file; name another file\n")
    assert sink.deliveries == []
    assert cli("status", "--db", "x.db").exit_code == 0
