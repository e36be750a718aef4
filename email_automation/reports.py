"""Read-only queries behind `email-automation status` and the dashboard: recipients, the send
log and the queue.

Aggregation happens in SQL so both stay quick on a million send_log rows. Every function takes a
connection and never writes; `dashboard_data.Reports` binds them to a database file through
short-lived read-only connections. What SES reported lives in `deliverability.py`.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from . import applications, warmup
from .circuit_breaker import open_pauses
from .database import COUNTED_LOG_STATUSES, LOG_STATUSES, RECIPIENT_STATUSES
from .imports import FINISHED
from .ledger import QUEUE_FROM_WHERE, batch_date, counted_today, remaining_today

LOG_COLUMNS = ("batch_date", "time", "status", "email", "campaign", "message_id", "subject", "error")
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
    remaining_today: int
    sent_today: int = 0  # certainly sent
    deferred_today: int = 0  # refused for now; the recipients wait in the queue, not counted
    paused: tuple[str, ...] = ()  # the circuit breaker's open pauses, each with why and how to lift it
    limit_note: str | None = None  # why today's limit is below DAILY_LIMIT (warm-up)

    def as_dict(self) -> dict:
        return {
            "campaigns": {c.name: {"state": c.state, **c.counts} for c in self.campaigns},
            "today": self.today,
            "sent_today": self.sent_today,
            "deferred_today": self.deferred_today,
            "counted_today": self.counted_today,
            "daily_limit": self.daily_limit,
            "remaining_today": self.remaining_today,
            "suppressed": self.suppressed,
            "paused": list(self.paused),
            "limit_note": self.limit_note,
        }


def status_summary(conn: sqlite3.Connection, *, now: datetime, tz, daily_limit: int,
                   warmup_schedule: str = "") -> StatusSummary:
    """Recipients by status per campaign, and today's counted attempts against the limit (DAILY_LIMIT,
    or WARMUP_SCHEDULE's step for today)."""
    counts: dict[int, dict[str, int]] = {}
    for row in conn.execute(f"SELECT campaign_id, status, count(*) FROM recipients r WHERE {FINISHED}"
                            " GROUP BY campaign_id, status"):
        counts.setdefault(row[0], {})[row[1]] = row[2]
    campaigns = [
        CampaignStatus(c["name"], c["status"], {s: counts.get(c["id"], {}).get(s, 0) for s in RECIPIENT_STATUSES})
        for c in conn.execute("SELECT id, name, status FROM campaigns ORDER BY id")
    ]
    day = batch_date(now, tz)
    suppressed = conn.execute("SELECT count(*) FROM suppressions").fetchone()[0]
    sent, deferred = conn.execute(
        "SELECT coalesce(sum(status = 'sent'), 0), coalesce(sum(status = 'deferred'), 0) FROM send_log"
        " WHERE batch_date = ? AND status IN ('sent', 'deferred')", (day,)).fetchone()
    paused = tuple(p.line() for p in open_pauses(conn))
    today = warmup.limit_for(conn, daily_limit, warmup_schedule, day)
    return StatusSummary(campaigns, day, counted_today(conn, day), today.limit, suppressed,
                         remaining_today(conn, now=now, tz=tz, daily_limit=today.limit), sent, deferred, paused,
                         today.note)


def unknown_recipients(conn: sqlite3.Connection, campaign: str | None = None) -> list[sqlite3.Row]:
    """Recipients whose last send may or may not have gone out: each needs a person's decision
    (of one campaign, or of all)."""
    where, args = _of_campaign(campaign)
    return conn.execute(
        "SELECT r.email, c.name AS campaign, r.last_error, r.updated_at FROM recipients r"
        f" JOIN campaigns c ON c.id = r.campaign_id WHERE r.status = 'unknown'{where} ORDER BY r.updated_at", args
    ).fetchall()


def _of_campaign(campaign: str | None) -> tuple[str, tuple]:
    """The condition (on `c`, the campaigns table) and its argument that keep one campaign's rows."""
    return (" AND c.name = ?", (campaign,)) if campaign else ("", ())


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
class DayCount:
    day: date
    sent: int
    failed: int
    dry_run: int
    deferred: int = 0
    sent_per_step: dict[int, int] = field(default_factory=dict)  # step 1 = first contact, 2.. = follow-ups


