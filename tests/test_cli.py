"""The CLI as a user types it: exact output, exit codes, and no traceback on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from email_automation.cli import app
from email_automation.database import connect

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "recipients.csv"


def cli(*args, env=None):
    result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    return result


@pytest.fixture
def demo_db(tmp_path, monkeypatch):
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    monkeypatch.setenv("DELAY_SECONDS", "0")
    monkeypatch.setenv("TIMEZONE", "UTC")
    path = tmp_path / "cli.db"
    assert cli("init", "--db", str(path)).exit_code == 0
    return path


def test_init_twice_is_fine(tmp_path):
    first = cli("init", "--db", str(tmp_path / "x.db"))
    second = cli("init", "--db", str(tmp_path / "x.db"))
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert second.stdout.strip() == f"Database ready: {tmp_path / 'x.db'}"


def test_bad_configuration_is_one_line_and_exit_code_2(tmp_path):
    result = cli("status", "--db", str(tmp_path / "x.db"), env={"DAILY_LIMIT": "abc"})
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: invalid setting DAILY_LIMIT=abc: expected a whole number from 0 to 100000"
    assert "Traceback" not in result.output


def test_commands_before_init_say_what_to_do(tmp_path):
    result = cli("status", "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 2
    assert "run `email-automation init` first" in result.stderr


def test_import_run_and_status_in_a_dry_run(demo_db, tmp_path):
    imported = cli("import", str(EXAMPLE), "--db", str(demo_db), "--json")
    assert imported.exit_code == 0, imported.output
    counts = json.loads(imported.stdout)
    assert set(counts) == {"inserted", "duplicates", "invalid", "rejects_file"}
    assert counts["inserted"] >= 15

    ran = cli("run", "--db", str(demo_db), "--json")
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout)
    assert summary["dry_run"] is True and summary["sent"] == 0
    assert summary["previewed"] == counts["inserted"]
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == counts["inserted"]

    status = cli("status", "--db", str(demo_db), "--json")
    data = json.loads(status.stdout)
    assert data["campaigns"]["default"]["pending"] == counts["inserted"]
    assert data["sent_today"] == 0


def test_dry_run_ends_by_saying_how_to_send_for_real(demo_db):
    cli("import", str(EXAMPLE), "--db", str(demo_db))
    result = cli("run", "--db", str(demo_db), "--limit", "2")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert sum(" dry_run dry-run-" in line for line in lines) == 2, result.output
    assert lines[-1].endswith("To send for real, set DRY_RUN=false (or pass --send).")


def test_import_of_a_file_that_is_not_a_csv_exits_2_and_changes_nothing(demo_db, tmp_path):
    bad = tmp_path / "photo.csv"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    result = cli("import", str(bad), "--db", str(demo_db))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {bad}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert connect(demo_db).execute("SELECT count(*) FROM recipients").fetchone()[0] == 0


def test_suppress_resolve_and_friends_report_what_they_did(demo_db):
    cli("import", str(EXAMPLE), "--db", str(demo_db))
    email = connect(demo_db).execute("SELECT email FROM recipients ORDER BY id LIMIT 1").fetchone()[0]
    assert cli("suppress", email.upper(), "--db", str(demo_db), "--reason", "unsubscribe").stdout.strip() == (
        f"{email} suppressed (unsubscribe); 1 pending recipient(s) skipped."
    )
    missing = cli("resolve", email, "--sent", "--db", str(demo_db))
    assert missing.exit_code == 1
    assert missing.stderr.strip() == f"Error: {email}: no recipient in unknown state with that address"
    assert cli("pause", "default", "--db", str(demo_db)).stdout.strip() == "Campaign 'default' paused."
    assert cli("pause", "nope", "--db", str(demo_db)).stderr.strip() == "Error: no campaign named 'nope'"


def test_template_set_checks_syntax_before_storing(demo_db, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text("<p>Hello {{ first_name </p>")
    result = cli("template", "set", "--html", str(broken), "--db", str(demo_db))
    assert result.exit_code == 2
    assert "line 1" in result.stderr
    good = tmp_path / "good.html"
    good.write_text("<p>Hello {{ first_name }}</p>")
    assert cli("template", "set", "--html", str(good), "--subject", "Hi {{ first_name }}", "--db", str(demo_db)).exit_code == 0
    shown = cli("template", "show", "--db", str(demo_db)).stdout
    assert "Subject: Hi {{ first_name }}" in shown and "<p>Hello {{ first_name }}</p>" in shown


def test_python_dash_m_runs_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "email_automation", "--help"], capture_output=True, text=True, check=True)
    assert "Usage:" in result.stdout and "run" in result.stdout and "import" in result.stdout


def test_preview_to_an_unwritable_file_is_one_line(demo_db, tmp_path):
    assert cli("import", str(EXAMPLE), "--db", str(demo_db)).exit_code == 0
    result = cli("preview", "--db", str(demo_db), "--out", str(tmp_path / "no-such-dir" / "x.eml"))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {tmp_path / 'no-such-dir' / 'x.eml'}: cannot write: No such file or directory"


def test_resolve_without_a_decision_names_both_choices(demo_db):
    result = cli("resolve", "a@example.com", "--db", str(demo_db))
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: say what happened: --sent (it went out) or --pending (it did not; send it again)"


def test_preview_shows_the_recipient_the_next_run_sends_first(demo_db):
    cli("import", str(EXAMPLE), "--db", str(demo_db))
    first, second = [r[0] for r in connect(demo_db).execute("SELECT email FROM recipients ORDER BY id LIMIT 2")]
    conn = connect(demo_db)  # `first` was already mailed in another campaign: the run will skip it
    conn.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) VALUES ('older', 's', 'h', 'x')")
    conn.execute("INSERT INTO recipients (campaign_id, email, status, created_at) VALUES (2, ?, 'sent', 'x')", (first,))
    shown = cli("preview", "--db", str(demo_db)).stdout
    assert shown.startswith(f"To: {second}\n")
