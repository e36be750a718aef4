"""The claimed-before-send state machine over `recipients` and `send_log`.

pending --claim--> sending --record--> sent | failed | pending (refused for now: the attempt is
`deferred`, retried next run) | unknown
A claim is committed before the message leaves; its send_log row counts toward the daily limit
from that moment. Whatever happens to the process afterwards, a recipient in `sending` or
`unknown` is never picked up again automatically: SES has no idempotency token, so the only
safe answer to "did it go out?" after a crash is to ask a person, unless the message itself
answers: an SES event tagged with the attempt, or a reply or bounce report read from the inbox.

This module alone writes send state: claim, record, recover, skip, and settle (from SES events,
an answer in the inbox, or a person's `resolve`, kept in `send_log.resolution`). `admin`,
`events`, `inbox_store` and `run_daily` ask it.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Literal, TypeVar

from . import applications, politeness, sequences
from .database import COUNTED_LOG_STATUSES, Patience, audit, iso, transaction
from .errors import SendError
from .imports import FINISHED

log = logging.getLogger("email_automation.ledger")
T = TypeVar("T")


@dataclass(frozen=True)
class Claim:
    """One committed send attempt: the recipient is `sending` and its log row exists."""

    log_id: int
    attempt_id: str
    recipient_id: int
    email: str
    step: int = 1


@dataclass(frozen=True)
class Held:
    """A claim refused for now by a per-company limit: the recipient stays pending for a later day."""

    reason: str


# The sendable queue, as FROM + WHERE over recipients `r` and campaigns `c`: pending, in an active
# campaign, not suppressed, not (maybe) mailed already in another campaign, from a finished
# import, and not someone who answered. The run picks its batch with it, and `status`, the
# dashboard and `preview` show it; claim() re-checks the rest (a finished import never becomes
# unfinished again), and also stops colleagues of someone who answered (applications.py).
QUEUE_FROM_WHERE = (
    " FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
    " WHERE r.status = 'pending' AND r.step = 1 AND c.status = 'active' AND r.application_status = 'none'"
    " AND r.email NOT IN (SELECT email FROM suppressions)"
    " AND NOT EXISTS (SELECT 1 FROM recipients o WHERE o.email = r.email AND o.id != r.id"
    "                 AND (o.status IN ('sending', 'sent', 'unknown') OR o.step > 1))"
    " AND " + FINISHED  # an import still running is not in the queue yet
)


def batch_date(moment: datetime, tz: tzinfo) -> str:
    """The day a send belongs to, in the user's time zone (the daily limit resets at its midnight)."""
    return moment.astimezone(tz).date().isoformat()


def counted_today(conn: sqlite3.Connection, day: str) -> int:
    """Attempts that may have reached a mailbox today: sending + sent + unknown."""
    marks = ",".join("?" * len(COUNTED_LOG_STATUSES))
    return conn.execute(
        f"SELECT count(*) FROM send_log WHERE batch_date = ? AND status IN ({marks})",
        (day, *COUNTED_LOG_STATUSES),
    ).fetchone()[0]


class DayTally:
    """The day's counted attempts for a group of claims in one transaction: read once, then each
    claim of the group adds its own (no other writer can add any before the group commits).
    Counting them again for every claim costs a scan of the day's attempts per message."""

    def __init__(self) -> None:
        self._day: str | None = None
        self._count = 0

    def count(self, conn: sqlite3.Connection, day: str) -> int:
        if day != self._day:
            self._day, self._count = day, counted_today(conn, day)
        return self._count

    def add(self, day: str) -> None:
        if day == self._day:
            self._count += 1


def remaining_today(conn: sqlite3.Connection, *, now: datetime, tz: tzinfo, daily_limit: int) -> int:
    """What is left of DAILY_LIMIT today: the one figure the run, `status` and the dashboard show."""
    return max(0, daily_limit - counted_today(conn, batch_date(now, tz)))