@dataclass(frozen=True)
class LogSummary:
    """send_log rows by status for a filter; dry-run rows are kept apart and never count as sent."""

    counts: dict[str, int]
    unique_recipients: int
    days: tuple[DayCount, ...] = ()  # the Activity chart's per-day counts, read in the same pass

    @property
    def sent(self) -> int:
        return self.counts["sent"]

    @property
    def failed(self) -> int:
        """Attempts that ended their recipient as failed (the same meaning as in `status`)."""
        return self.counts["failed"]

    @property
    def deferred(self) -> int:
        """Attempts refused for now (or settled as not sent): the recipient stays in the queue."""
        return self.counts["deferred"]

    @property
    def dry_run(self) -> int:
        return self.counts["dry_run"]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class LogRow:
    batch_date: str
    time: str  # attempted_at as HH:MM:SS in TIMEZONE
    status: str
    email: str
    campaign: str  # whose the send was: with every campaign shown, an address may be in several
    message_id: str | None
    subject: str | None
    error: str | None

    def cells(self) -> tuple:
        return tuple(getattr(self, name) for name in LOG_COLUMNS)


# The log's rows with their recipient's address (a page after paging, the CSV export). CROSS JOIN
# makes SQLite keep send_log as the outer loop, driven by the batch_date index: with a plain JOIN
# and no ANALYZE statistics it could start from the recipients and read each one's whole history
# (3.5 s instead of 0.1 s for a campaign on a million rows, when filters used this join).
# https://sqlite.org/optoverview.html#crossjoin
_JOIN_RECIPIENTS = " CROSS JOIN recipients r ON r.id = l.recipient_id"

# A campaign or part of an address narrows the log to those recipients' ids, found once (an
# uncorrelated IN subquery) and looked up for each row of the batch days, where joining every row
# to its recipient took 1.6-5.5x as long (1M sends, 30 days and a year). The unary + keeps
# SQLite from driving the query by those ids through send_log_recipient, which reads a broad
# match's whole history (2 s for 30 days): https://sqlite.org/optoverview.html, "Disqualifying
# WHERE clause terms using unary-'+'".
_OF_RECIPIENTS = "+l.recipient_id IN (SELECT id FROM recipients WHERE {})"


def log_filter_sql(f: LogFilter) -> tuple[str, list]:
    """(WHERE clause over send_log `l`, arguments) for a filter."""
    narrowing, args = _narrowing_sql(f)
    return " AND ".join(["l.batch_date BETWEEN ? AND ?", *narrowing]), [f.start.isoformat(), f.end.isoformat(), *args]


def _narrowing_sql(f: LogFilter) -> tuple[list[str], list]:
    """The filter's clauses besides its batch days, with their arguments. The status comes first:
    SQLite tests the terms an index does not answer in the order written, and a rare status then
    spares most rows the lookup in the recipients' ids; a campaign and an address make one list of
    ids, one lookup a row (a year of 1M sends, a campaign and an address: 330 -> 230 ms)."""
    # A status of the closed set is written as a literal, so that SQLite may take the partial index
    # of `unknown` sends (https://sqlite.org/partialindex.html#queries_using_partial_indexes).
    clauses, args = ([], []) if not f.status else (
        [f"l.status = '{f.status}'"], []) if f.status in LOG_STATUSES else (["l.status = ?"], [f.status])
    of_recipients, recipient_args = _recipient_sql(f)
    if of_recipients:
        clauses.append(_OF_RECIPIENTS.format(of_recipients))
    return clauses, [*args, *recipient_args]


def _recipient_sql(f: LogFilter) -> tuple[str, list]:
    """(condition on a row of recipients, arguments) for the filter's campaign and address; "" for none."""
    conditions, args = [], []
    if f.campaign:
        conditions.append("campaign_id = (SELECT id FROM campaigns WHERE name = ?)")
        args.append(f.campaign)
    if f.email:
        conditions.append("instr(email, ?) > 0")
        args.append(address_part(f.email))
    return " AND ".join(conditions), args


