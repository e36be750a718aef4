"""What SES said about the sends, and who is never mailed again: the dashboard's reputation view.

Read-only queries over `send_log`, `ses_events` and `suppressions`; aggregation in SQL.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from .database import iso
from .events import EventKind
from .reports import LogFilter, address_part, log_filter_sql

SUPPRESSION_COLUMNS = ("email", "reason", "source", "since")
EVENT_COLUMNS = ("received_at", "kind", "email", "detail", "message_id")
# SES places an account under review from these rates on (and may pause it at 10% and 0.5%).
# https://docs.aws.amazon.com/ses/latest/dg/reputationdashboard-messages.html
BOUNCE_REVIEW_RATE = 0.05
COMPLAINT_REVIEW_RATE = 0.001

@dataclass(frozen=True)
class Reputation:
    """Real sends in a filter, and how many of them SES reported as hard-bounced or complained
    about; without SES events, the hard bounces the mail itself told (`from_mail`)."""

    sent: int
    bounced: int
    complained: int
    events_seen: bool  # SES has reported something to this database at all
    refused: int = 0  # from_mail: attempts an SMTP server refused for good at once (5.1.x), not in `sent`
    from_mail: bool = False  # no SES event; `bounced` counts SMTP refusals and the inbox's bounce reports

    @property
    def known(self) -> bool:
        """Whether the rates mean anything: with no sends, or no event ever received (no queue
        set up, SMTP), 0 bounces says nothing about the bounces."""
        return bool(self.sent) and self.events_seen

    @property
    def bounce_rate(self) -> float | None:
        """SES's rate; else, once the mail has told of a bounce at all, the share of the filter's
        attempts (sent, or refused at once) that bounced as far as the mail told: a lower bound
        (a bounce report the inbox has not read, or one sent to no inbox we read, is not in it)."""
        if self.known:
            return self.bounced / self.sent
        attempts = self.sent + self.refused
        return self.bounced / attempts if self.from_mail and attempts else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complained / self.sent if self.known else None


def reputation(conn: sqlite3.Connection, f: LogFilter, *, sent: int | None = None) -> Reputation:
    """The filter's sent attempts and those of them that hard-bounced or drew a complaint.

    Each event is matched to its send through the attempt_id tag, so the rates follow every
    filter, campaign and address included, and a send counts once however many events it has.
    Identity notifications carry no tags (README, "Bounces and complaints"), so they are not
    counted. `sent`: the filter's sent attempts when the caller has counted them already (the
    dashboard's summary has), else they are counted here.
    """
    seen = bool(conn.execute(f"SELECT EXISTS (SELECT 1 FROM ses_events WHERE kind != '{EventKind.UNKNOWN}')").fetchone()[0])
    if f.status and f.status != "sent":  # "" is no filter, as log_filter_sql reads it
        return Reputation(0, 0, 0, seen)
    where, args = log_filter_sql(f)
    if sent is None:
        sent = conn.execute(f"SELECT count(*) FROM send_log l INDEXED BY send_log_daily_step WHERE {where}"
                            " AND l.status = 'sent'", args).fetchone()[0]
    if not seen and conn.execute(f"SELECT EXISTS (SELECT 1 FROM bounces b WHERE {_MAIL_HARD})").fetchone()[0]:
        return _told_by_mail(conn, where, args, sent)
    if not sent:
        return Reputation(0, 0, 0, seen)
    hard, complaint = EventKind.BOUNCED_PERMANENT, EventKind.COMPLAINED
    # From the few events with bad news (migration 17's partial index) to their sends, each found by
    # its unique attempt_id: looking up each send's events instead read a year's 900k sends and
    # their 1.8M events (1.9 s). CROSS JOIN keeps the events outside
    # (https://sqlite.org/optoverview.html#crossjoin).
    bounced, complained = conn.execute(
        f"SELECT count(DISTINCT l.id) FILTER (WHERE e.kind = '{hard}'),"
        f" count(DISTINCT l.id) FILTER (WHERE e.kind = '{complaint}')"
        " FROM ses_events e INDEXED BY ses_events_bad_news CROSS JOIN send_log l ON l.attempt_id = e.attempt_id"
        f" WHERE e.kind IN ('{hard}', '{complaint}') AND {where} AND l.status = 'sent'", args,
    ).fetchone()
    return Reputation(sent, bounced, complained, seen)


# Hard bounces the mail told (`bounces` as `b`): an SMTP server's 5.1.x refusal, a bounce report
# read from the inbox.
_MAIL_HARD = "b.kind = 'hard' AND b.source IN ('smtp', 'inbox') AND b.attempt_id IS NOT NULL"


def _told_by_mail(conn: sqlite3.Connection, where: str, args: list, sent: int) -> Reputation:
    """The filter's attempts that bounced as the mail told (no SES event ever came): from the few
    bounces to their sends by attempt_id, as `reputation` goes from SES's bad news."""
    bounced, refused = conn.execute(
        "SELECT count(DISTINCT l.id), count(DISTINCT l.id) FILTER (WHERE l.status = 'failed')"
        f" FROM bounces b CROSS JOIN send_log l ON l.attempt_id = b.attempt_id WHERE {_MAIL_HARD}"
        f" AND {where} AND l.status IN ('sent', 'failed')", args).fetchone()
    return Reputation(sent, bounced, 0, False, refused=refused, from_mail=True)


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


