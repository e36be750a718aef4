"""SQLite connection, versioned schema and campaign records.

Every writer uses `transaction()` (BEGIN IMMEDIATE): a deferred read-then-write transaction can
fail with SQLITE_BUSY at once regardless of the busy timeout. WAL lets the dashboard read while
the sender writes; `synchronous=FULL` makes each claim durable before the message leaves.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, InvalidInputError, NotFoundError
# The schema's SQL lives in migrations.py; these names stay importable from here.
from .migrations import (  # noqa: F401
    APPLICATION_STATUSES, COUNTED_LOG_STATUSES, INBOX_KINDS, LOG_STATUSES, MIGRATIONS, RECIPIENT_STATUSES, SCHEMA_VERSION,
)

log = logging.getLogger("email_automation.database")
T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 30.0
DEFAULT_DB_NAME = "email_automation.db"  # DB_PATH's default
DEFAULT_CAMPAIGN = "default"
DEFAULT_TEMPLATE = "default"  # a `template` CSV cell naming the campaign's own template
MAX_WAIT_DAYS = 260  # a follow-up step's wait, business days: a year; a later one is a new campaign


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """UTC timestamps as sortable text, the one format stored in every table:
    2026-11-30T10:53:30.000000Z (isoformat writes what strftime's "%Y-%m-%dT%H:%M:%S.%fZ" did for
    any year from 1000, in half the time; a run writes several per message)."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def connect(path: str | Path, *, readonly: bool = False, create: bool = False) -> sqlite3.Connection:
    """Open the database; read-only connections can never take the write lock.

    Only `create=True` (what `init` uses) accepts a file without our schema: any other caller
    is refused before anything is written, so a truncated or foreign file is never turned into
    an empty database whose next import would mail everyone again.

    Raises:
        ConfigError: the file is missing, cannot be opened, or is not an email-automation database.
    """
    path = Path(path)
    if path.is_dir():  # else "no database yet; run init", and init's "unable to open database file"
        raise ConfigError(folder_problem(path))
    if not create and not path.is_file():
        raise ConfigError(f"{path}: no database yet; run `email-automation init` first")
    try:
        if readonly:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                   timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                   check_same_thread=False)
        else:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        if not create or _table_names(conn):  # `init` fills an empty file, never another program's
            check_ours(conn, path)
        if not readonly:
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as err:
        raise ConfigError(f"{path}: cannot open database: {err}") from err
    conn.row_factory = sqlite3.Row
    return conn


def folder_problem(path: str | Path) -> str:
    """What to say when DB_PATH (or --db) names a folder: the database is a file, so name one."""
    return (f"{path}: is a folder; DB_PATH (or --db) must name the database file, "
            f"e.g. {Path(path) / DEFAULT_DB_NAME}")


# Tables every version of the schema has: a file without them was not made by `init`.
CORE_TABLES = frozenset({"campaigns", "recipients", "send_log"})


def check_ours(conn: sqlite3.Connection, path: str | Path) -> None:
    """Refuse a file that `init` did not make (empty, truncated, or another program's database).

    Raises:
        ConfigError: naming the file and what to do.
    """
    tables = _table_names(conn)
    if schema_version(conn) > 0 and CORE_TABLES <= tables:
        return
    conn.close()
    if not tables:
        raise ConfigError(
            f"{path}: the file has no email-automation data (it is empty: truncated or not a copy of the "
            "database?); restore it from a backup, or run `email-automation init` to start a new one")
    raise ConfigError(f"{path}: not an email-automation database (it holds tables of another program); "
                      "check DB_PATH or --db")


def _use_wal(conn: sqlite3.Connection, *, attempts: int = 100, pause: float = 0.05) -> None:
    """Switch a new database to WAL (persistent: later opens only read the mode).

    The switch needs an exclusive lock and SQLite does not wait for it through the busy timeout,
    so processes opening a brand-new file together (cron's run and a dashboard, say) retry here.
    """
    for attempt in range(attempts):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(pause)