def address_part(email: str) -> str:
    """Part of an address searched for, in the form addresses are stored in. email-validator is
    loaded only for such a search, not with every page of the dashboard."""
    from .addresses import lookup_form

    return lookup_form(email)


def _rows_index(f: LogFilter) -> str:
    """The index the filter's rows are read from: send_log_daily_step, or for the `unknown` status
    its own partial index, which holds only those few rows (a year: 220 -> 40 ms)."""
    return "send_log_unknown" if f.status == "unknown" else "send_log_daily_step"


def _log_counts(conn: sqlite3.Connection, f: LogFilter) -> list[tuple[str, int, str, int, int, int]]:
    """(batch day, step, status, attempts, lowest id, highest id) of the filter, in that order:
    every figure of the first view comes from these rows, the distinct recipients with their help.

    Read from send_log_daily_step alone (migration 17: it holds recipient_id for the campaign and
    address filters), in its order, so no row of the table and no temporary B-tree: a year of a
    million sends 0.7 s -> 0.2 s. count(*) per group, not one sum() per status per row, which
    cost as much again. INDEXED BY: with a status filter SQLite would take send_log_daily and
    read each row for its step (https://sqlite.org/lang_indexedby.html)."""
    where, args = log_filter_sql(f)
    return conn.execute(
        "SELECT l.batch_date, l.step, l.status, count(*), min(l.id), max(l.id) FROM send_log l"
        f" INDEXED BY {_rows_index(f)} WHERE {where} GROUP BY l.batch_date, l.step, l.status"
        " ORDER BY l.batch_date, l.step, l.status", args,
    ).fetchall()


def _days(rows: Iterable[tuple]) -> tuple[DayCount, ...]:
    """Sent (per step), failed, dry-run and deferred attempts per batch day from `_log_counts`,
    oldest first (days without rows left out)."""
    days: dict[str, list] = {}
    for day, step, status, n, *_ids in rows:
        totals = days.setdefault(day, [0, 0, 0, 0, {}])
        if status in _DAY_COLUMNS:
            totals[_DAY_COLUMNS[status]] += n
        if status == "sent" and n:
            totals[4][step] = n
    return tuple(DayCount(date.fromisoformat(day), *totals) for day, totals in days.items())


_DAY_COLUMNS = {"sent": 0, "failed": 1, "dry_run": 2, "deferred": 3}
# From this many counted attempts per recipient on, the distinct recipients are counted per
# recipient (below) rather than by putting every attempt's recipient_id in a temporary B-tree.
ATTEMPTS_PER_RECIPIENT_TO_ASK_EACH = 4


def log_summary(conn: sqlite3.Connection, f: LogFilter) -> LogSummary:
    """Counts by status, distinct recipients really attempted, and the per-day counts."""
    rows = _log_counts(conn, f)
    counts = dict.fromkeys(LOG_STATUSES, 0)
    counted = [row for row in rows if row[2] != "dry_run"]
    for _day, _step, status, n, _low, _high in rows:
        counts[status] += n
    return LogSummary(counts, _unique_recipients(conn, f, counted), _days(rows))