def batch_size(remaining: int, limit: int | None) -> int:
    """How many messages a run sends at most: what is left of today's limit, cut to `run --limit N`."""
    return remaining if limit is None else min(remaining, max(0, limit))


def already_contacted(conn: sqlite3.Connection, recipient_id: int, email: str) -> str | None:
    """Name of another campaign in which this address was (or may have been) mailed, if any."""
    row = conn.execute(
        "SELECT c.name FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
        " WHERE r.email = ? AND r.id != ? AND (r.status IN ('sending', 'sent', 'unknown') OR r.step > 1) LIMIT 1",
        (email, recipient_id),
    ).fetchone()
    return row[0] if row else None


def skip_reason(conn: sqlite3.Connection, recipient_id: int, email: str, *, stop_company: bool = True,
                company: str | None = None) -> str | None:
    """Why this address must not be mailed now (suppressed, mailed in another campaign, or a reply
    from it or, with `stop_company`, from its company), if so. `company`: the recipient's, when
    the caller has read it already."""
    suppressed = conn.execute("SELECT reason FROM suppressions WHERE email = ?", (email,)).fetchone()
    if suppressed is not None:
        return f"suppressed: {suppressed[0]}"
    contacted_in = already_contacted(conn, recipient_id, email)
    if contacted_in is not None:
        return _contacted_words(contacted_in)
    if company is None:
        found = conn.execute("SELECT company FROM recipients WHERE id = ?", (recipient_id,)).fetchone()
        company = found[0] if found else ""
    reason = applications.stop_reason(conn, email, company, stop_company=stop_company)
    return None if reason is None else applications.stopped_words(reason)


def _contacted_words(campaign: str) -> str:
    return f"already contacted in campaign {campaign!r}"


_CONTACTED_ELSEWHERE = ("(SELECT oc.name FROM recipients o JOIN campaigns oc ON oc.id = o.campaign_id"
                        " WHERE o.email = r.email AND o.id != r.id"
                        " AND (o.status IN ('sending', 'sent', 'unknown') OR o.step > 1) LIMIT 1)")


def swept(conn: sqlite3.Connection, *, stop_company: bool) -> list[tuple[sqlite3.Row, str]]:
    """The pending recipients the run's sweep (`run_daily.skip_unsendable`) skips before it plans,
    other than suppressed ones, each with the words it records (`skip_reason`): mailed in another
    campaign, or stopped by a reply. For `run --plan`, which must name them: the queue leaves
    them out silently. Set-based (one query, `applications.Answers` once), not a query each."""
    stopped, args = applications.stopped_condition(stop_company)
    rows = conn.execute(
        f"SELECT r.id, r.email, r.company, r.step, c.name AS campaign_name, {_CONTACTED_ELSEWHERE} AS contacted_in"
        " FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
        " WHERE r.status = 'pending' AND r.email NOT IN (SELECT email FROM suppressions)"
        f" AND ({stopped} OR {_CONTACTED_ELSEWHERE} IS NOT NULL) ORDER BY r.id", args).fetchall()
    answers = applications.Answers(conn) if rows else None
    found = []
    for row in rows:
        if row["contacted_in"] is not None:
            found.append((row, _contacted_words(row["contacted_in"])))
        elif reason := answers.stop_reason(row["email"], row["company"], stop_company=stop_company):
            found.append((row, applications.stopped_words(reason)))
    return found


