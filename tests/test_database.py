"""Schema creation, in-place upgrades and the connection settings the state machine relies on."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import pytest

from email_automation import database
from email_automation.database import SCHEMA_VERSION, connect, init_db, migrate, open_db, schema_version
from email_automation.errors import ConfigError


def test_init_creates_every_table_with_a_default_campaign(tmp_path):
    conn = init_db(tmp_path / "a.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"campaigns", "recipients", "send_log", "suppressions", "admin_log"} <= tables
    assert [r["name"] for r in conn.execute("SELECT name FROM campaigns")] == ["default"]
    assert schema_version(conn) == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_init_is_idempotent_and_keeps_rows(tmp_path):
    path = tmp_path / "a.db"
    conn = init_db(path)
    conn.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (1, 'a@example.com', 'now')")
    conn.close()
    conn = init_db(path)
    assert conn.execute("SELECT count(*) FROM campaigns").fetchone()[0] == 1
    assert conn.execute("SELECT email FROM recipients").fetchone()[0] == "a@example.com"


def test_an_older_database_upgrades_in_place_without_losing_rows(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    conn = init_db(path)
    conn.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (1, 'kept@example.com', 'now')")
    conn.close()
    upgrade = "ALTER TABLE recipients ADD COLUMN source TEXT NOT NULL DEFAULT 'csv';"
    monkeypatch.setattr(database, "MIGRATIONS", (*database.MIGRATIONS, upgrade))
    monkeypatch.setattr(database, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    conn = open_db(path)
    assert schema_version(conn) == SCHEMA_VERSION + 1
    assert tuple(conn.execute("SELECT email, source FROM recipients").fetchone()) == ("kept@example.com", "csv")
    assert migrate(conn) == 0


def test_a_failed_migration_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "a.db"
    init_db(path).close()
    broken = "CREATE TABLE half_done (x INTEGER); THIS IS NOT SQL;"
    monkeypatch.setattr(database, "MIGRATIONS", (*database.MIGRATIONS, broken))
    monkeypatch.setattr(database, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    conn = connect(path)
    with pytest.raises(sqlite3.Error):
        migrate(conn)
    assert schema_version(conn) == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0


def test_a_database_from_a_newer_version_is_refused(tmp_path):
    conn = init_db(tmp_path / "a.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    with pytest.raises(ConfigError, match="newer than this program"):
        migrate(conn)


def test_commands_other_than_init_say_how_to_start(tmp_path):
    with pytest.raises(ConfigError) as caught:
        open_db(tmp_path / "missing.db")
    assert str(caught.value) == f"{tmp_path / 'missing.db'}: no database yet; run `email-automation init` first"


def test_read_only_connections_cannot_write(tmp_path):
    init_db(tmp_path / "a.db").close()
    reader = connect(tmp_path / "a.db", readonly=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM campaigns")


def test_two_processes_creating_the_same_database_at_once_both_succeed(tmp_path):
    import subprocess
    import sys
    import time

    path, go = tmp_path / "race.db", tmp_path / "go"
    # Each process imports first, then waits for the same signal, so their starts really overlap.
    code = ("import sys, os, time; from email_automation.database import init_db\n"
            "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
            "init_db(sys.argv[1])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(go)], stderr=subprocess.PIPE) for _ in range(6)]
    time.sleep(1.0)  # let every process reach the starting line; the result does not depend on it
    go.touch()
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    conn = connect(path)
    assert schema_version(conn) == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM campaigns").fetchone()[0] == 1


# --- only `init` creates a database ------------------------------------------------------------

# Every command that reads or writes the database, as a user types it (after `--db PATH`).
_EXAMPLE_CSV = str(Path(__file__).resolve().parents[1] / "examples" / "recipients.csv")
_DB_COMMANDS = [
    ["import", _EXAMPLE_CSV], ["status"], ["run"], ["preview"], ["template", "show"], ["retry-failed"], ["skip", "a@example.com"],
    ["suppress", "a@example.com"], ["unsuppress", "a@example.com"], ["resolve", "a@example.com", "--sent"],
    ["pause", "default"], ["resume", "default"], ["dashboard"],
    ["events", "--queue-url", "https://sqs.us-east-1.amazonaws.com/123456789012/ses-events"],
]


@pytest.fixture(autouse=True)
def _no_real_streamlit(monkeypatch):
    """`dashboard` past its checks would start Streamlit: a stand-in that exits at once instead."""
    import sys

    from email_automation.cli import dashboard as cli_dashboard

    monkeypatch.setattr(cli_dashboard, "streamlit_command", lambda **_: [sys.executable, "-c", "pass"])


def _cli(*args: str):
    from typer.testing import CliRunner

    from email_automation.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _foreign_db(path):
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    other.execute("INSERT INTO notes (body) VALUES ('keep me')")
    other.commit()
    other.close()


@pytest.mark.parametrize("command", _DB_COMMANDS, ids=lambda c: c[0])
def test_no_command_but_init_creates_a_database(tmp_path, command):
    path = tmp_path / "missing.db"
    result = _cli(*command, "--db", str(path))
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"Error: {path}: no database yet; run `email-automation init` first\n")
    assert not path.exists()


@pytest.mark.parametrize("command", _DB_COMMANDS, ids=lambda c: c[0])
def test_a_zero_byte_database_is_refused_not_recreated_empty(tmp_path, command):
    path = tmp_path / "truncated.db"
    path.touch()  # what a full disk or an interrupted copy leaves behind
    result = _cli(*command, "--db", str(path))
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"Error: {path}: the file has no email-automation data (it is empty: truncated or not a copy of "
               "the database?); restore it from a backup, or run `email-automation init` to start a new one\n")
    assert path.stat().st_size == 0


@pytest.mark.parametrize("command", [*_DB_COMMANDS, ["init"]], ids=lambda c: c[0])
def test_another_programs_database_is_refused_and_left_alone(tmp_path, command):
    path = tmp_path / "other.db"
    _foreign_db(path)
    before = path.read_bytes()
    result = _cli(*command, "--db", str(path))
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"Error: {path}: not an email-automation database (it holds tables of another program); "
               "check DB_PATH or --db\n")
    assert path.read_bytes() == before


@pytest.mark.parametrize("command", [*_DB_COMMANDS, ["init"], ["backup", "copy.db"], ["unsubscribe", "x"]],
                         ids=lambda c: c[0])
def test_a_folder_as_the_database_is_named_as_one(tmp_path, command):
    # Not "no database yet; run init", which `init` then answered with "unable to open database file".
    folder = tmp_path / "adir"
    folder.mkdir()
    result = _cli(*command, "--db", str(folder))
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"Error: {folder}: is a folder; DB_PATH (or --db) must name the database file, "
               f"e.g. {folder / 'email_automation.db'}\n")
    assert list(folder.iterdir()) == []


def test_db_path_naming_a_folder_is_named_as_one_by_init_and_doctor(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from email_automation.cli import app
    from email_automation.doctor import FAIL, check_database

    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    result = CliRunner().invoke(app, ["init"], env={"DB_PATH": "adir"}, catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (
        2, "Error: adir: is a folder; DB_PATH (or --db) must name the database file, e.g. adir/email_automation.db\n")
    check = check_database(Path("adir"))
    assert (check.status, check.detail) == (
        FAIL, "adir: is a folder; DB_PATH (or --db) must name the database file, e.g. adir/email_automation.db")


def test_init_starts_a_new_database_in_an_empty_file(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    assert _cli("init", "--db", str(path)).exit_code == 0
    assert _cli("status", "--db", str(path)).exit_code == 0


def test_backup_and_doctor_refuse_an_empty_database(tmp_path):
    from email_automation.doctor import FAIL, check_database

    path = tmp_path / "truncated.db"
    path.touch()
    result = _cli("backup", str(tmp_path / "copy.db"), "--db", str(path))
    assert result.exit_code == 2 and "the file has no email-automation data" in result.stderr
    assert not (tmp_path / "copy.db").exists()
    check = check_database(path)
    assert check.status == FAIL and "the file has no email-automation data" in check.detail


def test_the_dashboard_data_refuses_an_empty_database(tmp_path, settings):
    from email_automation.dashboard_data import Reports

    settings.db_path.touch()
    with pytest.raises(ConfigError, match="the file has no email-automation data"):
        Reports(settings.db_path, settings).today()
    assert settings.db_path.stat().st_size == 0


# --- upgrading databases written by earlier versions ------------------------------------------


def _database_at_version(path, version, monkeypatch) -> sqlite3.Connection:
    with monkeypatch.context() as patch:
        patch.setattr(database, "MIGRATIONS", database.MIGRATIONS[:version])
        patch.setattr(database, "SCHEMA_VERSION", version)
        return init_db(path)


def _old_attempt(conn, email, status, *, error=None, error_class=None, recipient_status="pending"):
    """A recipient and one send_log row as version 3 wrote them; returns the log row's id."""
    rid = conn.execute("INSERT OR IGNORE INTO recipients (campaign_id, email, status, created_at) VALUES (1, ?, ?, 'x')",
                       (email, recipient_status)).lastrowid
    rid = conn.execute("SELECT id FROM recipients WHERE email = ?", (email,)).fetchone()[0]
    return conn.execute(
        "INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, error, error_class, transport)"
        " VALUES (?, lower(hex(randomblob(16))), '2026-11-20', '2026-11-20T08:00:00.000000Z', ?, ?, ?, 'ses')",
        (rid, status, error, error_class)).lastrowid