def is_busy(err: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (extended codes included): another connection holds the lock.

    https://sqlite.org/rescode.html#busy
    """
    code = getattr(err, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(err) or "busy" in str(err)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


@contextmanager
def deferred_sync(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Commits inside are not flushed to disk at once; the next `synchronous=FULL` commit flushes them.

    For outcome records only: in WAL mode a commit with synchronous=NORMAL survives a killed
    process but may roll back after a power loss or OS crash (https://www.sqlite.org/pragma.html
    #pragma_synchronous). A lost outcome leaves its claim in `sending`, which the next run turns
    into `unknown`: never a second send. The next claim's FULL commit syncs the WAL file, and so
    every frame written before it, so at most the last outcome of a run is ever at risk.
    """
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        yield conn
    finally:
        conn.execute("PRAGMA synchronous=FULL")


IMPATIENT_SECONDS = 1.0  # how long a run that is being stopped waits for another writer


@contextmanager
def impatient(conn: sqlite3.Connection, seconds: float = IMPATIENT_SECONDS) -> Iterator[sqlite3.Connection]:
    """A locked database is waited for `seconds`, not BUSY_TIMEOUT_SECONDS: what a run that is
    being stopped still writes (https://www.sqlite.org/pragma.html#pragma_busy_timeout). A
    connection that cannot take the setting (closed) is left as it is: the writes inside still run."""
    before = _busy_timeout(conn, seconds)
    try:
        yield conn
    finally:
        if before is not None:
            _busy_timeout(conn, before / 1000)


def _busy_timeout(conn: sqlite3.Connection, seconds: float) -> int | None:
    """Set the busy timeout; returns the one it replaces, in ms (None: the connection refused)."""
    try:
        before = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
    except sqlite3.Error:
        return None
    return before


_GROUPS: set[int] = set()  # id() of the connections inside `group` (they take no weak references)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception, a failed COMMIT included.

    Inside `group`, a SAVEPOINT of the group's transaction instead. Anywhere else an open
    transaction is an error (SQLite refuses the BEGIN): a step that believed it committed while
    an outer transaction, left open by a failure, kept its writes off the disk could let a message
    leave on a claim that was never saved.
    """
    if conn.in_transaction and id(conn) in _GROUPS:
        with _savepoint(conn):
            yield conn
        return
    outer = conn.in_transaction  # then the BEGIN below fails, and that transaction is not ours to end
    try:  # BEGIN inside: Ctrl-C or SIGTERM landing just after it must not leave the transaction open
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction and not outer:  # SQLite has already rolled back after SQLITE_FULL and a few
            conn.execute("ROLLBACK")  # others: https://www.sqlite.org/lang_transaction.html#response_to_errors_within_a_transaction
        raise


@contextmanager
def group(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One transaction around several steps, each a `transaction` of its own that becomes a
    SAVEPOINT (undone alone on an exception, https://www.sqlite.org/lang_savepoint.html): they
    share one durable commit (a run's group of claims)."""
    with transaction(conn):
        _GROUPS.add(id(conn))
        try:
            yield conn
        finally:
            _GROUPS.discard(id(conn))


@contextmanager
def _savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("SAVEPOINT step")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK TO step")
            conn.execute("RELEASE step")
        raise
    conn.execute("RELEASE step")


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# How long recording a send's outcome waits for another writer (a long import, say) to finish.
# Giving up turns a message the provider accepted into `unknown`, a decision for a person, so
# this outlasts any ordinary writer by far; each try also waits the connection's busy timeout.
RECORD_PATIENCE = timedelta(minutes=10)
RECORD_RETRY_PAUSE_SECONDS = 5.0


@dataclass(frozen=True)
class Patience:
    """How a write that must not be lost waits out other writers; clock and sleep are injected."""

    clock: Callable[[], datetime]
    sleep: Callable[[float], None]
    limit: timedelta = RECORD_PATIENCE
    pause: float = RECORD_RETRY_PAUSE_SECONDS

    def run(self, write: Callable[[], T], what: str) -> T:
        """`write()`, retried while the database is locked, until `limit` has passed.

        Says so in the log when it starts waiting, then about once a minute.

        Raises:
            sqlite3.OperationalError: still locked after `limit`, or any other database error.
        """
        started = self.clock()
        said = None
        while True:
            try:
                return write()
            except sqlite3.OperationalError as err:
                waited = self.clock() - started
                if not is_busy(err) or waited >= self.limit:
                    raise
                if said is None or waited - said >= timedelta(minutes=1):
                    said = waited
                    log.warning("another program is writing to the database; still waiting to record %s "
                                "(%d s so far, giving up after %d s)", what, waited.total_seconds(),
                                self.limit.total_seconds())
                self.sleep(self.pause)


def audit(conn: sqlite3.Connection, actor: str, action: str, target: str, detail: str, now: datetime) -> None:
    """Say who did what in `admin_log` (inside the caller's transaction)."""
    conn.execute("INSERT INTO admin_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                 (iso(now), actor, action, target, detail))


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database has not seen yet; returns how many ran."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise ConfigError(
            f"database schema version {current} is newer than this program ({SCHEMA_VERSION}): upgrade email-automation"
        )
    for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
        with transaction(conn):
            # Re-read under the write lock: another process may have just applied this one.
            if schema_version(conn) >= number:
                continue
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
    return SCHEMA_VERSION - current


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction first)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return [s for s in statements if s.strip(" ;\n")]