def claim(
    conn: sqlite3.Connection, recipient_id: int, *, now: datetime, tz: tzinfo,
    daily_limit: int, subject: str, transport: str, stop_company: bool = True, step: int = 1,
    template: str | None = None, subject_variant: str | None = None, companies: politeness.Caps | None = None,
    tally: DayTally | None = None, message_id: str | None = None,
) -> Claim | Held | None:
    """Atomically move a pending recipient to `sending` and log the attempt, with the named
    `template` and the `subject_variant` (its subject template) the message was rendered from,
    and the `message_id` it will be delivered with when that is known before it leaves (SMTP
    sends our Message-ID header as is): a send left `sending` by a killed run can then still be
    answered (the inbox matches the reply) and followed up in its thread once settled as sent.

    For a follow-up (`step` > 1) the recipient must have been `sent` the step before (or be
    `pending` at this step after a refusal); the move to `sending` at `step` happens once, so
    never-twice holds per (recipient, step). What stops a sequence is recorded in
    `sequence_stopped` instead of skipping: the recipient was mailed and stays `sent`.

    Returns None when the recipient is no longer pending (another run took it), its campaign is
    paused, or the daily limit is reached; a recipient whose address is suppressed or was (maybe)
    mailed in another campaign since the batch was picked, or who (or, with `stop_company`, whose
    company) answered, becomes `skipped` instead. With `companies`, a first message that would
    exceed a per-company limit is `Held` (the recipient stays pending). All of it is checked
    inside the same write transaction, so two overlapping runs can never exceed the limits, claim
    one recipient twice, or mail one address from two campaigns. `tally`: the group's count of the
    day's attempts, for claims made together in the caller's transaction (see `DayTally`).
    """
    day = batch_date(now, tz)
    attempt_id = uuid.uuid4().hex
    with transaction(conn):
        counted = tally.count(conn, day) if tally is not None else counted_today(conn, day)
        if counted >= daily_limit:
            return None
        row = conn.execute(
            "SELECT r.email, r.company, r.status, r.campaign_id FROM recipients r"
            " JOIN campaigns c ON c.id = r.campaign_id"
            " WHERE r.id = ? AND c.status = 'active' AND ((r.status = 'pending' AND r.step = ?)"
            " OR (? > 1 AND r.status = 'sent' AND r.step = ? - 1 AND r.sequence_stopped IS NULL))",
            (recipient_id, step, step, step),
        ).fetchone()
        if row is None:
            return None
        if step > 1:
            reason = sequences.stop_reason(conn, row["email"], row["company"], stop_company=stop_company)
        else:
            reason = skip_reason(conn, recipient_id, row["email"], stop_company=stop_company,
                                 company=row["company"] or "")
        if reason is not None:
            if step > 1:
                stop_sequence(conn, recipient_id, reason, now=now)
            else:
                conn.execute(
                    "UPDATE recipients SET status = 'skipped', last_error = ?, updated_at = ? WHERE id = ?",
                    (reason, iso(now), recipient_id),
                )
            return None
        if step == 1 and companies is not None and (
                held := politeness.claim_refusal(conn, row, day, companies, counted_today=counted)):
            return Held(f"company limit: {held}")
        conn.execute(
            "UPDATE recipients SET status = 'sending', step = ?,"
            " attempts = CASE WHEN status = 'sent' THEN 1 ELSE attempts + 1 END, updated_at = ? WHERE id = ?",
            (step, iso(now), recipient_id),
        )
        log_id = conn.execute(
            "INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, subject, transport,"
            " template, subject_variant, step, message_id) VALUES (?, ?, ?, ?, 'sending', ?, ?, ?, ?, ?, ?)",
            (recipient_id, attempt_id, day, iso(now), subject, transport, template, subject_variant, step, message_id),
        ).lastrowid
        if tally is not None:
            tally.add(day)
    return Claim(log_id, attempt_id, recipient_id, row["email"], step)


def stop_sequence(conn: sqlite3.Connection, recipient_id: int, reason: str, *, now: datetime) -> bool:
    """No further step for this recipient, for good (call inside a transaction); False if already stopped."""
    return conn.execute(
        "UPDATE recipients SET sequence_stopped = ?, updated_at = ? WHERE id = ? AND sequence_stopped IS NULL",
        (reason, iso(now), recipient_id),
    ).rowcount == 1