def test_upgrading_gives_refused_for_now_attempts_their_own_status(tmp_path, monkeypatch):
    path = tmp_path / "v3.db"
    conn = _database_at_version(path, 3, monkeypatch)
    ids = {
        # a 451 / throttling refusal, the recipient left pending: what the dashboard counted as failed
        "greylisted": _old_attempt(conn, "grey@example.com", "failed", error="451: try later", error_class="transient"),
        # the last of MAX_ATTEMPTS refusals really failed the recipient; the one before did not
        "retried": _old_attempt(conn, "tired@example.com", "failed", error="451", error_class="transient",
                                recipient_status="failed"),
        "gave_up": _old_attempt(conn, "tired@example.com", "failed", error="451", error_class="transient",
                                recipient_status="failed"),
        "paused_account": _old_attempt(conn, "acct@example.com", "failed", error="SendingPaused", error_class="fatal"),
        "bounced": _old_attempt(conn, "gone@example.com", "failed", error="550: no such user",
                                error_class="permanent", recipient_status="failed"),
        "resolved_pending": _old_attempt(conn, "doubt@example.com", "failed",
                                         error="read timeout [resolved as pending by cli]", error_class="ambiguous"),
        "resolved_sent": _old_attempt(conn, "seen@example.com", "sent", error="read timeout [resolved as sent by cli]",
                                      error_class="ambiguous", recipient_status="sent"),
        "ses_not_sent": _old_attempt(conn, "rej@example.com", "failed", recipient_status="failed",
                                     error=" [resolved as not sent by ses-event: SES reported REJECTED]"),
        "disputed": _old_attempt(conn, "twice@example.com", "failed", error_class="ambiguous",
                                 error="timeout [resolved as pending by cli] [SES later reported this send: DELIVERED; "
                                       "it had been resolved as not sent, so this address may have two messages]"),
        "plain_sent": _old_attempt(conn, "ok@example.com", "sent", recipient_status="sent"),
    }
    conn.close()
    conn = open_db(path)
    got = {name: tuple(conn.execute("SELECT status, resolution FROM send_log WHERE id = ?", (i,)).fetchone())
           for name, i in ids.items()}
    assert got == {
        "greylisted": ("deferred", None), "retried": ("deferred", None), "gave_up": ("failed", None),
        "paused_account": ("deferred", None), "bounced": ("failed", None),
        "resolved_pending": ("deferred", "pending"), "resolved_sent": ("sent", "sent"),
        "ses_not_sent": ("failed", "failed"), "disputed": ("deferred", "disputed"), "plain_sent": ("sent", None),
    }
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'send_log'")}
    assert {"send_log_daily", "send_log_recipient", "send_log_unknown", "send_log_resolved_pending"} <= indexes
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_upgrading_restores_an_overwritten_first_suppression_reason(tmp_path, monkeypatch):
    path = tmp_path / "v4.db"
    conn = _database_at_version(path, 4, monkeypatch)
    # What version 4 wrote: an unsubscribe from SES, then `suppress` by hand overwrote its reason.
    conn.execute("INSERT INTO suppressions VALUES ('u@example.com', 'manual', 'cli', '2026-11-01T09:00:00.000000Z')")
    conn.execute("INSERT INTO admin_log (at, actor, action, target, detail) VALUES"
                 " ('2026-11-01T09:00:00.000000Z', 'ses-event', 'suppress', 'u@example.com', 'unsubscribe: unsubscribed'),"
                 " ('2026-11-05T10:00:00.000000Z', 'cli', 'suppress', 'u@example.com', 'manual')")
    conn.execute("INSERT INTO suppressions VALUES ('quiet@example.com', 'complaint', 'cli', '2026-11-02T09:00:00.000000Z')")
    conn.close()
    conn = open_db(path)
    assert [tuple(r) for r in conn.execute("SELECT * FROM suppressions ORDER BY email")] == [
        ("quiet@example.com", "complaint", "cli", "2026-11-02T09:00:00.000000Z"),
        ("u@example.com", "unsubscribe", "ses-event", "2026-11-01T09:00:00.000000Z"),
    ]
    assert [tuple(r) for r in conn.execute("SELECT email, action, reason, source FROM suppression_history ORDER BY id")] == [
        ("u@example.com", "suppress", "unsubscribe: unsubscribed", "ses-event"),
        ("u@example.com", "suppress", "manual", "cli"),
        ("quiet@example.com", "suppress", "complaint", "cli"),
    ]


