"""Read-only queries behind `email-automation status` and the dashboard.

Aggregation happens in SQL so both stay quick on a million send_log rows. The module functions
take a connection and never write; `Reports` binds them to a database file through short-lived
read-only connections (`mode=ro`, so a view can never take the sender's write lock) and carries
the dashboard's admin hooks, which delegate to `admin.py` on a write connection of their own.
"""

from __future__ import annotations

import csv
import hmac
import io
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Literal

from . import admin
from .config import Settings
from .database import COUNTED_LOG_STATUSES, LOG_STATUSES, RECIPIENT_STATUSES, connect, iso, utc_now
from .errors import ConfigError, EmailAutomationError
from .events import EventKind
from .ledger import batch_date, counted_today

LOG_COLUMNS = ("batch_date", "time", "status", "email", "message_id", "subject", "error")
SUPPRESSION_COLUMNS = ("email", "reason", "source", "since")
EVENT_COLUMNS = ("received_at", "kind", "email", "detail", "message_id")
# SES places an account under review from these rates on (and may pause it at 10% and 0.5%).
# https://docs.aws.amazon.com/ses/latest/dg/reputationdashboard-messages.html
BOUNCE_REVIEW_RATE = 0.05
COMPLAINT_REVIEW_RATE = 0.001
ADMIN_ACTOR = "dashboard"
# OWASP CSV injection: a cell starting with one of these may run as a formula in a spreadsheet.
# https://owasp.org/www-community/attacks/CSV_Injection
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class CampaignStatus:
    name: str
    state: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class StatusSummary:
    campaigns: list[CampaignStatus]
    today: str
    counted_today: int  # sent + sending + unknown: what the daily limit counts
    daily_limit: int
    suppressed: int
    sent_today: int = 0  # certainly sent

    @property
    def remaining_today(self) -> int:
        return max(0, self.daily_limit - self.counted_today)

    def as_dict(self) -> dict:
        return {
            "campaigns": {c.name: {"state": c.state, **c.counts} for c in self.campaigns},
            "today": self.today,
            "sent_today": self.sent_today,
            "counted_today": self.counted_today,
            "daily_limit": self.daily_limit,
            "remaining_today": self.remaining_today,
            "suppressed": self.suppressed,
        }


def status_summary(conn: sqlite3.Connection, *, now: datetime, tz, daily_limit: int) -> StatusSummary:
    """Recipients by status per campaign, and today's counted attempts against the limit."""
    counts: dict[int, dict[str, int]] = {}
    for row in conn.execute("SELECT campaign_id, status, count(*) FROM recipients GROUP BY campaign_id, status"):
        counts.setdefault(row[0], {})[row[1]] = row[2]
    campaigns = [
        CampaignStatus(c["name"], c["status"], {s: counts.get(c["id"], {}).get(s, 0) for s in RECIPIENT_STATUSES})
        for c in conn.execute("SELECT id, name, status FROM campaigns ORDER BY id")
    ]
    day = batch_date(now, tz)
    suppressed = conn.execute("SELECT count(*) FROM suppressions").fetchone()[0]
    sent = conn.execute("SELECT count(*) FROM send_log WHERE batch_date = ? AND status = 'sent'", (day,)).fetchone()[0]
    return StatusSummary(campaigns, day, counted_today(conn, day), daily_limit, suppressed, sent)