def record_sent(conn: sqlite3.Connection, c: Claim, message_id: str, *, now: datetime, note: str | None = None,
                patience: Patience | None = None) -> None:
    """The provider accepted the message; `note` keeps what it refused before (throttling retries).

    With `patience`, a locked database is waited out (see `Patience`) rather than failing.
    """
    def write() -> None:
        with transaction(conn):
            record_sent_many(conn, [(c, message_id, note)], now=now)

    _write(write, patience, f"that {c.email} was sent as {message_id}")


def record_sent_many(conn: sqlite3.Connection, sent: list[tuple[Claim, str, str | None]], *, now: datetime) -> None:
    """`record_sent` for several (claim, message id, note) at once, inside the caller's transaction
    (its two statements stand or fall together): two statements for all of them, where a savepoint
    and two statements each cost twice the CPU."""
    if not conn.in_transaction:
        raise RuntimeError("record_sent_many must run inside a transaction")
    at = iso(now)
    conn.executemany("UPDATE send_log SET status = 'sent', message_id = ?, finished_at = ?, error = ? WHERE id = ?",
                     [(message_id, at, note, c.log_id) for c, message_id, note in sent])
    conn.executemany("UPDATE recipients SET status = 'sent', sent_at = ?, last_error = NULL, updated_at = ?"
                     " WHERE id = ?", [(at, at, c.recipient_id) for c, _, _ in sent])


def _write(write: Callable[[], T], patience: Patience | None, what: str) -> T:
    return write() if patience is None else patience.run(write, what)


def record_failure(
    conn: sqlite3.Connection, c: Claim, err: SendError, *, now: datetime, max_attempts: int,
    patience: Patience | None = None, earlier: Sequence[SendError] = (),
) -> str:
    """Record a send that did not (certainly) go out; returns the recipient's new status.

    Ambiguous -> unknown (never retried automatically); permanent -> failed; fatal, or transient
    before the recipient was named (`SendError.before_recipient`) -> pending with the attempt
    `deferred` and given back (the account or the relay, not the recipient, is at fault: a relay
    down for days must not fail the queue's first recipients); other transient -> pending with the
    attempt `deferred` until `max_attempts` attempts were made, then failed. A deferred attempt
    never counts toward the daily limit: nothing left. `earlier`: the refusals of this attempt's
    tries before `err`; if one of them named the recipient (an RCPT 4xx, then a greeting refused on
    the next connection), the attempt counts.
    """
    error = f"{err.code}: {err}" if err.code else str(err)
    refund = 0
    if err.error_class == "ambiguous":
        log_status = new_status = "unknown"
    elif err.error_class == "permanent":
        log_status = new_status = "failed"
    elif err.error_class == "fatal" or err.before_recipient and all(e.before_recipient for e in earlier):
        log_status, new_status, refund = "deferred", "pending", 1
    else:
        attempts = conn.execute("SELECT attempts FROM recipients WHERE id = ?", (c.recipient_id,)).fetchone()[0]
        new_status = "failed" if attempts >= max_attempts else "pending"
        log_status = "failed" if new_status == "failed" else "deferred"

    def write() -> None:
        with transaction(conn):
            conn.execute(
                "UPDATE send_log SET status = ?, error = ?, error_class = ?, finished_at = ? WHERE id = ?",
                (log_status, error, err.error_class, iso(now), c.log_id),
            )
            conn.execute(
                "UPDATE recipients SET status = ?, last_error = ?, attempts = attempts - ?, updated_at = ? WHERE id = ?",
                (new_status, error, refund, iso(now), c.recipient_id),
            )

    _write(write, patience, f"that the send to {c.email} ended {log_status}")
    return new_status