def test_the_dashboard_asks_for_an_upgrade_it_cannot_make_on_a_read_only_connection(tmp_path, settings, monkeypatch):
    from email_automation.dashboard_data import Reports

    _database_at_version(settings.db_path, 3, monkeypatch).close()
    with pytest.raises(ConfigError) as caught:
        Reports(settings.db_path, settings).today()
    assert str(caught.value) == (f"{settings.db_path}: the database is from an older version; "
                                 "run `email-automation init` (or any command) to upgrade it, then reload")
    init_db(settings.db_path).close()
    assert Reports(settings.db_path, settings).today().counted == 0


def test_a_transaction_inside_a_group_is_undone_alone_and_committed_with_it(tmp_path):
    """A run claims a group of messages in one commit: each claim's own transaction becomes a step
    of it, undone alone when it fails, and nothing is visible to others before the one commit."""
    conn = database.init_db(tmp_path / "x.db")
    other = database.connect(tmp_path / "x.db")
    with database.group(conn):
        conn.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) VALUES ('a', '', '', 'x')")
        with pytest.raises(sqlite3.IntegrityError), database.transaction(conn):
            conn.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) VALUES ('b', '', '', 'x')")
            conn.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) VALUES ('a', '', '', 'x')")
        assert other.execute("SELECT count(*) FROM campaigns WHERE name = 'a'").fetchone()[0] == 0, "not committed yet"
    names = {row[0] for row in other.execute("SELECT name FROM campaigns")}
    assert "a" in names and "b" not in names