def _unique_recipients(conn: sqlite3.Connection, f: LogFilter, counted: list[tuple]) -> int:
    """Distinct recipients of the filter's attempts other than dry runs (`counted`: their groups).

    Few attempts: count(DISTINCT) over them in send_log_daily_step. Many (a year: a million, 0.2-0.4 s
    that way): ask each recipient of the filter whether they have one, through send_log_recipient
    (recipient_id, then the rowid: https://sqlite.org/fileformat2.html#representation_of_sql_indices)
    between the lowest and highest id of those attempts, so that a recipient without one passes
    over none of their earlier or later attempts, only over any the window holds (ids grow with
    time, so usually none): 0.1 s for 50,000 recipients. Any id order gives the same count."""
    attempts = sum(row[3] for row in counted)
    if not attempts:
        return 0
    where, args = log_filter_sql(f)
    recipients = conn.execute("SELECT coalesce(max(id), 0) FROM recipients").fetchone()[0]
    if attempts < ATTEMPTS_PER_RECIPIENT_TO_ASK_EACH * recipients:
        return conn.execute(f"SELECT count(DISTINCT l.recipient_id) FROM send_log l INDEXED BY {_rows_index(f)}"
                            f" WHERE {where} AND l.status != 'dry_run'", args).fetchone()[0]
    of_recipients, recipient_args = _recipient_sql(f)
    status, status_args = (" AND l.status = ?", [f.status]) if f.status else ("", [])
    return conn.execute(
        f"SELECT count(*) FROM recipients r WHERE {of_recipients or 1} AND EXISTS (SELECT 1 FROM send_log l"
        " INDEXED BY send_log_recipient WHERE l.recipient_id = r.id AND l.id BETWEEN ? AND ?"
        f" AND l.batch_date BETWEEN ? AND ? AND l.status != 'dry_run'{status})",
        [*recipient_args, min(row[4] for row in counted), max(row[5] for row in counted),
         f.start.isoformat(), f.end.isoformat(), *status_args]).fetchone()[0]


def daily_counts(conn: sqlite3.Connection, f: LogFilter) -> list[DayCount]:
    """Sent (per step), failed, dry-run and deferred attempts per batch day, oldest first (days
    without rows left out). The dashboard takes them from `log_summary`, which reads them anyway."""
    return list(_days(_log_counts(conn, f)))


def sent_per_step(days: Iterable[DayCount]) -> dict[int, int]:
    """The days' sent messages per step: first contacts (step 1) against each follow-up."""
    totals: dict[int, int] = {}
    for day in days:
        for step, sent in day.sent_per_step.items():
            totals[step] = totals.get(step, 0) + sent
    return dict(sorted(totals.items()))


_LOG_FIELDS = ("l.batch_date, l.attempted_at, l.status, r.email, (SELECT name FROM campaigns WHERE id = r.campaign_id),"
               " l.message_id, l.subject, l.error")
_NEWEST_FIRST = " ORDER BY l.attempted_at DESC, l.id DESC"


def _log_row(row: sqlite3.Row | tuple, tz: tzinfo) -> LogRow:
    day, attempted_at, status, email, campaign, message_id, subject, error = row
    local = datetime.fromisoformat(attempted_at).astimezone(tz)
    return LogRow(day, local.strftime("%H:%M:%S"), status, email, campaign, message_id, subject, error)


# How many rows of the batch days a page's walk back from the newest may read before the rows
# of the filter are taken from the index and sorted instead: a rare status or address found by
# walking would read every other row of the days (a year: up to a million).
WALK_ROWS_PER_PAGE_ROW = 20
# From this offset on, the page counts the filter's rows first, and reads a page nearer the oldest
# end from there (the last page of a year, offset 999,950: 0.3-0.9 s walking from the newest).
DEEP_OFFSET = 5_000


def log_page(conn: sqlite3.Connection, f: LogFilter, *, tz: tzinfo, limit: int, offset: int = 0) -> list[LogRow]:
    """One page of the filtered log, newest first."""
    # Page over the narrow ids first: only the rows shown are joined to recipients and read in full.
    # Each way of finding them reads rows of the table for attempted_at (the order): walking the
    # send_log_attempted index back from the filter's last day (an attempted_at range, which
    # changes no result, starts it there: a year, page 1, 404 -> 0.4 ms), walking it forward for a
    # page nearer the oldest end, or taking the filter's rows from send_log_daily_step and sorting
    # them. INDEXED BY holds SQLite to the way chosen (https://sqlite.org/lang_indexedby.html).
    walk = (" AND l.attempted_at >= ? AND l.attempted_at < ?", _attempted_around(f), "send_log_attempted")
    if offset >= DEEP_OFFSET:
        total, matching = _range_and_matching(conn, f)
        if offset >= matching:
            return []
        if (matching - offset) * total / matching < min((offset + limit) * total / matching, matching):
            offset, limit = max(0, matching - offset - limit), min(limit, matching - offset)
            return _page(conn, f, tz, limit, offset, *walk, order=_OLDEST_FIRST)
        if matching < (offset + limit) * total / matching:
            return _page(conn, f, tz, limit, offset, "", (), _rows_index(f))
        return _page(conn, f, tz, limit, offset, *walk)
    if not (f.status or f.campaign or f.email):
        return _page(conn, f, tz, limit, offset, *walk)
    # A narrowed filter walks a bounded number of rows: if they hold the page, it is the page a
    # walk through all of them gives; else the filter is rare in these days, and is sorted.
    page = _page(conn, f, tz, limit, offset, *walk, walk_rows=(offset + limit) * WALK_ROWS_PER_PAGE_ROW)
    return page if len(page) == limit else _page(conn, f, tz, limit, offset, "", (), _rows_index(f))