def give_back(conn: sqlite3.Connection, c: Claim, *, now: datetime, patience: Patience | None = None) -> None:
    """Undo the claim of a message that never left (the run stopped, or the circuit breaker closed,
    before its turn): nothing was attempted, so its log row goes and the recipient is pending
    again, as a refused-for-now attempt leaves it (`record_failure`), counted nowhere."""
    def write() -> None:
        with transaction(conn):
            if conn.execute("DELETE FROM send_log WHERE id = ? AND status = 'sending'", (c.log_id,)).rowcount:
                conn.execute("UPDATE recipients SET status = 'pending', attempts = attempts - 1, updated_at = ?"
                             " WHERE id = ? AND status = 'sending'", (iso(now), c.recipient_id))

    _write(write, patience, f"that the message to {c.email} was not sent")


def log_dry_run(
    conn: sqlite3.Connection, recipient_id: int, *, now: datetime, tz: tzinfo,
    subject: str, message_id: str, transport: str,
) -> None:
    """A dry-run attempt: logged for the record, no recipient status changes, never counted."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, finished_at, status,"
            " message_id, subject, transport) VALUES (?, ?, ?, ?, ?, 'dry_run', ?, ?, ?)",
            (recipient_id, uuid.uuid4().hex, batch_date(now, tz), iso(now), iso(now), message_id, subject, transport),
        )


def mark_skipped(conn: sqlite3.Connection, recipient_id: int, reason: str, *, now: datetime) -> bool:
    """Skip a pending recipient (suppressed, or mailed in another campaign); False if not pending."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE recipients SET status = 'skipped', last_error = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
            (reason, iso(now), recipient_id),
        )
    return cur.rowcount == 1


def skip_pending_address(conn: sqlite3.Connection, address: str, reason: str, *, now: datetime) -> int:
    """Every pending recipient with this address becomes skipped (call inside a transaction)."""
    return conn.execute(
        "UPDATE recipients SET status = 'skipped', last_error = ?, updated_at = ? WHERE email = ? AND status = 'pending'",
        (f"suppressed: {reason}", iso(now), address),
    ).rowcount


def requeue_unsuppressed(conn: sqlite3.Connection, address: str, reason: str, *, now: datetime) -> int:
    """Undo `skip_pending_address` once the address is off the list (call inside a transaction):
    its recipients skipped as `suppressed: reason` go back to pending, so an unsuppress is not a
    promise nothing keeps. Only while no attempt to the address, in any campaign, may have reached
    it (counted, or resolved as not sent and then reported by SES: `disputed`): never twice comes
    first. Anyone skipped for another reason stays."""
    marks = ",".join("?" * len(COUNTED_LOG_STATUSES))
    return conn.execute(
        "UPDATE recipients SET status = 'pending', last_error = NULL, updated_at = ?"
        " WHERE email = ? AND status = 'skipped' AND last_error = ? AND step = 1"
        f" AND NOT EXISTS (SELECT 1 FROM recipients a JOIN send_log l ON l.recipient_id = a.id"
        f"                 WHERE a.email = recipients.email AND (l.status IN ({marks}) OR l.resolution = 'disputed'))"
        " AND NOT EXISTS (SELECT 1 FROM recipients o WHERE o.email = recipients.email AND o.id != recipients.id"
        "                 AND (o.status IN ('sending', 'sent', 'unknown') OR o.step > 1))",
        (iso(now), address, f"suppressed: {reason}", *COUNTED_LOG_STATUSES),
    ).rowcount


def mark_unsendable(conn: sqlite3.Connection, recipient_id: int, reason: str, *, now: datetime) -> None:
    """No message can be built for this address: failed without an attempt (nothing was sent)."""
    with transaction(conn):
        conn.execute(
            "UPDATE recipients SET status = 'failed', last_error = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
            (reason, iso(now), recipient_id),
        )


def recover_interrupted(conn: sqlite3.Connection, *, now: datetime) -> int:
    """Turn attempts left in `sending` by a killed run into `unknown`; returns how many.

    Call only while holding the run lock, or a live run's in-flight claim would be taken for dead.
    """
    note = "run interrupted while sending: the message may have gone out; settle with `email-automation resolve`"
    with transaction(conn):
        conn.execute(
            "UPDATE send_log SET status = 'unknown', error = ?, error_class = 'ambiguous', finished_at = ?"
            " WHERE status = 'sending'",
            (note, iso(now)),
        )
        cur = conn.execute(
            "UPDATE recipients SET status = 'unknown', last_error = ?, updated_at = ? WHERE status = 'sending'",
            (note, iso(now)),
        )
    return cur.rowcount