# Migration 3's index on received_at makes the event queries below range reads (about 50 ms
# and 1 ms at 1.8M events, against 0.25 s each for the full scan without it); since migration
# 17 it holds email, so that an address search is tested in it, not in each event's row.
def _event_where(f: LogFilter, tz: tzinfo) -> tuple[str, list]:
    """Events received on the filter's days (in `tz`), for part of an address; campaign and
    status do not apply, as an event names neither."""
    clauses, args = ["received_at >= ? AND received_at < ?"], list(_day_bounds(f.start, f.end, tz))
    if f.email:
        clauses.append("instr(email, ?) > 0")
        args.append(address_part(f.email))
    return " AND ".join(clauses), args


def event_counts(conn: sqlite3.Connection, f: LogFilter, *, tz: tzinfo) -> dict[str, int]:
    """Events by kind (only kinds present), in EventKind's order."""
    where, args = _event_where(f, tz)
    # The kinds stored, each found by one seek (min over the kinds after the last one), then each
    # kind's range of received_at counted in migration 17's index (kind, received_at, email):
    # grouping a year's 1.8M events read one by one took 2.2 s.
    # https://www.sqlite.org/lang_with.html#recursive_common_table_expressions
    counts = {kind: n for kind, n in conn.execute(
        "WITH RECURSIVE kinds(kind) AS (SELECT min(kind) FROM ses_events"
        "  UNION ALL SELECT (SELECT min(kind) FROM ses_events WHERE kind > kinds.kind) FROM kinds WHERE kind IS NOT NULL)"
        " SELECT kind, (SELECT count(*) FROM ses_events INDEXED BY ses_events_kind WHERE kind = kinds.kind"
        f"  AND {where}) FROM kinds WHERE kind IS NOT NULL", args) if n}
    order = {kind: n for n, kind in enumerate(EventKind)}
    return {kind: counts[kind] for kind in sorted(counts, key=lambda k: (order.get(k, len(order)), k))}


def event_page(conn: sqlite3.Connection, f: LogFilter, *, tz: tzinfo, limit: int, offset: int = 0) -> list[EventRow]:
    """One page of the events received on the filter's days, newest first."""
    where, args = _event_where(f, tz)
    # The page's events are found in ses_events_received alone (the address search too), and only
    # they are read: a rare address over a year's 1.8M events 1.5 s -> 0.2 s. Events stored
    # together share received_at, and the index orders those by email, so SQLite sorts each such
    # group by rowid as it goes ("RIGHT PART OF ORDER BY"; the last page of a year 0.15 -> 0.45 s).
    rows = conn.execute(
        "SELECT e.received_at, e.kind, e.email, e.detail, e.message_id FROM (SELECT rowid AS id, received_at"
        f" FROM ses_events INDEXED BY ses_events_received WHERE {where} ORDER BY received_at DESC, rowid DESC"
        " LIMIT ? OFFSET ?) page CROSS JOIN ses_events e ON e.rowid = page.id ORDER BY page.received_at DESC, page.id DESC",
        [*args, limit, offset],
    )
    return [EventRow(_local(received, tz), kind, email, detail, mid) for received, kind, email, detail, mid in rows]


def _suppression_where(email: str) -> tuple[str, list]:
    return ("instr(email, ?) > 0", [address_part(email)]) if email else ("1", [])


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