_OLDEST_FIRST = " ORDER BY l.attempted_at, l.id"


def _page(conn: sqlite3.Connection, f: LogFilter, tz: tzinfo, limit: int, offset: int, around: str,
          bounds: tuple, index: str, *, order: str = _NEWEST_FIRST, walk_rows: int | None = None) -> list[LogRow]:
    """The page's rows found through `index` in `order` (see log_page), from the first `walk_rows`
    rows of the batch days in that order when given."""
    narrowing, narrowing_args = _narrowing_sql(f)
    days, days_args = "l.batch_date BETWEEN ? AND ?", [f.start.isoformat(), f.end.isoformat()]
    if walk_rows is None:
        ids = (f"SELECT l.id FROM send_log l INDEXED BY {index} WHERE {' AND '.join([days, *narrowing])}{around}"
               f"{order} LIMIT ? OFFSET ?")
        args = [*days_args, *narrowing_args, *bounds]
    else:  # the walk's rows first, each with whether the filter takes it; their order kept outside
        ids = (f"SELECT id FROM (SELECT l.id, l.attempted_at, ({' AND '.join(narrowing)}) AS taken FROM send_log l"
               f" INDEXED BY {index} WHERE {days}{around}{order} LIMIT ?) l WHERE taken{order} LIMIT ? OFFSET ?")
        args = [*narrowing_args, *days_args, *bounds, walk_rows]
    sql = (f"SELECT {_LOG_FIELDS} FROM ({ids}) page CROSS JOIN send_log l ON l.id = page.id{_JOIN_RECIPIENTS}"
           f"{_NEWEST_FIRST}")
    return [_log_row(row, tz) for row in conn.execute(sql, [*args, limit, offset])]


def _range_and_matching(conn: sqlite3.Connection, f: LogFilter) -> tuple[int, int]:
    """(rows of the filter's batch days, rows of the filter), from send_log_daily_step alone."""
    narrowing, args = _narrowing_sql(f)
    matching = f"count(*) FILTER (WHERE {' AND '.join(narrowing)})" if narrowing else "count(*)"
    return conn.execute(f"SELECT count(*), {matching} FROM send_log l INDEXED BY send_log_daily_step"
                        " WHERE l.batch_date BETWEEN ? AND ?", [*args, f.start.isoformat(), f.end.isoformat()]).fetchone()


def _attempted_around(f: LogFilter) -> tuple[str, str]:
    """Bounds of attempted_at (UTC) around the filter's batch days: a batch day is the day of
    TIMEZONE its attempt was made in (`ledger.batch_date`), and no time zone is more than 14 hours
    from UTC, so a day before and after hold every row."""
    return (f.start - timedelta(days=1)).isoformat(), (f.end + timedelta(days=2)).isoformat()


def iter_log(conn: sqlite3.Connection, f: LogFilter, *, tz: tzinfo, batch: int = 5000) -> Iterator[LogRow]:
    """Every row of the filtered log, newest first, fetched in batches from one cursor."""
    where, args = log_filter_sql(f)
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


def _sendable(campaign: str | None, stop_company: bool) -> tuple[str, tuple]:
    """FROM + WHERE of the queue the run sends from (`run_daily.pending_batch`): QUEUE_FROM_WHERE
    without the recipients a reply stops (`applications.stopped_condition`), of one campaign or all."""
    stopped, stopped_args = applications.stopped_condition(stop_company)
    where, args = _of_campaign(campaign)
    return f"{QUEUE_FROM_WHERE} AND NOT {stopped}{where}", (*stopped_args, *args)


