"""SQLite connection, versioned schema and campaign records.

Every writer uses `transaction()` (BEGIN IMMEDIATE): a deferred read-then-write transaction can
fail with SQLITE_BUSY at once regardless of the busy timeout. WAL lets the dashboard read while
the sender writes; `synchronous=FULL` makes each claim durable before the message leaves.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import TypeVar

from .errors import ConfigError, NotFoundError

log = logging.getLogger("email_automation.database")
T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 30.0
DEFAULT_CAMPAIGN = "default"
DEFAULT_TEMPLATE = "default"  # a `template` CSV cell naming the campaign's own template

RECIPIENT_STATUSES = ("pending", "sending", "sent", "failed", "skipped", "unknown")
# `failed`: the attempt ended the recipient as failed. `deferred`: refused for now (throttling,
# a 4xx, a paused account) or settled by a person as not sent; the recipient stays pending.
LOG_STATUSES = ("sending", "sent", "failed", "deferred", "unknown", "dry_run")
# Attempts that may have reached a mailbox: the daily limit counts all of them. A deferred
# attempt was refused before it left (or a person settled that it did not), so it does not count.
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
    status TEXT NOT NULL CHECK {_one_of("status", ("sending", "sent", "failed", "unknown", "dry_run"))},
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

# send_log gets the `deferred` status and a `resolution` column (how an attempt in doubt was
# settled: sent, failed, pending, or disputed = settled as pending and SES reported it later),
# which replaces the LIKE on the "resolved as ..." notes in `error`. A CHECK cannot be altered, so the table is rebuilt
# (https://sqlite.org/lang_altertable.html#otheralter); existing rows are converted:
# - resolution from the notes `resolve` and the events drain appended to `error`;
# - `failed` -> `deferred` where the recipient was left pending: a fatal refusal (never the
#   recipient's fault), an attempt resolved as pending, and a transient refusal unless it is the
#   recipient's last attempt and the recipient ended `failed` (attempts used up).
_V4_DEFERRED_AND_RESOLUTION = f"""
CREATE TABLE send_log_v4 (
    id INTEGER PRIMARY KEY,
    recipient_id INTEGER NOT NULL REFERENCES recipients(id),
    attempt_id TEXT NOT NULL UNIQUE,
    batch_date TEXT NOT NULL,
    attempted_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL CHECK {_one_of("status", ("sending", "sent", "failed", "deferred", "unknown", "dry_run"))},
    message_id TEXT,
    subject TEXT,
    error TEXT,
    error_class TEXT,
    transport TEXT NOT NULL,
    resolution TEXT CHECK (resolution IS NULL OR {_one_of("resolution", ("sent", "failed", "pending", "disputed"))})
);
INSERT INTO send_log_v4 (id, recipient_id, attempt_id, batch_date, attempted_at, finished_at, status, message_id,
                         subject, error, error_class, transport, resolution)
SELECT l.id, l.recipient_id, l.attempt_id, l.batch_date, l.attempted_at, l.finished_at,
       CASE WHEN l.status != 'failed' THEN l.status
            WHEN l.error LIKE '%[resolved as pending by %' THEN 'deferred'
            WHEN l.error_class = 'fatal' THEN 'deferred'
            WHEN l.error_class = 'transient' AND NOT (
                r.status = 'failed' AND l.id = (SELECT max(n.id) FROM send_log n WHERE n.recipient_id = l.recipient_id
                                                 AND n.status != 'dry_run')) THEN 'deferred'
            ELSE 'failed' END,
       l.message_id, l.subject, l.error, l.error_class, l.transport,
       CASE WHEN l.error LIKE '%[SES later reported this send%' THEN 'disputed'
            WHEN l.error LIKE '%[resolved as pending by %' THEN 'pending'
            WHEN l.error LIKE '%[resolved as sent by %' THEN 'sent'
            WHEN l.error LIKE '%[resolved as not sent by %' THEN 'failed' END
FROM send_log l LEFT JOIN recipients r ON r.id = l.recipient_id;
DROP TABLE send_log;
ALTER TABLE send_log_v4 RENAME TO send_log;
CREATE INDEX send_log_daily ON send_log (batch_date, status);
CREATE INDEX send_log_recipient ON send_log (recipient_id);
CREATE INDEX send_log_unknown ON send_log (status) WHERE status = 'unknown';
CREATE INDEX send_log_resolved_pending ON send_log (resolution) WHERE resolution = 'pending';
"""

# `suppressions` keeps the first reason and date; every request and removal is kept here. Seeded
# from the audit trail (every past suppress and unsuppress, by hand or from SES events), then
# from the list itself for any address the trail does not name. A reason a later `suppress`
# overwrote is put back from the audit row written with the entry (same time, same address).
_V5_SUPPRESSION_HISTORY = """
CREATE TABLE suppression_history (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action = 'suppress' OR action = 'unsuppress'),
    reason TEXT,
    source TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX suppression_history_email ON suppression_history (email, id);