def test_a_transaction_left_open_is_never_taken_for_a_committed_one(tmp_path):
    """Outside a group, an open transaction (a failed COMMIT left it, say) makes the next step
    fail loudly: a claim that believed it was saved while nothing reached the disk could let a
    message leave twice."""
    conn = database.init_db(tmp_path / "x.db")
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"), database.transaction(conn):
        conn.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) VALUES ('a', '', '', 'x')")


def test_a_commit_that_fails_is_rolled_back(tmp_path):
    conn = database.init_db(tmp_path / "x.db")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA defer_foreign_keys=ON")  # the violation is found at COMMIT
    with pytest.raises(sqlite3.IntegrityError), database.transaction(conn):
        conn.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (999, 'x@example.com', 'x')")
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM recipients").fetchone()[0] == 0


def test_timestamps_are_stored_in_one_sortable_utc_format():
    from datetime import datetime, timedelta, timezone

    from email_automation.database import iso

    start = datetime(2026, 11, 30, 10, 53, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    moments = [start + timedelta(microseconds=n * 7_654_321_011) for n in range(500)] + [
        datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 3, 29, 1, 0, 0, 1, tzinfo=timezone.utc)]
    for moment in moments:
        assert iso(moment) == moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert iso(moments[0]) == "2026-11-30T05:23:30.000000Z"
    assert sorted(map(iso, moments)) == list(map(iso, sorted(moments)))