def pending_queue(conn: sqlite3.Connection, *, limit: int, offset: int = 0, campaign: str | None = None,
                  stop_company: bool = True) -> list[dict]:
    """Sendable recipients (of one campaign, or of all) in the order the next runs will mail them;
    `stop_company`: STOP_COMPANY_ON_REPLY, whose colleagues of someone who answered the run skips."""
    sql, args = _sendable(campaign, stop_company)
    rows = conn.execute(
        f"SELECT r.email, c.name AS campaign, r.first_name, r.last_name, r.company, r.timezone{sql}"
        " ORDER BY r.id LIMIT ? OFFSET ?", (*args, limit, offset))
    return [{"position": offset + i, **dict(row)} for i, row in enumerate(rows, start=1)]


def next_queued(conn: sqlite3.Connection, campaign_id: int, *, stop_company: bool = True) -> sqlite3.Row | None:
    """The campaign's recipient the next run will mail first (None if the campaign has no queue)."""
    stopped, args = applications.stopped_condition(stop_company)
    return conn.execute(f"SELECT r.*{QUEUE_FROM_WHERE} AND NOT {stopped} AND r.campaign_id = ? ORDER BY r.id LIMIT 1",
                        (*args, campaign_id)).fetchone()


def pending_queue_size(conn: sqlite3.Connection, campaign: str | None = None, *, stop_company: bool = True) -> int:
    sql, args = _sendable(campaign, stop_company)
    return conn.execute(f"SELECT count(*){sql}", args).fetchone()[0]


def stopped_by_replies(conn: sqlite3.Connection, campaign: str | None = None, *, stop_company: bool = True) -> int:
    """Pending recipients of active campaigns (of one, or of all) whom a reply stops (their own, or
    with STOP_COMPANY_ON_REPLY a colleague's): the queue leaves them out, the next run skips them."""
    stopped, args = applications.stopped_condition(stop_company)
    where, campaign_args = _of_campaign(campaign)
    return conn.execute(
        "SELECT count(*) FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
        " WHERE r.status = 'pending' AND r.step = 1 AND c.status = 'active'"
        f" AND r.email NOT IN (SELECT email FROM suppressions) AND {FINISHED}"  # as the queue beside it
        f" AND {stopped}{where}", (*args, *campaign_args)).fetchone()[0]


def failed_recipients(conn: sqlite3.Connection, *, limit: int, campaign: str | None = None) -> list[dict]:
    """Recipients in `failed` (of one campaign, or of all), most recent first, with their last error."""
    where, args = _of_campaign(campaign)
    rows = conn.execute(
        "SELECT r.email, c.name AS campaign, r.attempts, r.last_error, r.updated_at FROM recipients r"
        f" JOIN campaigns c ON c.id = r.campaign_id WHERE r.status = 'failed'{where}"
        " ORDER BY r.updated_at DESC, r.id DESC LIMIT ?",
        (*args, limit),
    )
    return [dict(row) for row in rows]


def recipient_counts(conn: sqlite3.Connection, campaign: str | None = None) -> dict[str, int]:
    """Recipients by status (every status present, 0 when none), optionally for one campaign."""
    sql = f"SELECT status, count(*) FROM recipients r WHERE {FINISHED}"
    args: list = []
    if campaign:
        sql += " AND campaign_id = (SELECT id FROM campaigns WHERE name = ?)"
        args.append(campaign)
    counts = dict.fromkeys(RECIPIENT_STATUSES, 0)
    counts.update(conn.execute(f"{sql} GROUP BY status", args).fetchall())
    return counts


__all__ = [
    "COUNTED_LOG_STATUSES", "LOG_COLUMNS", "DayCount", "LogFilter", "LogRow", "LogSummary", "StatusSummary",
    "address_part", "csv_lines", "csv_safe", "daily_counts", "failed_recipients", "iter_log", "log_filter_sql", "log_page",
    "log_summary", "next_queued", "pending_queue", "pending_queue_size", "recipient_counts", "status_summary",
    "stopped_by_replies", "unknown_recipients",
]