INSERT INTO suppression_history (email, action, reason, source, at)
SELECT target, action, CASE WHEN action = 'suppress' THEN coalesce(nullif(detail, ''), 'manual') END, actor, at
FROM admin_log WHERE action IN ('suppress', 'unsuppress') ORDER BY id;
INSERT INTO suppression_history (email, action, reason, source, at)
SELECT email, 'suppress', reason, source, created_at FROM suppressions s
WHERE NOT EXISTS (SELECT 1 FROM suppression_history h WHERE h.email = s.email) ORDER BY created_at;
UPDATE suppressions SET (reason, source) = (
    SELECT CASE WHEN a.actor = 'ses-event' AND instr(a.detail, ': ') > 0 THEN substr(a.detail, 1, instr(a.detail, ': ') - 1)
                ELSE coalesce(nullif(a.detail, ''), suppressions.reason) END, a.actor
    FROM admin_log a WHERE a.action = 'suppress' AND a.target = suppressions.email AND a.at = suppressions.created_at
    ORDER BY a.id LIMIT 1)
WHERE EXISTS (SELECT 1 FROM admin_log a WHERE a.action = 'suppress' AND a.target = suppressions.email
              AND a.at = suppressions.created_at);
"""

# Imports in short chunks (import_csv.py): a recipient row carries the import that added it, and
# rows of an import still `running` are invisible to the queue and the reports until it is `done`.
# import_id 0: added before this migration. ADD COLUMN with a constant default rewrites nothing
# (https://www.sqlite.org/lang_altertable.html#altertabaddcol).
_V6_IMPORTS = """
CREATE TABLE imports (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL,
    created_campaign INTEGER NOT NULL DEFAULT 0,
    file TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'running' OR state = 'done' OR state = 'failed'),
    first_recipient_id INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    inserted INTEGER,
    duplicates INTEGER,
    invalid INTEGER,
    error TEXT
);
ALTER TABLE recipients ADD COLUMN import_id INTEGER NOT NULL DEFAULT 0;
"""

# Replies (inbox.py, applications.py): each recipient's application status and its history, the
# messages read from the inbox (each once: UNIQUE dedupe_key), how far each mailbox was read, and
# on send_log the bounce a delivery report brought back. Lookups by Message-ID go through an index.
APPLICATION_STATUSES = ("none", "replied", "interview", "offer", "rejected", "not_interested")
INBOX_KINDS = ("reply", "auto_reply", "bounce", "unsubscribe", "ignored")
_V7_REPLIES = f"""
ALTER TABLE recipients ADD COLUMN application_status TEXT NOT NULL DEFAULT 'none'
    CHECK {_one_of("application_status", APPLICATION_STATUSES)};
ALTER TABLE recipients ADD COLUMN application_note TEXT;
ALTER TABLE recipients ADD COLUMN application_source TEXT;
ALTER TABLE recipients ADD COLUMN application_changed_at TEXT;
CREATE INDEX recipients_application ON recipients (application_status) WHERE application_status != 'none';
CREATE TABLE application_changes (
    id INTEGER PRIMARY KEY,
    recipient_id INTEGER NOT NULL REFERENCES recipients(id),
    status TEXT NOT NULL,
    note TEXT,
    source TEXT NOT NULL CHECK {_one_of("source", ("manual", "inbox"))},
    changed_at TEXT NOT NULL
);
CREATE INDEX application_changes_recipient ON application_changes (recipient_id);
ALTER TABLE send_log ADD COLUMN bounced_at TEXT;
ALTER TABLE send_log ADD COLUMN bounce_status TEXT;
CREATE INDEX send_log_message_id ON send_log (message_id) WHERE message_id IS NOT NULL;
CREATE TABLE inbox_state (
    mailbox TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL,
    read_at TEXT NOT NULL
);
CREATE TABLE inbox_messages (
    id INTEGER PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK {_one_of("kind", INBOX_KINDS)},
    recipient_id INTEGER REFERENCES recipients(id),
    send_log_id INTEGER REFERENCES send_log(id),
    from_email TEXT,
    subject TEXT,
    snippet TEXT,
    message_id TEXT,
    dated_at TEXT,
    detail TEXT,
    read_at TEXT NOT NULL
);
CREATE INDEX inbox_messages_kind ON inbox_messages (kind, dated_at) WHERE kind != 'ignored';
CREATE INDEX inbox_messages_recipient ON inbox_messages (recipient_id) WHERE recipient_id IS NOT NULL;
"""

# Deliverability loop (bounces.py, circuit_breaker.py, ses_suppression.py): every bounce and
# complaint from any source, the circuit breaker's pauses, and what SES's account-level
# suppression list was asked about or told.
_V8_DELIVERABILITY = f"""
CREATE TABLE bounces (
    id INTEGER PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    kind TEXT NOT NULL CHECK {_one_of("kind", ("hard", "soft", "complaint"))},
    source TEXT NOT NULL,
    campaign_id INTEGER REFERENCES campaigns(id),
    attempt_id TEXT,
    message_id TEXT,
    detail TEXT,
    at TEXT NOT NULL
);
CREATE INDEX bounces_at ON bounces (at);
CREATE INDEX bounces_email ON bounces (email, kind);
CREATE TABLE sending_pauses (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    reason TEXT NOT NULL,
    paused_at TEXT NOT NULL,
    lifted_at TEXT,
    lifted_by TEXT
);
CREATE INDEX sending_pauses_scope ON sending_pauses (scope, lifted_at);
CREATE INDEX send_log_attempted ON send_log (attempted_at);
CREATE TABLE ses_suppression_checks (
    email TEXT PRIMARY KEY,
    listed INTEGER NOT NULL,
    checked_at TEXT NOT NULL
);
CREATE TABLE ses_suppression_pushed (
    email TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    pushed_at TEXT NOT NULL
);
CREATE TABLE sync_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Files sent with every message of a campaign (`template set --attach`) and with one recipient's
# (the CSV's `attachments` column): JSON lists of absolute paths, NULL for none.
_V9_ATTACHMENTS = """
ALTER TABLE campaigns ADD COLUMN attachments TEXT;
ALTER TABLE recipients ADD COLUMN attachments TEXT;
"""

