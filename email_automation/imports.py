"""The bookkeeping that lets a long import write in short transactions yet stay all-or-nothing.

A big file inserted in ONE transaction holds SQLite's single write lock for its whole length, and
a run waiting behind it can time out recording a message SES already accepted. So each import is
a row of `imports`; its recipients are inserted in chunks, each its own short BEGIN IMMEDIATE
transaction, tagged with the import's id; while the import is `running` they are invisible (see
`FINISHED`) and the one tiny transaction that flips it to `done` shows them all at once. A failed
or interrupted import deletes its rows (in chunks as well) and is marked `failed`; a process that
died mid-import leaves a `running` row that the next import, or `init`, cleans up.

Imports into one database take turns (an flock beside it, dropped by the kernel when the process
dies): that is what makes a `running` import found by whoever holds the lock a dead one, and what
makes INSERT OR IGNORE's duplicate count exact (no other import's invisible rows are in the way).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .database import check_campaign_name, default_templates, iso, transaction, utc_now
from .errors import EmailAutomationError

DELETE_CHUNK_ROWS = 5000

# Recipients of an import still running are not there yet for anyone but that import. An SQL
# condition on `recipients` aliased `r`; the subquery reads a table of a few rows, once per statement.
FINISHED = "r.import_id NOT IN (SELECT id FROM imports WHERE state = 'running')"


class ImportBusyError(EmailAutomationError):
    """Another import into this database is running: imports take turns."""


@dataclass(frozen=True)
class ImportRun:
    """An import under way: its id tags every row it inserts."""

    id: int
    campaign_id: int


def lock_path(conn: sqlite3.Connection) -> Path | None:
    """Beside the database's real file; None for an in-memory database (one connection, no rivals)."""
    name = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")
    return Path(f"{Path(name).resolve()}.import.lock") if name else None


@contextmanager
def import_lock(conn: sqlite3.Connection) -> Iterator[bool]:
    """Hold the import lock for the block; yields False (not held) if another import has it."""
    path = lock_path(conn)
    if path is None:
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def clean_up_interrupted(conn: sqlite3.Connection) -> int:
    """Remove the rows of imports a dead process left `running`; returns how many imports.

    Call only while holding the import lock, or a live import would be taken for dead.
    """
    stale = [row[0] for row in conn.execute("SELECT id FROM imports WHERE state = 'running'")]
    for import_id in stale:
        fail(conn, import_id, "interrupted: the process ended before the import finished; its rows were removed")
    return len(stale)


def clean_up_if_idle(conn: sqlite3.Connection) -> int:
    """`clean_up_interrupted` unless an import is running right now (then there is nothing stale to know)."""
    with import_lock(conn) as held:
        return clean_up_interrupted(conn) if held else 0


def begin(conn: sqlite3.Connection, campaign: str, file: str) -> ImportRun:
    """Record a new running import (creating its campaign if new) in one short transaction.

    Raises:
        InvalidInputError: a new campaign's name cannot be used (see `check_campaign_name`); one
            made before names were checked stays usable.
    """
    now = iso(utc_now())
    with transaction(conn):
        row = conn.execute("SELECT id FROM campaigns WHERE name = ?", (campaign,)).fetchone()
        created = row is None
        if created:
            check_campaign_name(campaign)
            subject, html = default_templates()
            campaign_id = conn.execute(
                "INSERT INTO campaigns (name, subject_template, html_template, created_at) VALUES (?, ?, ?, ?)",
                (campaign, subject, html, now),
            ).lastrowid
        else:
            campaign_id = row[0]
        # New rows get ids above the largest one (https://www.sqlite.org/autoinc.html): the import's
        # rows all sit above this mark, so deleting them walks the primary key, with no extra index.
        first_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM recipients").fetchone()[0]
        import_id = conn.execute(
            "INSERT INTO imports (campaign_id, created_campaign, file, state, first_recipient_id, started_at)"
            " VALUES (?, ?, ?, 'running', ?, ?)",
            (campaign_id, int(created), file, first_id, now),
        ).lastrowid
    return ImportRun(import_id, campaign_id)


def finish(conn: sqlite3.Connection, run: ImportRun, *, inserted: int, duplicates: int, invalid: int) -> None:
    """The flip that shows every row of the import at once (call inside the caller's transaction)."""
    conn.execute(
        "UPDATE imports SET state = 'done', finished_at = ?, inserted = ?, duplicates = ?, invalid = ?"
        " WHERE id = ? AND state = 'running'",
        (iso(utc_now()), inserted, duplicates, invalid, run.id),
    )


def fail(conn: sqlite3.Connection, import_id: int, error: str, *, chunk_rows: int = DELETE_CHUNK_ROWS) -> None:
    """Delete the import's rows a chunk per transaction, then mark it failed (and drop a campaign it created empty).

    The rows stay invisible throughout; if this is interrupted too, the import is still `running`
    and the next cleanup finishes the job.
    """
    row = conn.execute("SELECT first_recipient_id, campaign_id, created_campaign FROM imports WHERE id = ?",
                       (import_id,)).fetchone()
    if row is None:
        return
    start, campaign_id, created = row
    end = conn.execute("SELECT coalesce(max(id), 0) FROM recipients").fetchone()[0]
    while start <= end:
        with transaction(conn):
            conn.execute("DELETE FROM recipients WHERE id >= ? AND id < ? AND import_id = ?",
                         (start, start + chunk_rows, import_id))
        start += chunk_rows
    with transaction(conn):
        conn.execute("UPDATE imports SET state = 'failed', finished_at = ?, error = ? WHERE id = ?",
                     (iso(utc_now()), error, import_id))
        if created:
            # Only rows added after the import began can be in a campaign it created.
            conn.execute("DELETE FROM campaigns WHERE id = ? AND NOT EXISTS"
                         " (SELECT 1 FROM recipients WHERE id >= ? AND campaign_id = ?)",
                         (campaign_id, row[0], campaign_id))