def unknown_recipients(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Recipients whose last send may or may not have gone out: each needs a person's decision."""
    return conn.execute(
        "SELECT r.email, c.name AS campaign, r.last_error, r.updated_at FROM recipients r"
        " JOIN campaigns c ON c.id = r.campaign_id WHERE r.status = 'unknown' ORDER BY r.updated_at"
    ).fetchall()


# --- the send log, filtered -------------------------------------------------------------------


@dataclass(frozen=True)
class LogFilter:
    """Which send_log rows a view covers: batch days start..end (inclusive) and optional narrowing."""

    start: date
    end: date
    campaign: str | None = None
    status: str | None = None
    email: str = ""  # part of the address, any case


@dataclass(frozen=True)
class LogSummary:
    """send_log rows by status for a filter; dry-run rows are kept apart and never count as sent."""

    counts: dict[str, int]
    unique_recipients: int

    @property
    def sent(self) -> int:
        return self.counts["sent"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def dry_run(self) -> int:
        return self.counts["dry_run"]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class DayCount:
    day: date
    sent: int
    failed: int
    dry_run: int


@dataclass(frozen=True)
class LogRow:
    batch_date: str
    time: str  # attempted_at as HH:MM:SS in TIMEZONE
    status: str
    email: str
    message_id: str | None
    subject: str | None
    error: str | None

    def cells(self) -> tuple:
        return tuple(getattr(self, name) for name in LOG_COLUMNS)


# CROSS JOIN makes SQLite keep send_log as the outer loop, driven by the batch_date index. With a
# plain JOIN and no ANALYZE statistics, a campaign filter made it start from the campaign's
# recipients and read each one's whole history: 3.5 s instead of 0.1 s on a million rows
# (benchmarks/bench_dashboard.py). https://sqlite.org/optoverview.html#crossjoin
_JOIN_RECIPIENTS = " CROSS JOIN recipients r ON r.id = l.recipient_id"


def _log_where(f: LogFilter) -> tuple[str, str, list]:
    """(join, WHERE clause, arguments) for a filter; recipients are joined only when needed."""
    clauses = ["l.batch_date BETWEEN ? AND ?"]
    args: list = [f.start.isoformat(), f.end.isoformat()]
    join = ""
    if f.campaign or f.email:
        join = _JOIN_RECIPIENTS
    if f.campaign:
        clauses.append("r.campaign_id = (SELECT id FROM campaigns WHERE name = ?)")
        args.append(f.campaign)
    if f.email:
        clauses.append("instr(r.email, ?) > 0")
        args.append(admin.normalize_email(f.email))
    if f.status:
        clauses.append("l.status = ?")
        args.append(f.status)
    return join, " AND ".join(clauses), args


def log_summary(conn: sqlite3.Connection, f: LogFilter) -> LogSummary:
    """Counts by status and distinct recipients really attempted, in one pass over the range."""
    join, where, args = _log_where(f)
    per_status = ", ".join(f"coalesce(sum(l.status = '{status}'), 0)" for status in LOG_STATUSES)
    *counts, unique = conn.execute(
        f"SELECT {per_status}, count(DISTINCT CASE WHEN l.status != 'dry_run' THEN l.recipient_id END)"
        f" FROM send_log l{join} WHERE {where}", args,
    ).fetchone()
    return LogSummary(dict(zip(LOG_STATUSES, counts, strict=True)), unique)


def daily_counts(conn: sqlite3.Connection, f: LogFilter) -> list[DayCount]:
    """Sent, failed and dry-run attempts per batch day, oldest first (days without rows left out)."""
    join, where, args = _log_where(f)
    rows = conn.execute(
        "SELECT l.batch_date, sum(l.status = 'sent'), sum(l.status = 'failed'), sum(l.status = 'dry_run')"
        f" FROM send_log l{join} WHERE {where} GROUP BY l.batch_date ORDER BY l.batch_date",
        args,
    )
    return [DayCount(date.fromisoformat(day), sent, failed, dry) for day, sent, failed, dry in rows]


_LOG_FIELDS = "l.batch_date, l.attempted_at, l.status, r.email, l.message_id, l.subject, l.error"
_NEWEST_FIRST = " ORDER BY l.attempted_at DESC, l.id DESC"


def _log_row(row: sqlite3.Row | tuple, tz: tzinfo) -> LogRow:
    day, attempted_at, status, email, message_id, subject, error = row
    local = datetime.fromisoformat(attempted_at).astimezone(tz)
    return LogRow(day, local.strftime("%H:%M:%S"), status, email, message_id, subject, error)


def log_page(conn: sqlite3.Connection, f: LogFilter, *, tz: tzinfo, limit: int, offset: int = 0) -> list[LogRow]:
    """One page of the filtered log, newest first."""
    join, where, args = _log_where(f)
    # Page over the narrow ids first: only the rows shown are joined to recipients and read in full.
    sql = (f"SELECT {_LOG_FIELDS} FROM (SELECT l.id FROM send_log l{join} WHERE {where}{_NEWEST_FIRST}"
           f" LIMIT ? OFFSET ?) page CROSS JOIN send_log l ON l.id = page.id{_JOIN_RECIPIENTS}{_NEWEST_FIRST}")
    return [_log_row(row, tz) for row in conn.execute(sql, [*args, limit, offset])]


def iter_log(conn: sqlite3.Connection, f: LogFilter, *, tz: tzinfo, batch: int = 5000) -> Iterator[LogRow]:
    """Every row of the filtered log, newest first, fetched in batches from one cursor."""
    _, where, args = _log_where(f)
    cursor = conn.execute(f"SELECT {_LOG_FIELDS} FROM send_log l{_JOIN_RECIPIENTS} WHERE {where}{_NEWEST_FIRST}", args)
    while rows := cursor.fetchmany(batch):
        yield from (_log_row(row, tz) for row in rows)


# --- CSV export ------------------------------------------------------------------------------


def csv_safe(value: object) -> str:
    """A cell a spreadsheet shows as text: a leading formula trigger gets a `'` in front."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_TRIGGERS) else text


def csv_lines(rows: Iterable[LogRow | tuple], columns: tuple[str, ...] = LOG_COLUMNS) -> Iterator[str]:
    """The header, then one line per row; every cell quoted and formula-escaped."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")

    def line(cells: Iterable) -> str:
        writer.writerow([csv_safe(cell) for cell in cells])
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line(columns)
    for row in rows:
        yield line(row.cells() if isinstance(row, LogRow) else row)


# --- recipients ------------------------------------------------------------------------------


# The queue exactly as run_daily.pending_batch picks it (tests/test_reports.py holds them equal).
_QUEUE_WHERE = (
    " FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
    " WHERE r.status = 'pending' AND c.status = 'active'"
    " AND r.email NOT IN (SELECT email FROM suppressions)"
    " AND NOT EXISTS (SELECT 1 FROM recipients o WHERE o.email = r.email AND o.id != r.id"
    "                 AND o.status IN ('sending', 'sent', 'unknown'))"
)


def pending_queue(conn: sqlite3.Connection, *, limit: int, offset: int = 0) -> list[dict]:
    """Sendable recipients in the order the next runs will mail them."""
    rows = conn.execute(
        "SELECT r.email, c.name AS campaign, r.first_name, r.last_name, r.company"
        f"{_QUEUE_WHERE} ORDER BY r.id LIMIT ? OFFSET ?",
        (limit, offset),
    )
    return [{"position": offset + i, **dict(row)} for i, row in enumerate(rows, start=1)]


def next_queued(conn: sqlite3.Connection, campaign_id: int) -> sqlite3.Row | None:
    """The campaign's recipient the next run will mail first (None if the campaign has no queue)."""
    return conn.execute(f"SELECT r.*{_QUEUE_WHERE} AND r.campaign_id = ? ORDER BY r.id LIMIT 1",
                        (campaign_id,)).fetchone()


def pending_queue_size(conn: sqlite3.Connection) -> int:
    return conn.execute(f"SELECT count(*){_QUEUE_WHERE}").fetchone()[0]


def failed_recipients(conn: sqlite3.Connection, *, limit: int) -> list[dict]:
    """Recipients in `failed`, most recent first, with their last error."""
    rows = conn.execute(
        "SELECT r.email, c.name AS campaign, r.attempts, r.last_error, r.updated_at FROM recipients r"
        " JOIN campaigns c ON c.id = r.campaign_id WHERE r.status = 'failed'"
        " ORDER BY r.updated_at DESC, r.id DESC LIMIT ?",
        (limit,),
    )
    return [dict(row) for row in rows]


def recipient_counts(conn: sqlite3.Connection, campaign: str | None = None) -> dict[str, int]:
    """Recipients by status (every status present, 0 when none), optionally for one campaign."""
    sql = "SELECT status, count(*) FROM recipients"
    args: list = []
    if campaign:
        sql += " WHERE campaign_id = (SELECT id FROM campaigns WHERE name = ?)"
        args.append(campaign)
    counts = dict.fromkeys(RECIPIENT_STATUSES, 0)
    counts.update(conn.execute(f"{sql} GROUP BY status", args).fetchall())
    return counts


# --- deliverability: what SES said, and who is never mailed again ------------------------------


@dataclass(frozen=True)
class Reputation:
    """Real sends in a filter, and how many of them SES reported as hard-bounced or complained about."""

    sent: int
    bounced: int
    complained: int
    events_seen: bool  # SES has reported something to this database at all

    @property
    def known(self) -> bool:
        """Whether the rates mean anything: with no sends, or no event ever received (no queue
        set up, SMTP), 0 bounces says nothing about the bounces."""
        return bool(self.sent) and self.events_seen

    @property
    def bounce_rate(self) -> float | None:
        return self.bounced / self.sent if self.known else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complained / self.sent if self.known else None


def reputation(conn: sqlite3.Connection, f: LogFilter) -> Reputation:
    """The filter's sent attempts and those of them that hard-bounced or drew a complaint.

    Each event is matched to its send through the attempt_id tag (ses_events_attempt index), so
    the rates follow every filter, campaign and address included, and a send counts once however
    many events it has. Identity notifications carry no tags (README, "Bounces and complaints"),
    so they are not counted.
    """
    join, where, args = _log_where(f)
    hard, complaint = EventKind.BOUNCED_PERMANENT, EventKind.COMPLAINED
    # One pass: each send's events are looked up once, and a send with no bad news joins NULL.
    # (100 ms for 72k sends among 1.8M events; an EXISTS per kind took 140.)
    sent, bounced, complained = conn.execute(
        f"SELECT count(DISTINCT l.id), count(DISTINCT CASE WHEN e.kind = '{hard}' THEN l.id END),"
        f" count(DISTINCT CASE WHEN e.kind = '{complaint}' THEN l.id END) FROM send_log l{join}"
        f" LEFT JOIN ses_events e ON e.attempt_id = l.attempt_id AND e.kind IN ('{hard}', '{complaint}')"
        f" WHERE {where} AND l.status = 'sent'", args,
    ).fetchone()
    seen = conn.execute(f"SELECT EXISTS (SELECT 1 FROM ses_events WHERE kind != '{EventKind.UNKNOWN}')").fetchone()[0]
    return Reputation(sent, bounced, complained, bool(seen))


@dataclass(frozen=True)
class EventRow:
    received_at: str  # when `email-automation events` stored it, in TIMEZONE
    kind: str
    email: str | None
    detail: str | None
    message_id: str | None

    def cells(self) -> tuple:
        return tuple(getattr(self, name) for name in EVENT_COLUMNS)


@dataclass(frozen=True)
class SuppressionRow:
    email: str
    reason: str
    source: str
    since: str  # created_at in TIMEZONE

    def cells(self) -> tuple:
        return tuple(getattr(self, name) for name in SUPPRESSION_COLUMNS)


def _local(stamp: str | None, tz: tzinfo) -> str:
    """A stored UTC timestamp as `YYYY-MM-DD HH:MM:SS` in `tz`; anything else as it is."""
    try:
        return datetime.fromisoformat(stamp).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return stamp or ""


def _day_bounds(start: date, end: date, tz: tzinfo) -> tuple[str, str]:
    """[first instant of `start`, first instant after `end`) in `tz`, as stored UTC text."""
    first = datetime.combine(start, time(), tzinfo=tz)
    after = datetime.combine(end + timedelta(days=1), time(), tzinfo=tz)
    return iso(first), iso(after)


# No index covers received_at (migration 2 indexes email and attempt_id), so the two event
# queries below read the whole table: about 0.25 s each at 1.8M events. An index on received_at
# turns them into range reads (50 ms and 1 ms); they are written to use one as soon as it exists.
def _event_where(f: LogFilter, tz: tzinfo) -> tuple[str, list]:
    """Events received on the filter's days (in `tz`), for part of an address; campaign and
    status do not apply, as an event names neither."""
    clauses, args = ["received_at >= ? AND received_at < ?"], list(_day_bounds(f.start, f.end, tz))
    if f.email:
        clauses.append("instr(email, ?) > 0")
        args.append(admin.normalize_email(f.email))
    return " AND ".join(clauses), args


def event_counts(conn: sqlite3.Connection, f: LogFilter, *, tz: tzinfo) -> dict[str, int]:
    """Events by kind (only kinds present), in EventKind's order."""
    where, args = _event_where(f, tz)
    counts = dict(conn.execute(f"SELECT kind, count(*) FROM ses_events WHERE {where} GROUP BY kind", args).fetchall())
    order = {kind: n for n, kind in enumerate(EventKind)}
    return {kind: counts[kind] for kind in sorted(counts, key=lambda k: (order.get(k, len(order)), k))}


def event_page(conn: sqlite3.Connection, f: LogFilter, *, tz: tzinfo, limit: int, offset: int = 0) -> list[EventRow]:
    """One page of the events received on the filter's days, newest first."""
    where, args = _event_where(f, tz)
    rows = conn.execute(
        f"SELECT received_at, kind, email, detail, message_id FROM ses_events WHERE {where}"
        " ORDER BY received_at DESC, rowid DESC LIMIT ? OFFSET ?", [*args, limit, offset],
    )
    return [EventRow(_local(received, tz), kind, email, detail, mid) for received, kind, email, detail, mid in rows]


def _suppression_where(email: str) -> tuple[str, list]:
    return ("instr(email, ?) > 0", [admin.normalize_email(email)]) if email else ("1", [])


def suppression_count(conn: sqlite3.Connection, email: str = "") -> int:
    """Suppressed addresses, or those containing `email`."""
    where, args = _suppression_where(email)
    return conn.execute(f"SELECT count(*) FROM suppressions WHERE {where}", args).fetchone()[0]


def suppression_page(conn: sqlite3.Connection, *, tz: tzinfo, email: str = "", limit: int,
                     offset: int = 0) -> list[SuppressionRow]:
    """One page of the suppression list, newest first, optionally for part of an address."""
    where, args = _suppression_where(email)
    rows = conn.execute(
        f"SELECT email, reason, source, created_at FROM suppressions WHERE {where}"
        " ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?", [*args, limit, offset],
    )
    return [SuppressionRow(email, reason, source, _local(since, tz)) for email, reason, source, since in rows]


# --- the dashboard's data source -------------------------------------------------------------


class AdminLockedError(EmailAutomationError):
    """An admin action was asked for while DASHBOARD_PASSWORD is not set."""


@dataclass(frozen=True)
class Today:
    day: date
    counted: int  # attempts that may have reached a mailbox: sending + sent + unknown
    daily_limit: int


@dataclass
class Reports:
    """The dashboard's data source: read-only queries on `db_path`, plus the admin hooks."""

    db_path: Path
    settings: Settings
    now: Callable[[], datetime] = field(default=utc_now)

    @property
    def cache_key(self) -> str:
        """What makes two Reports answer differently (for the page's cache)."""
        return f"{Path(self.db_path).resolve()}|{self.settings.tz}|{self.settings.daily_limit}"

    def _connect_readonly(self) -> sqlite3.Connection:
        if not Path(self.db_path).is_file():
            raise ConfigError(f"{self.db_path}: no database yet; run `email-automation init` first")
        return connect(self.db_path, readonly=True)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection inside one short read transaction (a consistent snapshot)."""
        with closing(self._connect_readonly()) as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def today(self) -> Today:
        day = batch_date(self.now(), self.settings.tz)
        with self._read() as conn:
            return Today(date.fromisoformat(day), counted_today(conn, day), self.settings.daily_limit)

    def default_filter(self, days: int = 30) -> LogFilter:
        """The last `days` batch days, today included, in TIMEZONE."""
        end = date.fromisoformat(batch_date(self.now(), self.settings.tz))
        return LogFilter(end - timedelta(days=days - 1), end)

    def campaigns(self) -> list[tuple[str, str]]:
        """(name, active|paused) of every campaign, oldest first."""
        with self._read() as conn:
            return [tuple(row) for row in conn.execute("SELECT name, status FROM campaigns ORDER BY id")]

    def summary(self, f: LogFilter) -> LogSummary:
        with self._read() as conn:
            return log_summary(conn, f)

    def daily(self, f: LogFilter) -> list[DayCount]:
        with self._read() as conn:
            return daily_counts(conn, f)

    def log_page(self, f: LogFilter, *, page: int, page_size: int) -> list[LogRow]:
        with self._read() as conn:
            return log_page(conn, f, tz=self.settings.tz, limit=page_size, offset=(page - 1) * page_size)

    def log_csv(self, f: LogFilter) -> bytes:
        """The whole filtered log as CSV (UTF-8 with BOM so Excel reads accents), formula-safe."""
        with closing(self._connect_readonly()) as conn:
            return ("\ufeff" + "".join(csv_lines(iter_log(conn, f, tz=self.settings.tz)))).encode("utf-8")

    def recipient_counts(self, campaign: str | None = None) -> dict[str, int]:
        with self._read() as conn:
            return recipient_counts(conn, campaign)

    def pending_queue(self, *, limit: int = 200, offset: int = 0) -> tuple[int, list[dict]]:
        """(queue length, the first `limit` recipients from `offset`) in send order."""
        with self._read() as conn:
            return pending_queue_size(conn), pending_queue(conn, limit=limit, offset=offset)

    def unknown(self) -> list[dict]:
        with self._read() as conn:
            return [dict(row) for row in unknown_recipients(conn)]

    def failed(self, *, limit: int = 200) -> list[dict]:
        with self._read() as conn:
            return failed_recipients(conn, limit=limit)

    def status_summary(self) -> StatusSummary:
        with self._read() as conn:
            return status_summary(conn, now=self.now(), tz=self.settings.tz, daily_limit=self.settings.daily_limit)

    def reputation(self, f: LogFilter) -> Reputation:
        with self._read() as conn:
            return reputation(conn, f)

    def event_counts(self, f: LogFilter) -> dict[str, int]:
        with self._read() as conn:
            return event_counts(conn, f, tz=self.settings.tz)

    def event_page(self, f: LogFilter, *, page: int, page_size: int) -> list[EventRow]:
        with self._read() as conn:
            return event_page(conn, f, tz=self.settings.tz, limit=page_size, offset=(page - 1) * page_size)

    def suppression_counts(self, email: str = "") -> tuple[int, int]:
        """(addresses on the suppression list, those containing `email`)."""
        with self._read() as conn:
            total = suppression_count(conn)
            return total, suppression_count(conn, email) if email else total

    def suppression_page(self, email: str = "", *, page: int, page_size: int) -> list[SuppressionRow]:
        with self._read() as conn:
            return suppression_page(conn, tz=self.settings.tz, email=email, limit=page_size,
                                    offset=(page - 1) * page_size)

    # --- admin hooks: the CLI's library calls, audited as actor "dashboard" -----------------

    @property
    def admin_enabled(self) -> bool:
        return bool(self.settings.dashboard_password.get_secret_value())

    def check_password(self, given: str) -> bool:
        """True only when DASHBOARD_PASSWORD is set and `given` equals it (constant time)."""
        secret = self.settings.dashboard_password.get_secret_value()
        return bool(secret) and hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))

    def _admin(self, action: Callable, *args, **kwargs):
        if not self.admin_enabled:
            raise AdminLockedError("admin actions are disabled: set DASHBOARD_PASSWORD to enable them")
        with closing(connect(self.db_path)) as conn:
            return action(conn, *args, actor=ADMIN_ACTOR, now=self.now(), **kwargs)

    def pause(self, campaign: str) -> None:
        self._admin(admin.set_campaign_status, campaign, "paused")

    def resume(self, campaign: str) -> None:
        self._admin(admin.set_campaign_status, campaign, "active")

    def skip(self, email: str, *, campaign: str | None = None) -> int:
        return self._admin(admin.skip_recipient, email, campaign=campaign)

    def retry_failed(self, *, campaign: str | None = None) -> int:
        return self._admin(admin.retry_failed, campaign=campaign)

    def suppress(self, email: str, *, reason: str = "manual") -> int:
        return self._admin(admin.suppress, email, reason=reason, source=ADMIN_ACTOR)

    def resolve(self, email: str, outcome: Literal["sent", "pending"], *, campaign: str | None = None) -> int:
        return self._admin(admin.resolve_unknown, email, outcome, campaign=campaign)


__all__ = [
    "BOUNCE_REVIEW_RATE", "COMPLAINT_REVIEW_RATE", "COUNTED_LOG_STATUSES", "EVENT_COLUMNS", "LOG_COLUMNS",
    "SUPPRESSION_COLUMNS", "AdminLockedError", "DayCount", "EventRow", "LogFilter", "LogRow", "LogSummary", "Reports",
    "Reputation", "StatusSummary", "SuppressionRow", "Today", "csv_lines", "csv_safe", "daily_counts", "event_counts",
    "event_page", "failed_recipients", "iter_log", "log_page", "log_summary", "pending_queue", "pending_queue_size",
    "recipient_counts", "reputation", "status_summary", "suppression_count", "suppression_page", "unknown_recipients",
]
