"""`backup`: a consistent, verified copy even while a run keeps committing."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from datetime import datetime

import pytest
from typer.testing import CliRunner

from email_automation import backup
from email_automation.backup import BackupError, backup_database
from email_automation.cli import app
from email_automation.database import connect, init_db, transaction

runner = CliRunner()
PAD = "x" * 1000  # ~1 KB a row, so the database spans many backup steps


def add_rows(conn: sqlite3.Connection, start: int, count: int) -> None:
    with transaction(conn):
        conn.executemany("INSERT INTO admin_log (id, at, actor, action, target, detail) VALUES (?, 'now', 'test', 'write', ?, ?)",
                         [(i, f"row{i}", PAD) for i in range(start, start + count)])


@pytest.fixture
def big_db(tmp_path):
    path = tmp_path / "live.db"
    conn = init_db(path)
    add_rows(conn, 1, 2000)  # ~2 MB: ~500 pages, i.e. ~16 steps of 32 pages
    conn.close()
    return path


def ids_in(path) -> set[int]:
    conn = sqlite3.connect(path)
    try:
        assert [r[0] for r in conn.execute("PRAGMA integrity_check")] == ["ok"]
        return {r[0] for r in conn.execute("SELECT id FROM admin_log")}
    finally:
        conn.close()


class Writer(threading.Thread):
    """Another connection committing one row at a time, as a run does, until stopped."""

    def __init__(self, path, first_id: int) -> None:
        super().__init__(daemon=True)
        self.path, self.next_id = path, first_id
        self.committed = first_id - 1
        self.stop = threading.Event()
        self.slowest_commit = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        conn = connect(self.path)
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                add_rows(conn, self.next_id, 1)
                self.slowest_commit = max(self.slowest_commit, time.monotonic() - started)
                self.committed = self.next_id
                self.next_id += 1
                time.sleep(0.001)
        except BaseException as err:  # surfaced by the test
            self.error = err
        finally:
            conn.close()


def test_backup_during_constant_writes_is_intact_and_has_every_earlier_commit(big_db, tmp_path):
    writer = Writer(big_db, first_id=2001)
    writer.start()
    while writer.committed < 2050:
        time.sleep(0.005)
    committed_before = writer.committed
    copy = backup_database(big_db, tmp_path / "copy.db", pages=32, step_sleep=0.005)
    writer.stop.set()
    writer.join(10)
    rows = ids_in(copy)
    assert set(range(1, committed_before + 1)) <= rows  # the WAL's commits too, not just the main file
    assert rows <= set(range(1, writer.committed + 1))
    assert writer.error is None
    assert writer.committed > committed_before, "the writer was not writing during the backup"
    assert writer.slowest_commit < 2.0  # WAL: the backup's reads never held the writer up for long


def test_a_writer_between_every_step_cannot_starve_the_backup(big_db, tmp_path, monkeypatch):
    """Each write by another connection restarts a stepped copy; after a few, one step finishes it."""
    other = connect(big_db)
    real_guard = backup._restart_guard
    calls = []

    def guard_with_a_write_after_each_step(max_restarts):
        check = real_guard(max_restarts)

        def progress(status, remaining, total):
            calls.append(remaining)
            if len(calls) > 100:
                raise AssertionError("the backup kept restarting and never finished")
            add_rows(other, 10_000 + len(calls), 1)
            check(status, remaining, total)

        return progress

    monkeypatch.setattr(backup, "_restart_guard", guard_with_a_write_after_each_step)
    copy = backup_database(big_db, tmp_path / "copy.db", pages=32, step_sleep=0, max_restarts=3)
    other.close()
    assert len(calls) == 5  # one step, three restarts, the fourth aborts: then a single full step
    rows = ids_in(copy)
    assert set(range(1, 2001)) <= rows and 10_001 in rows


def test_a_folder_gets_a_time_stamped_self_contained_file(big_db, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    copy = backup_database(big_db, folder, now=lambda: datetime(2026, 11, 25, 8, 0, 3))
    assert copy == folder / "email_automation-20261125-080003.db"
    assert sorted(p.name for p in folder.iterdir()) == [copy.name]  # no -wal, -shm or .partial left
    assert ids_in(copy) == set(range(1, 2001))


def test_a_trailing_slash_creates_the_folder(big_db, tmp_path):
    copy = backup_database(big_db, f"{tmp_path}/new/backups/", now=lambda: datetime(2026, 1, 2, 3, 4, 5))
    assert copy == tmp_path / "new" / "backups" / "email_automation-20260102-030405.db"
    assert ids_in(copy) == set(range(1, 2001))


def test_an_existing_target_or_missing_source_is_refused(big_db, tmp_path):
    target = tmp_path / "keep.db"
    target.write_text("precious")
    with pytest.raises(BackupError, match="already exists"):
        backup_database(big_db, target)
    assert target.read_text() == "precious"
    with pytest.raises(BackupError, match=r"no database to back up"):
        backup_database(tmp_path / "none.db", tmp_path / "x.db")
    assert not (tmp_path / "none.db").exists()


def test_backup_command(big_db, tmp_path):
    result = runner.invoke(app, ["backup", str(tmp_path / "b.db"), "--db", str(big_db)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    size = (tmp_path / "b.db").stat().st_size
    assert result.stdout.strip() == f"Backup of {big_db} written to {tmp_path / 'b.db'} ({size} bytes, integrity ok)."
    again = runner.invoke(app, ["backup", str(tmp_path / "b.db"), "--db", str(big_db)])
    assert again.exit_code == 2  # bad input: the README's exit codes
    assert again.stderr.strip() == f"Error: {tmp_path / 'b.db'}: already exists; choose another name or folder"


def test_a_destination_in_a_folder_that_does_not_exist_is_bad_input(big_db, tmp_path):
    result = runner.invoke(app, ["backup", str(tmp_path / "nope" / "b.db"), "--db", str(big_db)])
    assert (result.exit_code, result.stderr) == (2, f"Error: {tmp_path / 'nope'}: no such folder\n")


def test_a_destination_folder_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(BackupError, match="cannot create folder"):
        backup.backup_target(f"{tmp_path / 'a-file' / 'backups'}/", datetime(2026, 11, 25, 8, 0))


def test_two_backups_into_a_folder_in_the_same_second_both_keep(big_db, tmp_path):
    moment = lambda: datetime(2026, 11, 25, 8, 0, 3)  # noqa: E731
    first = backup_database(big_db, f"{tmp_path}/backups/", now=moment)
    second = backup_database(big_db, f"{tmp_path}/backups/", now=moment)
    assert (first.name, second.name) == ("email_automation-20261125-080003.db", "email_automation-20261125-080003-2.db")
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted([first.name, second.name])
    assert ids_in(second) == set(range(1, 2001))


def test_the_nightly_command_into_a_new_folder_works_every_night(big_db, tmp_path):
    """The README's own `email-automation backup backups/`, typed twice (the folder is new the first time)."""
    results = [runner.invoke(app, ["backup", "backups/", "--db", str(big_db)]) for _ in range(2)]
    assert [r.exit_code for r in results] == [0, 0], [r.output for r in results]
    folder = tmp_path / "backups"  # the tests run in tmp_path
    copies = sorted(folder.iterdir())
    assert len(copies) == 2 and all(re.fullmatch(r"email_automation-\d{8}-\d{6}(-2)?\.db", p.name) for p in copies)
    assert results[1].stdout.startswith(f"Backup of {big_db} written to backups/email_automation-")


def test_backup_json(big_db, tmp_path):
    result = runner.invoke(app, ["backup", str(tmp_path / "b.db"), "--db", str(big_db), "--json"])
    assert json.loads(result.stdout) == {"database": str(big_db), "backup": str(tmp_path / "b.db"),
                                         "bytes": (tmp_path / "b.db").stat().st_size}
    again = runner.invoke(app, ["backup", str(tmp_path / "b.db"), "--db", str(big_db), "--json"])
    assert again.exit_code == 2  # bad input: the README's exit codes
    assert json.loads(again.stdout) == {"error": f"{tmp_path / 'b.db'}: already exists; choose another name or folder"}


def test_a_destination_that_cannot_be_written_is_bad_input_naming_why(big_db):
    """It said "backup to /proc/b.db failed: unable to open database file", exit 1 (SQLite's words)."""
    result = runner.invoke(app, ["backup", "/proc/b.db", "--db", str(big_db)])
    assert result.exit_code == 2  # bad input: a folder that cannot be written (README, exit codes)
    assert result.stderr.startswith("Error: /proc/b.db: cannot write the backup: ")
    assert "unable to open database file" not in result.stderr