def default_templates() -> tuple[str, str]:
    """The shipped subject and HTML body of the `default` campaign."""
    from importlib import resources  # at `init` only: it loads a dozen modules

    folder = resources.files("email_automation") / "templates"
    subject = (folder / "default_subject.txt").read_text(encoding="utf-8").strip()
    html = (folder / "default.html").read_text(encoding="utf-8")
    return subject, html


def subject_variants(row: Any) -> list[str]:
    """The subject templates of a `campaigns` or `templates` row (or a mapping like one): its
    variants (a JSON list in `subject_variants`), else its one `subject_template`."""
    raw = row["subject_variants"] if "subject_variants" in row.keys() else None
    try:
        variants = json.loads(raw) if raw else None
    except ValueError:
        variants = None
    if isinstance(variants, list) and variants and all(isinstance(v, str) for v in variants):
        return variants
    return [row["subject_template"]]


def init_db(path: str | Path) -> sqlite3.Connection:
    """Create or upgrade the database and its `default` campaign; safe to run again.

    Raises:
        ConfigError: the file is another program's database (its tables are left alone).
    """
    conn = connect(path, create=True)
    migrate(conn)
    subject, html = default_templates()
    with transaction(conn):
        conn.execute(
            "INSERT OR IGNORE INTO campaigns (name, subject_template, html_template, created_at)"
            " VALUES (?, ?, ?, ?)",
            (DEFAULT_CAMPAIGN, subject, html, iso(utc_now())),
        )
    return conn


def open_db(path: str | Path) -> sqlite3.Connection:
    """Open an existing database for writing, upgrading its schema if it is older."""
    conn = connect(path)
    migrate(conn)
    return conn


def get_campaign(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM campaigns WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFoundError(f"no campaign named {name!r}")
    return row


# Past this a name no longer fits a line of `status` or a dashboard table, whose columns it widens.
MAX_CAMPAIGN_NAME_CHARS = 100


def check_campaign_name(name: str) -> str:
    """`name`, unless it is empty or only spaces (such a campaign cannot be told apart in a list or
    named again on a command line), longer than MAX_CAMPAIGN_NAME_CHARS, or holds a character that
    is not printable (a line break splits a line of output, an escape sequence takes over the
    terminal that `status` prints it to). Any other name is taken exactly as given.

    Raises:
        InvalidInputError: the name cannot be used.
    """
    if not name.strip():
        raise InvalidInputError(f"campaign name {name!r} is blank: give the campaign a name")
    if len(name) > MAX_CAMPAIGN_NAME_CHARS:
        raise InvalidInputError(f"campaign name {name[:20]!r}... is {len(name):,} characters long: keep it to "
                                f"{MAX_CAMPAIGN_NAME_CHARS} or fewer")
    if not name.isprintable():
        raise InvalidInputError(f"campaign name {name!r}: use printable characters (no tabs, line breaks or "
                                "control characters)")
    return name


def ensure_campaign(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    """The campaign called `name`, created with the default templates if new.

    Raises:
        InvalidInputError: a new campaign's name cannot be used (see `check_campaign_name`); one
            made before names were checked stays usable.
    """
    row = conn.execute("SELECT * FROM campaigns WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return row
    check_campaign_name(name)
    subject, html = default_templates()
    conn.execute(
        "INSERT OR IGNORE INTO campaigns (name, subject_template, html_template, created_at) VALUES (?, ?, ?, ?)",
        (name, subject, html, iso(utc_now())),
    )
    return get_campaign(conn, name)