# --- changes a person asks for (admin.py audits them) -------------------------------------------


def skip_by_hand(conn: sqlite3.Connection, recipient_ids: list[int], *, actor: str, now: datetime) -> None:
    """Never send to these recipients (pending or failed) again; a recipient already sent a step
    keeps `sent` and its sequence stops. Call inside a transaction."""
    conn.executemany(
        "UPDATE recipients SET status = 'skipped', last_error = ?, updated_at = ? WHERE id = ?"
        " AND status IN ('pending', 'failed')",
        [(f"skipped by {actor}", iso(now), i) for i in recipient_ids],
    )
    for i in recipient_ids:
        stop_sequence(conn, i, f"skipped by {actor}", now=now)


def requeue_failed(conn: sqlite3.Connection, *, campaign_id: int | None, now: datetime) -> int:
    """Failed recipients back to pending with a fresh attempt count, suppressed ones left failed."""
    sql = ("UPDATE recipients SET status = 'pending', attempts = 0, updated_at = ? WHERE status = 'failed'"
           " AND email NOT IN (SELECT email FROM suppressions)")
    args: list = [iso(now)]
    if campaign_id is not None:
        sql += " AND campaign_id = ?"
        args.append(campaign_id)
    return conn.execute(sql, args).rowcount


# --- settling attempts whose outcome was in doubt -----------------------------------------------
# `send_log.resolution` says how: `sent` or `failed` (from SES events or a person), `pending` (a
# person decided it did not go out: the attempt is `deferred` and the recipient may be mailed
# again), `disputed` (settled as pending, and SES reported the send afterwards).

NOT_SENT_KINDS = frozenset({"REJECTED", "RENDERING_FAILED"})  # SES took the call but sent nothing


def seen_by_ses(conn: sqlite3.Connection, recipient_ids: list[int]) -> str | None:
    """The SES event kinds stored for these recipients' `unknown` attempts, if any (proof it was sent)."""
    marks = ",".join("?" * len(recipient_ids))
    return conn.execute(
        "SELECT GROUP_CONCAT(DISTINCT e.kind) FROM send_log l JOIN ses_events e ON e.attempt_id = l.attempt_id"
        f" WHERE l.recipient_id IN ({marks}) AND l.status = 'unknown' AND e.kind != 'UNKNOWN'",
        recipient_ids,
    ).fetchone()[0]


def resolve_by_hand(conn: sqlite3.Connection, recipient_ids: list[int], outcome: Literal["sent", "pending"], *,
                    actor: str, now: datetime) -> None:
    """A person's decision on `unknown` recipients (call inside a transaction).

    `sent`: it arrived. `pending`: it certainly did not, so the attempt is `deferred` (not counted
    toward the daily limit) and the next run may send it again.
    """
    log_status = "sent" if outcome == "sent" else "deferred"
    for rid in recipient_ids:
        conn.execute(
            "UPDATE send_log SET status = ?, resolution = ?, error = COALESCE(error, '') || ?"
            " WHERE recipient_id = ? AND status = 'unknown'",
            (log_status, outcome, f" [resolved as {outcome} by {actor}]", rid),
        )
        conn.execute(
            "UPDATE recipients SET status = ?, sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END,"
            " last_error = ?, updated_at = ? WHERE id = ? AND status = 'unknown'",
            (outcome, outcome, iso(now), f"resolved as {outcome} by {actor}", iso(now), rid),
        )