@dataclass(frozen=True)
class Funnel:
    """One campaign's outcomes: contacted -> replied -> interview -> offer, each stage among the
    people mailed, so the reply rate reads "of those we wrote to"."""

    campaign: str
    contacted: int  # a message of ours went (or may have gone) out: sent or unknown, or past step 1
    replied: int  # of the contacted: any application status beyond `none`
    interview: int  # of the contacted: `interview` or `offer` now, or `interview` at some point
    offer: int
    rejected: int
    not_interested: int
    not_mailed: int = 0  # an application status, but never mailed (marked by hand): counted apart

    @property
    def reply_rate(self) -> float:
        return self.replied / self.contacted if self.contacted else 0.0

    def as_dict(self) -> dict:
        return {"contacted": self.contacted, "replied": self.replied, "interview": self.interview,
                "offer": self.offer, "rejected": self.rejected, "not_interested": self.not_interested,
                "reply_rate": round(self.reply_rate, 4), "not_mailed": self.not_mailed}


# A recipient a message of ours went (or may have gone) out to: sent or unknown at some step, or
# past step 1 (a reply read from the inbox matches only such sends). A status set by hand proves
# nothing: `mark` works on anyone, mailed or not.
_MAILED = "(r.status IN ('sent', 'unknown') OR r.step > 1)"


def funnel(conn: sqlite3.Connection) -> list[Funnel]:
    """The application funnel of every campaign: each stage among the recipients mailed, those
    with a status but never mailed apart (`Funnel.not_mailed`). Two queries: who was mailed, over
    every recipient; the stages, over the few with a status (the partial index recipients_application)."""
    found = {campaign_id: [name, contacted, 0, 0, 0, 0, 0, 0] for campaign_id, name, contacted in conn.execute(
        f"SELECT c.id, c.name, count(r.id) FILTER (WHERE {_MAILED})"
        " FROM campaigns c LEFT JOIN recipients r ON r.campaign_id = c.id GROUP BY c.id ORDER BY c.id")}
    for campaign_id, mailed, *stages in conn.execute(
            f"SELECT r.campaign_id, {_MAILED}, count(*),"
            " count(*) FILTER (WHERE r.application_status IN ('interview', 'offer') OR EXISTS"
            "   (SELECT 1 FROM application_changes h WHERE h.recipient_id = r.id AND h.status = 'interview')),"
            " count(*) FILTER (WHERE r.application_status = 'offer'),"
            " count(*) FILTER (WHERE r.application_status = 'rejected'),"
            " count(*) FILTER (WHERE r.application_status = 'not_interested')"
            " FROM recipients r INDEXED BY recipients_application WHERE r.application_status != 'none'"
            " GROUP BY r.campaign_id, 2"):
        if mailed:
            found[campaign_id][2:7] = stages
        else:
            found[campaign_id][7] = stages[0]
    return [Funnel(*stages) for stages in found.values()]


@dataclass(frozen=True)
class VariantReplies:
    """Replies to one subject variant of one template: which subject works."""

    campaign: str
    template: str | None  # None: the campaign's own
    subject: str  # the subject template of the variant
    contacted: int
    replied: int

    @property
    def reply_rate(self) -> float:
        return self.replied / self.contacted if self.contacted else 0.0

    def line(self) -> str:
        where = self.campaign + (f"/{self.template}" if self.template else "")
        return (f"  {where} subject {self.subject!r}: {self.contacted} contacted -> {self.replied} replied "
                f"({self.reply_rate:.0%})")

    def as_dict(self) -> dict:
        return {"campaign": self.campaign, "template": self.template, "subject": self.subject,
                "contacted": self.contacted, "replied": self.replied, "reply_rate": round(self.reply_rate, 4)}


