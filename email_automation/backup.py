"""A consistent copy of the database, safe to take while a run is writing.

Copying the file with `cp` while a run writes can miss the WAL or catch half a transaction;
SQLite's online backup API copies a consistent snapshot (https://www.sqlite.org/backup.html).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from .database import connect
from .errors import EmailAutomationError

# 256 pages (1 MB at the default page size) per step: each step holds the source's read lock
# only briefly, so a writer in rollback-journal mode gets in between steps.
STEP_PAGES = 256
STEP_SLEEP_SECONDS = 0.01
# A write by another connection between steps restarts the copy from page 1 (backup.html,
# "sqlite3_backup_step"). After this many restarts the rest is copied in one step: under WAL a
# single step is one read transaction, which never blocks the writer, so it always finishes.
MAX_RESTARTS = 3
NAME_FORMAT = "email_automation-%Y%m%d-%H%M%S.db"


class BackupError(EmailAutomationError):
    """A backup could not be made, or the copy failed its integrity check."""


class BackupTargetError(BackupError):
    """The command line names no database, or a destination that exists or cannot be made: bad input."""

    exit_code = 2


class _Restarted(Exception):
    pass


def backup_database(
    src: str | Path,
    dest: str | Path,
    *,
    now: Callable[[], datetime] = datetime.now,
    pages: int = STEP_PAGES,
    step_sleep: float = STEP_SLEEP_SECONDS,
    max_restarts: int = MAX_RESTARTS,
) -> Path:
    """Copy `src` to `dest` (a file, or a folder for a time-stamped name); returns the copy's path.

    The copy is written beside the target under a name of its own, checked with PRAGMA
    integrity_check, switched to a single self-contained file (journal_mode=DELETE) and only then
    linked to its name, which never replaces an existing file. In a folder, a second backup within
    the same second gets `-2`, `-3`, ... before `.db`.

    Raises:
        BackupError: the copy failed or is not intact (exit 1); BackupTargetError: no source database, or
            a target that exists or cannot be written (exit 2).
    """
    src = Path(src)
    if not src.exists():
        raise BackupTargetError(f"{src}: no database to back up")
    connect(src, readonly=True).close()  # a folder, an empty or a foreign file is refused, not copied as "ok"
    target, in_folder = backup_target(dest, now())
    if not in_folder and target.exists():
        raise BackupTargetError(f"{target}: already exists; choose another name or folder")
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        # Made here, not by SQLite: a folder that cannot be written is then the OSError below (bad
        # input, naming the cause), not SQLite's "unable to open database file" (exit 1).
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        _copy(src, partial, pages=pages, step_sleep=step_sleep, max_restarts=max_restarts)
        _verify(partial)
        return _publish(partial, target, numbered=in_folder)
    except sqlite3.Error as err:
        raise BackupError(f"{src}: backup to {target} failed: {err}") from err
    except OSError as err:
        raise BackupTargetError(f"{target}: cannot write the backup: {err.strerror or err}") from err
    finally:
        for leftover in (partial, Path(f"{partial}-journal"), Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            leftover.unlink(missing_ok=True)


def backup_target(dest: str | Path, moment: datetime) -> tuple[Path, bool]:
    """(`dest`, False), or (`dest/email_automation-YYYYmmdd-HHMMSS.db`, True) when it is a folder or ends in /.

    `dest` should be the user's own string: Path() would drop the trailing slash that says "folder".
    """
    wants_folder = str(dest).endswith(("/", os.sep))
    dest = Path(dest)
    if dest.is_dir() or wants_folder:
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise BackupTargetError(f"{dest}: cannot create folder: {err.strerror or err}") from None
        return dest / moment.strftime(NAME_FORMAT), True
    if not dest.parent.is_dir():
        raise BackupTargetError(f"{dest.parent}: no such folder")
    return dest, False


def _publish(partial: Path, target: Path, *, numbered: bool) -> Path:
    """Give the finished copy its name without ever replacing a file (link(2) fails on an existing one)."""
    for number in itertools.count(1):
        name = target if number == 1 else target.with_name(f"{target.stem}-{number}{target.suffix}")
        try:
            os.link(partial, name)
            return name
        except FileExistsError:
            if not numbered:
                raise BackupTargetError(f"{target}: already exists; choose another name or folder") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _copy(src: Path, partial: Path, *, pages: int, step_sleep: float, max_restarts: int) -> None:
    # mode=rw: never create an empty database where the real one was expected.
    source = sqlite3.connect(f"{src.absolute().as_uri()}?mode=rw", uri=True, timeout=30)
    target = sqlite3.connect(partial)
    try:
        try:
            source.backup(target, pages=pages, progress=_restart_guard(max_restarts), sleep=step_sleep)
        except _Restarted:
            source.backup(target, pages=-1)
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()


def _restart_guard(max_restarts: int) -> Callable[[int, int, int], None]:
    """A progress callback that aborts the stepped copy once it has restarted too often."""
    state = {"last": None, "restarts": 0}

    def progress(status: int, remaining: int, total: int) -> None:
        # Each step lowers `remaining`; not lowering it means the copy started over.
        if state["last"] is not None and remaining >= state["last"]:
            state["restarts"] += 1
            if state["restarts"] > max_restarts:
                raise _Restarted
        state["last"] = remaining

    return progress


def _verify(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        rows = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    if rows != ["ok"]:
        raise BackupError(f"{path}: the copy failed its integrity check: {'; '.join(rows[:5])}")
