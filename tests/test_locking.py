"""The run lock against a real second process: a live run, a hung run, a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from email_automation.cli import app
from email_automation.config import load_settings
from email_automation.locking import LockHolder, lock_path
from email_automation.run_daily import max_run_duration

runner = CliRunner()

# Holds the run lock, as a run would, with the start time given on the command line; says
# "ready" once it holds it, then waits for its stdin to close (no sleeping).
HOLDER = textwrap.dedent("""\
    import sys
    from datetime import datetime
    from email_automation.locking import run_lock
    with run_lock(sys.argv[1], now=lambda: datetime.fromisoformat(sys.argv[2])):
        print("ready", flush=True)
        sys.stdin.read()
""")


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    monkeypatch.setenv("DELAY_SECONDS", "0")
    path = tmp_path / "t.db"
    assert runner.invoke(app, ["init", "--db", str(path)]).exit_code == 0
    return path


@pytest.fixture
def holder(db):
    """Start a second process holding the lock since the given time; closed after the test."""
    procs = []

    def start(started: datetime) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), started.isoformat()],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline() == "ready\n"
        return proc

    yield start
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_live_run_makes_the_next_one_say_who_holds_the_lock_and_exit_0(db, holder):
    started = datetime.now(timezone.utc).replace(microsecond=0)
    proc = holder(started)
    result = runner.invoke(app, ["run", "--db", str(db)])
    assert result.exit_code == 0
    assert result.stdout == (f"another run (pid {proc.pid}, started {started:%Y-%m-%d %H:%M:%S} UTC) holds the "
                             f"lock {lock_path(db)}; nothing to do\n")


def test_a_run_holding_the_lock_longer_than_any_run_can_is_reported_as_hung_with_exit_3(db, holder):
    started = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=30)  # hung for a month
    proc = holder(started)
    result = runner.invoke(app, ["run", "--db", str(db)])
    assert result.exit_code == 3
    assert result.stderr.startswith(
        f"Error: another run (pid {proc.pid}, started {started:%Y-%m-%d %H:%M:%S} UTC) has held the lock "
        f"{lock_path(db)} for 720.0 h, longer than a run can take (3.8 h): ")  # DELAY_SECONDS=0, SES lookups
    assert (f"it is probably hung, and no run can send until it ends. Check it with `ps -p {proc.pid}`, stop it "
            f"with `kill {proc.pid}` (`kill -9 {proc.pid}` if it does not end); the next run then marks a message it "
            "could not record as unknown") in result.stderr


def test_a_killed_run_leaves_no_lock_behind(db, holder):
    proc = holder(datetime(2026, 1, 5, 7, 0, tzinfo=timezone.utc))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    result = runner.invoke(app, ["run", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "another run" not in result.output
    assert "Dry run: 0 message(s) written" in result.stdout


def test_the_longest_healthy_run_follows_the_limit_delay_and_timeout(tmp_path):
    settings = load_settings(db_path=tmp_path / "x.db", daily_limit=80, delay_seconds=5, send_timeout_seconds=30,
                             transport="smtp", smtp_host="127.0.0.1")
    # 80 x (5 s delay + 2+4+8 s retry waits + 4 tries x 30 s timeout) + 10 minutes
    assert max_run_duration(settings).total_seconds() == 80 * (5 + 14 + 120) + 600


def test_the_longest_healthy_run_counts_the_ses_list_calls_and_the_inbox_read(tmp_path):
    settings = load_settings(db_path=tmp_path / "x.db", daily_limit=80, delay_seconds=5, send_timeout_seconds=30,
                             ses_contact_list="outreach", imap_host="imap.example.com")
    # each message: + GetSuppressedDestination, GetContact and CreateContact, 30 s each;
    # the inbox: 6 commands + 3 fetches per 25 messages of 80 (4 batches), 60 s each
    assert max_run_duration(settings).total_seconds() == 80 * (5 + 14 + 120 + 3 * 30) + (6 + 3 * 4) * 60 + 600


def test_a_long_run_with_the_ses_contact_list_is_not_called_hung(db, holder, monkeypatch):
    # 4 hours: more than sends alone can take at DELAY_SECONDS=0 (3.1 h), less than with the SES
    # suppression-list and contact-list calls before each claim (5.1 h).
    monkeypatch.setenv("SES_CONTACT_LIST", "outreach")
    started = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=4)
    proc = holder(started)
    result = runner.invoke(app, ["run", "--db", str(db)])
    assert (result.exit_code, result.stdout) == (0, f"another run (pid {proc.pid}, started {started:%Y-%m-%d %H:%M:%S} "
                                                    f"UTC) holds the lock {lock_path(db)}; nothing to do\n")


def test_a_lock_file_from_an_older_version_holds_only_a_pid():
    assert LockHolder.parse("4242").describe() == "pid 4242"