def settle_answered(conn: sqlite3.Connection, log_id: int, *, why: str, actor: str, now: datetime) -> bool:
    """An `unknown` attempt that someone answered (a reply, an auto-reply, a bounce report) went
    out: settle it as sent, as of when it was attempted (call inside a transaction). The safe
    direction: a message counted sent is never sent again. False if it was not `unknown`."""
    row = conn.execute("SELECT l.recipient_id, l.attempted_at, r.email FROM send_log l JOIN recipients r"
                       " ON r.id = l.recipient_id WHERE l.id = ? AND l.status = 'unknown'", (log_id,)).fetchone()
    if row is None:
        return False
    note = f"resolved as sent by {actor}: {why}"
    conn.execute("UPDATE send_log SET status = 'sent', resolution = 'sent', error = COALESCE(error, '') || ?,"
                 " finished_at = COALESCE(finished_at, ?) WHERE id = ?", (f" [{note}]", iso(now), log_id))
    conn.execute("UPDATE recipients SET status = 'sent', sent_at = ?, last_error = ?, updated_at = ?"
                 " WHERE id = ? AND status = 'unknown'", (row["attempted_at"], note, iso(now), row["recipient_id"]))
    audit(conn, actor, "resolve-sent", row["email"], note, now)
    return True


@dataclass
class Settled:
    """What `settle_from_events` did: attempts settled, and one line per change for a person."""

    count: int = 0
    notes: list[str] = field(default_factory=list)


SETTLE_CANDIDATES_SQL = (
    "SELECT l.id, l.status, l.recipient_id, l.attempted_at, r.email, MAX(e.message_id) AS message_id,"
    " MIN(e.event_at) AS first_seen,"
    " GROUP_CONCAT(DISTINCT e.kind) AS kinds"
    " FROM send_log l JOIN ses_events e ON e.attempt_id = l.attempt_id JOIN recipients r ON r.id = l.recipient_id"
    " WHERE e.kind != 'UNKNOWN' AND l.id IN ("
    "   SELECT id FROM send_log WHERE status = 'unknown'"
    "   UNION SELECT s.id FROM ses_events x CROSS JOIN send_log s ON s.attempt_id = x.attempt_id"
    "   WHERE x.kind IN ('REJECTED', 'RENDERING_FAILED') AND s.status = 'sent')"
    " GROUP BY l.id ORDER BY l.id"
)


def settle_from_events(conn: sqlite3.Connection, *, actor: str, now: datetime) -> Settled:
    """Settle attempts from the SES events stored so far (call inside a transaction).

    `unknown` attempts that some event names: SES accepted them, so they were sent, unless SES's
    only word on them is that it rejected the content (or could not render it): then they were
    not, and neither were `sent` attempts SES rejected after accepting the call. Runs over every
    stored event: one that arrived while its attempt was still `sending` (the run died later)
    settles it once the next run has marked it `unknown`. Both candidate sets come through an
    index: the open attempts, and the attempts named by a Reject or Rendering Failure event.
    """
    settled = Settled()
    for row in conn.execute(SETTLE_CANDIDATES_SQL).fetchall():
        kinds = set(row["kinds"].split(","))
        if kinds <= {"SENT", *NOT_SENT_KINDS} and kinds & NOT_SENT_KINDS:
            status, verdict = "failed", "not sent"
        elif row["status"] == "unknown":
            status, verdict = "sent", "sent"
        else:
            continue  # sent, and a Delivery (or the like) says so despite the Reject
        note = f"resolved as {verdict} by {actor}: SES reported {row['kinds']}"
        conn.execute(
            "UPDATE send_log SET status = ?, resolution = ?, message_id = COALESCE(message_id, ?),"
            " error = COALESCE(error, '') || ?, finished_at = COALESCE(finished_at, ?) WHERE id = ?",
            (status, status, row["message_id"], f" [{note}]", iso(now), row["id"]),
        )
        conn.execute(
            # sent_at: when SES first reported this attempt (a follow-up's wait counts from it); the
            # recipient's still held the step before's when this step's outcome was unknown.
            "UPDATE recipients SET status = ?, sent_at = CASE WHEN ? = 'sent' THEN ? END,"
            " last_error = ?, updated_at = ? WHERE id = ? AND status = ?",
            (status, status, row["first_seen"] or row["attempted_at"], note, iso(now), row["recipient_id"], row["status"]),
        )
        audit(conn, actor, f"resolve-{status}", row["email"], note, now)
        settled.count += 1
        settled.notes.append(f"{row['email']}: unknown send reconciled as {verdict} (SES {row['kinds']}, {row['message_id']})")
    _flag_sends_resolved_as_pending(conn, settled, actor=actor, now=now)
    return settled