def test_an_interruption_just_after_begin_leaves_no_transaction_open(tmp_path):
    """Ctrl-C or SIGTERM lands between BEGIN and the body: the transaction is rolled back, not left
    open for every later write of the run to fail on."""
    from email_automation.database import transaction

    conn = init_db(tmp_path / "x.db")

    class InterruptedAfterBegin:
        def __getattr__(self, name):
            return getattr(conn, name)

        def execute(self, sql, *args):
            cursor = conn.execute(sql, *args)
            if sql.startswith("BEGIN"):
                raise KeyboardInterrupt
            return cursor

    with pytest.raises(KeyboardInterrupt):
        with transaction(InterruptedAfterBegin()):
            pass
    assert not conn.in_transaction
    conn.execute("BEGIN IMMEDIATE")  # a foreign open transaction: refused, and not ended for its owner
    with pytest.raises(sqlite3.OperationalError):
        with transaction(conn):
            pass
    assert conn.in_transaction
    conn.rollback()


def test_upgrading_to_17_gives_the_year_long_views_their_indexes_and_the_same_figures(settings, monkeypatch):
    """Migration 17 widens send_log_daily_step and ses_events_received and adds two event indexes;
    a database written by version 16 then shows the figures its rows hold."""
    from email_automation.dashboard_data import Reports
    from email_automation.reports import LogFilter

    conn = _database_at_version(settings.db_path, 16, monkeypatch)
    conn.execute("INSERT INTO recipients (campaign_id, email, status, created_at) VALUES"
                 " (1, 'a@example.com', 'sent', 'x'), (1, 'b@example.com', 'failed', 'x')")
    for n, (rid, status) in enumerate([(1, "sent"), (1, "sent"), (2, "failed"), (2, "dry_run")]):
        conn.execute("INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, transport, step)"
                     " VALUES (?, ?, '2026-11-20', ?, ?, 'ses', ?)",
                     (rid, f"a{n}", f"2026-11-20T08:00:0{n}.000000Z", status, 1 + n % 2))
    conn.execute("INSERT INTO ses_events (dedupe_key, kind, email, attempt_id, received_at) VALUES"
                 " ('k1', 'BOUNCED_PERMANENT', 'a@example.com', 'a1', '2026-11-20T09:00:00.000000Z'),"
                 " ('k2', 'DELIVERED', 'a@example.com', 'a0', '2026-11-20T09:00:00.000000Z')")
    conn.close()
    conn = open_db(settings.db_path)
    indexes = {row[0]: row[1] for row in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")}
    assert "(batch_date, step, status, recipient_id)" in indexes["send_log_daily_step"]
    assert "(received_at, email)" in indexes["ses_events_received"]
    assert {"ses_events_bad_news", "ses_events_kind"} <= set(indexes)
    conn.close()
    reports, f = Reports(settings.db_path, settings), LogFilter(date(2026, 11, 20), date(2026, 11, 20))
    summary = reports.summary(f)
    assert (summary.sent, summary.failed, summary.dry_run, summary.unique_recipients) == (2, 1, 1, 2)
    assert [(d.sent, d.failed, d.dry_run, d.sent_per_step) for d in summary.days] == [(2, 1, 1, {1: 1, 2: 1})]
    assert (reports.reputation(f).sent, reports.reputation(f).bounced) == (2, 1)
    assert reports.event_counts(f) == {"DELIVERED": 1, "BOUNCED_PERMANENT": 1}