def variant_replies(conn: sqlite3.Connection) -> list[VariantReplies]:
    """Reply rates per subject variant, for the templates whose sends used more than one variant.

    A recipient counts for the variant of their last send that went (or may have gone) out; a
    reply is any application status beyond `none`, as in `funnel`.
    """
    # max(l.id) picks the row the bare columns come from (https://www.sqlite.org/lang_select.html#bare_columns_in_an_aggregate_query).
    # The partial index send_log_variant holds exactly the rows of `last`, grouped, with its columns
    # (migration 16); grouping along send_log_recipient instead read every send through the index,
    # one random lookup each (2.3 s on a million sends).
    rows = conn.execute(
        "WITH last AS (SELECT l.recipient_id, l.template, l.subject_variant, max(l.id) FROM send_log l"
        "              INDEXED BY send_log_variant"
        "              WHERE l.status IN ('sent', 'unknown') AND l.subject_variant IS NOT NULL GROUP BY l.recipient_id)"
        " SELECT c.name, last.template, last.subject_variant, count(*),"
        "  count(*) FILTER (WHERE r.application_status != 'none')"
        " FROM last JOIN recipients r ON r.id = last.recipient_id JOIN campaigns c ON c.id = r.campaign_id"
        " GROUP BY c.id, last.template, last.subject_variant ORDER BY c.id, last.template, min(r.id)"
    ).fetchall()
    found = [VariantReplies(*row) for row in rows]
    groups: dict[tuple, int] = {}
    for v in found:
        groups[(v.campaign, v.template)] = groups.get((v.campaign, v.template), 0) + 1
    return [v for v in found if groups[(v.campaign, v.template)] > 1]


@dataclass(frozen=True)
class InboxMessage:
    """A message from the inbox that concerns one of our sends (ignored ones are not listed)."""

    kind: str  # reply, auto_reply, bounce, unsubscribe
    dated_at: str  # the message's Date, else when it was read
    from_email: str
    recipient_id: int | None
    email: str  # the address we wrote to
    company: str
    campaign: str
    subject: str
    snippet: str
    detail: str
    application_status: str

    def when(self, tz: tzinfo) -> str:
        """`dated_at` on the user's clock, to the minute."""
        return datetime.fromisoformat(self.dated_at).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def inbox_messages(conn: sqlite3.Connection, *, kinds: tuple[str, ...] | None = None,
                   limit: int = 200) -> list[InboxMessage]:
    """Replies, auto-replies, bounces and unsubscribes read from the inbox, newest first."""
    kinds = kinds or ("reply", "auto_reply", "bounce", "unsubscribe")
    marks = ",".join("?" * len(kinds))
    rows = conn.execute(
        "SELECT m.kind, COALESCE(m.dated_at, m.read_at), COALESCE(m.from_email, ''), m.recipient_id,"
        " COALESCE(r.email, ''), COALESCE(r.company, ''), COALESCE(c.name, ''), COALESCE(m.subject, ''),"
        " COALESCE(m.snippet, ''), COALESCE(m.detail, ''), COALESCE(r.application_status, 'none')"
        " FROM inbox_messages m LEFT JOIN recipients r ON r.id = m.recipient_id"
        " LEFT JOIN campaigns c ON c.id = r.campaign_id"
        f" WHERE m.kind IN ({marks}) ORDER BY COALESCE(m.dated_at, m.read_at) DESC, m.id DESC LIMIT ?",
        (*kinds, limit),
    ).fetchall()
    return [InboxMessage(*row) for row in rows]


def application_rows(conn: sqlite3.Connection, *, tz: tzinfo, limit: int = 200) -> list[dict]:
    """Recipients with an application status beyond `none`, most recently changed first; when,
    on the user's clock (`tz`) to the minute, as the replies beside them."""
    rows = conn.execute(
        "SELECT r.email, r.company, c.name AS campaign, r.application_status AS status,"
        " COALESCE(r.application_note, '') AS note, r.application_source AS set_by, r.application_changed_at AS changed_at"
        " FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE r.application_status != 'none'"
        " ORDER BY r.application_changed_at DESC, r.id DESC LIMIT ?", (limit,),
    ).fetchall()
    return [{**row, "changed_at": row["changed_at"] and datetime.fromisoformat(row["changed_at"]).astimezone(tz)
             .strftime("%Y-%m-%d %H:%M")} for row in map(dict, rows)]
