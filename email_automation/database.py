"""SQLite connection, versioned schema and campaign records.

Every writer uses `transaction()` (BEGIN IMMEDIATE): a deferred read-then-write transaction can
fail with SQLITE_BUSY at once regardless of the busy timeout. WAL lets the dashboard read while
the sender writes; `synchronous=FULL` makes each claim durable before the message leaves.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from .errors import ConfigError, NotFoundError

BUSY_TIMEOUT_SECONDS = 30.0
DEFAULT_CAMPAIGN = "default"

RECIPIENT_STATUSES = ("pending", "sending", "sent", "failed", "skipped", "unknown")
LOG_STATUSES = ("sending", "sent", "failed", "unknown", "dry_run")
# Attempts that may have reached a mailbox: the daily limit counts all of them.
COUNTED_LOG_STATUSES = ("sending", "sent", "unknown")



def _one_of(column: str, values: tuple[str, ...]) -> str:
    """A CHECK that `column` is one of `values`, as an OR chain.

    `column IN ('a', 'b', ...)` makes SQLite build a small ephemeral table each time the INSERT
    statement runs: with executemany that is once per row, a third of a large import's time.
    """
    return "(" + " OR ".join(f"{column} = '{value}'" for value in values) + ")"


_V1 = f"""
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    subject_template TEXT NOT NULL,
    html_template TEXT NOT NULL,
    text_template TEXT,
    status TEXT NOT NULL DEFAULT 'active' CHECK {_one_of("status", ("active", "paused"))},
    created_at TEXT NOT NULL
);
CREATE TABLE recipients (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    email TEXT NOT NULL,
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    company TEXT NOT NULL DEFAULT '',
    custom_subject TEXT,
    custom_body TEXT,
    fields TEXT NOT NULL DEFAULT '{{}}',
    status TEXT NOT NULL DEFAULT 'pending' CHECK {_one_of("status", RECIPIENT_STATUSES)},
    last_error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    UNIQUE (email, campaign_id)  -- email first: it also serves every lookup by address alone
);
CREATE INDEX recipients_queue ON recipients (status, id);
CREATE TABLE send_log (
    id INTEGER PRIMARY KEY,
    recipient_id INTEGER NOT NULL REFERENCES recipients(id),
    attempt_id TEXT NOT NULL UNIQUE,
    batch_date TEXT NOT NULL,
    attempted_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL CHECK {_one_of("status", LOG_STATUSES)},
    message_id TEXT,
    subject TEXT,
    error TEXT,
    error_class TEXT,
    transport TEXT NOT NULL
);
CREATE INDEX send_log_daily ON send_log (batch_date, status);
CREATE INDEX send_log_recipient ON send_log (recipient_id);
CREATE TABLE suppressions (
    email TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE admin_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT
);
"""

# SES events read from SQS (events.py): each stored once, so a redelivered message applies once.
_V2_SES_EVENTS = """
CREATE TABLE ses_events (
    dedupe_key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    email TEXT,
    message_id TEXT,
    attempt_id TEXT,
    detail TEXT,
    event_at TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX ses_events_email ON ses_events (email);
CREATE INDEX ses_events_attempt ON ses_events (attempt_id);
"""

# The dashboard lists events by the day they arrived, and every events drain looks for the
# attempts still in doubt: without these, both are full scans of a large table.
_V3_EVENTS_BY_ARRIVAL = """
CREATE INDEX ses_events_received ON ses_events (received_at);
CREATE INDEX send_log_unknown ON send_log (status) WHERE status = 'unknown';
CREATE INDEX ses_events_rejects ON ses_events (kind) WHERE kind IN ('REJECTED', 'RENDERING_FAILED');
CREATE INDEX send_log_resolved_pending ON send_log (status)
    WHERE status = 'failed' AND error LIKE '%resolved as pending%';
"""

# Ordered, append-only: migration N brings user_version from N-1 to N. Never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (_V1, _V2_SES_EVENTS, _V3_EVENTS_BY_ARRIVAL)
SCHEMA_VERSION = len(MIGRATIONS)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """UTC timestamps as sortable text, the one format stored in every table."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the database; read-only connections can never take the write lock.

    Raises:
        ConfigError: the file cannot be opened (read-only: does not exist yet).
    """
    path = Path(path)
    try:
        if readonly:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                   timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                   check_same_thread=False)
        else:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as err:
        raise ConfigError(f"{path}: cannot open database: {err}") from err
    conn.row_factory = sqlite3.Row
    return conn


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


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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
    folder = resources.files("email_automation") / "templates"
    subject = (folder / "default_subject.txt").read_text(encoding="utf-8").strip()
    html = (folder / "default.html").read_text(encoding="utf-8")
    return subject, html


def init_db(path: str | Path) -> sqlite3.Connection:
    """Create or upgrade the database and its `default` campaign; safe to run again."""
    conn = connect(path)
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
    if not Path(path).exists():
        raise ConfigError(f"{path}: no database yet; run `email-automation init` first")
    conn = connect(path)
    migrate(conn)
    return conn


def get_campaign(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM campaigns WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFoundError(f"no campaign named {name!r}")
    return row


def ensure_campaign(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    """The campaign called `name`, created with the default templates if new."""
    subject, html = default_templates()
    conn.execute(
        "INSERT OR IGNORE INTO campaigns (name, subject_template, html_template, created_at) VALUES (?, ?, ?, ?)",
        (name, subject, html, iso(utc_now())),
    )
    return get_campaign(conn, name)


def list_campaigns(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM campaigns ORDER BY id").fetchall()


def update_campaign_templates(
    conn: sqlite3.Connection, name: str, *, subject: str | None = None,
    html: str | None = None, text: str | None = None,
) -> None:
    """Store new templates for a campaign (unset arguments keep their value)."""
    with transaction(conn):
        get_campaign(conn, name)
        conn.execute(
            "UPDATE campaigns SET subject_template = COALESCE(?, subject_template),"
            " html_template = COALESCE(?, html_template), text_template = COALESCE(?, text_template)"
            " WHERE name = ?",
            (subject, html, text, name),
        )