RESOLVED_PENDING_SQL = (
    "SELECT l.id, l.recipient_id, r.email, MAX(e.message_id) AS message_id, MIN(e.event_at) AS first_seen,"
    " GROUP_CONCAT(DISTINCT e.kind) AS kinds"
    " FROM send_log l JOIN ses_events e ON e.attempt_id = l.attempt_id JOIN recipients r ON r.id = l.recipient_id"
    " WHERE l.resolution = 'pending' AND e.kind NOT IN ('UNKNOWN', 'REJECTED', 'RENDERING_FAILED')"
    " GROUP BY l.id ORDER BY l.id"
)


def _flag_sends_resolved_as_pending(conn: sqlite3.Connection, settled: Settled, *, actor: str, now: datetime) -> None:
    """An event for an attempt a person had resolved as not sent: the first message did go out.

    The person must learn it: once per attempt (its resolution becomes `disputed`), a note on the
    log row, an admin_log row and a warning. If no second message was handed over since (the
    recipient waits in the queue, or was skipped while it waited), it and the attempt become
    `sent`: what status shows, and what keeps the address from another campaign's queue. Once a
    second message has been handed over, nothing can be undone. Events that prove nothing went
    out do not count.
    """
    flag = "[SES later reported this send"
    for row in conn.execute(RESOLVED_PENDING_SQL).fetchall():
        if row["kinds"] == "SENT" and conn.execute(
            "SELECT 1 FROM ses_events e JOIN send_log l ON l.attempt_id = e.attempt_id"
            " WHERE l.id = ? AND e.kind IN ('REJECTED', 'RENDERING_FAILED')", (row["id"],)).fetchone():
            continue  # SES took it, then did not send it after all
        held = conn.execute(
            "UPDATE recipients SET status = 'sent', sent_at = COALESCE(sent_at, ?), last_error = ?, updated_at = ?"
            " WHERE id = ? AND status IN ('pending', 'skipped')"
            f" AND NOT EXISTS (SELECT 1 FROM send_log l WHERE l.recipient_id = recipients.id AND l.id != ?"
            f"                 AND l.status IN ({','.join('?' * len(COUNTED_LOG_STATUSES))}))",
            (row["first_seen"] or iso(now), f"SES reported {row['kinds']} for a send resolved as not sent",
             iso(now), row["recipient_id"], row["id"], *COUNTED_LOG_STATUSES),
        ).rowcount
        if held:
            note = (f"{flag}: {row['kinds']}; it had been resolved as not sent, so it is now sent and the "
                    "recipient is not mailed again]")
        else:
            note = f"{flag}: {row['kinds']}; it had been resolved as not sent, so this address may have two messages]"
        conn.execute(
            "UPDATE send_log SET status = CASE WHEN ? THEN 'sent' ELSE status END, resolution = 'disputed',"
            " message_id = COALESCE(message_id, ?), error = COALESCE(error, '') || ? WHERE id = ?",
            (held, row["message_id"], f" {note}", row["id"]),
        )
        audit(conn, actor, "duplicate-risk", row["email"], note, now)
        settled.notes.append(f"{row['email']}: {note.strip('[]')}")
        log.warning("%s: %s", row["email"], note.strip("[]"))