# Named templates per segment (a recipient's `template` column picks one, else the campaign's
# own), subject variants (JSON lists of subject templates, NULL for a single subject), and on
# each send the template and subject variant it used, so replies can be counted per variant.
_V10_TEMPLATES_AND_VARIANTS = """
CREATE TABLE templates (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    name TEXT NOT NULL,
    subject_template TEXT NOT NULL,
    subject_variants TEXT,
    html_template TEXT NOT NULL,
    text_template TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (campaign_id, name)
);
ALTER TABLE campaigns ADD COLUMN subject_variants TEXT;
ALTER TABLE recipients ADD COLUMN template TEXT;
ALTER TABLE send_log ADD COLUMN template TEXT;
ALTER TABLE send_log ADD COLUMN subject_variant TEXT;
CREATE INDEX recipients_segment ON recipients (campaign_id, template, id);
"""

# Follow-up sequences (sequences.py): a campaign's steps 2..n, each recipient's step (the step
# its `status` is about: pending = that step is still to be sent), why its sequence stopped for
# good, and the step of each attempt (the ledger claims per recipient and step); and each
# recipient's IANA time zone from the CSV ('' = TIMEZONE), for send windows.
_V11_SEQUENCES = """
CREATE TABLE campaign_steps (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    step INTEGER NOT NULL CHECK (step >= 2),
    after_days INTEGER NOT NULL CHECK (after_days >= 1),
    subject_template TEXT,
    html_template TEXT NOT NULL,
    text_template TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (campaign_id, step)
);
ALTER TABLE recipients ADD COLUMN step INTEGER NOT NULL DEFAULT 1;
ALTER TABLE recipients ADD COLUMN sequence_stopped TEXT;
ALTER TABLE send_log ADD COLUMN step INTEGER NOT NULL DEFAULT 1;
ALTER TABLE recipients ADD COLUMN timezone TEXT NOT NULL DEFAULT '';
"""

# Ordered, append-only: migration N brings user_version from N-1 to N. Never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (_V1, _V2_SES_EVENTS, _V3_EVENTS_BY_ARRIVAL, _V4_DEFERRED_AND_RESOLUTION,
                               _V5_SUPPRESSION_HISTORY, _V6_IMPORTS, _V7_REPLIES, _V8_DELIVERABILITY,
                               _V9_ATTACHMENTS, _V10_TEMPLATES_AND_VARIANTS,
                               _V11_SEQUENCES)
SCHEMA_VERSION = len(MIGRATIONS)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """UTC timestamps as sortable text, the one format stored in every table."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def connect(path: str | Path, *, readonly: bool = False, create: bool = False) -> sqlite3.Connection:
    """Open the database; read-only connections can never take the write lock.

    Only `create=True` (what `init` uses) accepts a file without our schema: any other caller
    is refused before anything is written, so a truncated or foreign file is never turned into
    an empty database whose next import would mail everyone again.

    Raises:
        ConfigError: the file is missing, cannot be opened, or is not an email-automation database.
    """
    path = Path(path)
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


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

    Inside a transaction already open, a SAVEPOINT of it instead: its steps are undone alone on an
    exception and committed with the outer one (https://www.sqlite.org/lang_savepoint.html), so
    several steps can share one durable commit (a run's group of claims).
    """
    if conn.in_transaction:
        with _savepoint(conn):
            yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLite has already rolled back after SQLITE_FULL and a few others
            conn.execute("ROLLBACK")  # https://www.sqlite.org/lang_transaction.html#response_to_errors_within_a_transaction
        raise
    conn.execute("COMMIT")


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
    folder = resources.files("email_automation") / "templates"
    subject = (folder / "default_subject.txt").read_text(encoding="utf-8").strip()
    html = (folder / "default.html").read_text(encoding="utf-8")
    return subject, html


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


def ensure_campaign(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    """The campaign called `name`, created with the default templates if new."""
    subject, html = default_templates()
    conn.execute(
        "INSERT OR IGNORE INTO campaigns (name, subject_template, html_template, created_at) VALUES (?, ?, ?, ?)",
        (name, subject, html, iso(utc_now())),
    )
    return get_campaign(conn, name)

