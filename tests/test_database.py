"""Schema creation, in-place upgrades and the connection settings the state machine relies on."""

from __future__ import annotations

import sqlite3

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
