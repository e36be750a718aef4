"""The claimed-before-send state machine over `recipients` and `send_log`.

pending --claim--> sending --record--> sent | failed | pending (transient, retried next run) | unknown
A claim is committed before the message leaves; its send_log row counts toward the daily limit
from that moment. Whatever happens to the process afterwards, a recipient in `sending` or
`unknown` is never picked up again automatically: SES has no idempotency token, so the only
safe answer to "did it go out?" after a crash is to ask a person.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, tzinfo

from .database import COUNTED_LOG_STATUSES, iso, transaction
from .errors import SendError
from .imports import FINISHED


@dataclass(frozen=True)
class Claim:
    """One committed send attempt: the recipient is `sending` and its log row exists."""

    log_id: int
    attempt_id: str
    recipient_id: int
    email: str


# The sendable queue, as FROM + WHERE over recipients `r` and campaigns `c`: pending, in an active
# campaign, not suppressed, not (maybe) mailed already in another campaign, and from a finished
# import. The run picks its batch with it, and `status`, the dashboard and `preview` show it;
# claim() re-checks the rest (a finished import never becomes unfinished again).
QUEUE_FROM_WHERE = (
    " FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
    " WHERE r.status = 'pending' AND c.status = 'active'"
    " AND r.email NOT IN (SELECT email FROM suppressions)"
    " AND NOT EXISTS (SELECT 1 FROM recipients o WHERE o.email = r.email AND o.id != r.id"
    "                 AND o.status IN ('sending', 'sent', 'unknown'))"
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


def already_contacted(conn: sqlite3.Connection, recipient_id: int, email: str) -> str | None:
    """Name of another campaign in which this address was (or may have been) mailed, if any."""
    row = conn.execute(
        "SELECT c.name FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
        " WHERE r.email = ? AND r.id != ? AND r.status IN ('sending', 'sent', 'unknown') LIMIT 1",
        (email, recipient_id),
    ).fetchone()
    return row[0] if row else None


def skip_reason(conn: sqlite3.Connection, recipient_id: int, email: str) -> str | None:
    """Why this address must not be mailed now (suppressed, or mailed in another campaign), if so."""
    suppressed = conn.execute("SELECT reason FROM suppressions WHERE email = ?", (email,)).fetchone()
    if suppressed is not None:
        return f"suppressed: {suppressed[0]}"
    contacted_in = already_contacted(conn, recipient_id, email)
    return None if contacted_in is None else f"already contacted in campaign {contacted_in!r}"


def claim(
    conn: sqlite3.Connection, recipient_id: int, *, now: datetime, tz: tzinfo,
    daily_limit: int, subject: str, transport: str,
) -> Claim | None:
    """Atomically move a pending recipient to `sending` and log the attempt.

    Returns None when the recipient is no longer pending (another run took it), its campaign is
    paused, or the daily limit is reached; a recipient whose address is suppressed or was (maybe)
    mailed in another campaign since the batch was picked becomes `skipped` instead. All of it is
    checked inside the same write transaction, so two overlapping runs can never exceed the
    limit, claim one recipient twice, or mail one address from two campaigns.
    """
    day = batch_date(now, tz)
    attempt_id = uuid.uuid4().hex
    with transaction(conn):
        if counted_today(conn, day) >= daily_limit:
            return None
        row = conn.execute(
            "SELECT r.email FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
            " WHERE r.id = ? AND r.status = 'pending' AND c.status = 'active'",
            (recipient_id,),
        ).fetchone()
        if row is None:
            return None
        reason = skip_reason(conn, recipient_id, row["email"])
        if reason is not None:
            conn.execute(
                "UPDATE recipients SET status = 'skipped', last_error = ?, updated_at = ? WHERE id = ?",
                (reason, iso(now), recipient_id),
            )
            return None
        conn.execute(
            "UPDATE recipients SET status = 'sending', attempts = attempts + 1, updated_at = ? WHERE id = ?",
            (iso(now), recipient_id),
        )
        log_id = conn.execute(
            "INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, subject, transport)"
            " VALUES (?, ?, ?, ?, 'sending', ?, ?)",
            (recipient_id, attempt_id, day, iso(now), subject, transport),
        ).lastrowid
    return Claim(log_id, attempt_id, recipient_id, row["email"])


def record_sent(conn: sqlite3.Connection, c: Claim, message_id: str, *, now: datetime, note: str | None = None) -> None:
    """The provider accepted the message; `note` keeps what it refused before (throttling retries)."""
    with transaction(conn):
        conn.execute(
            "UPDATE send_log SET status = 'sent', message_id = ?, finished_at = ?, error = ? WHERE id = ?",
            (message_id, iso(now), note, c.log_id),
        )
        conn.execute(
            "UPDATE recipients SET status = 'sent', sent_at = ?, last_error = NULL, updated_at = ? WHERE id = ?",
            (iso(now), iso(now), c.recipient_id),
        )


def record_failure(
    conn: sqlite3.Connection, c: Claim, err: SendError, *, now: datetime, max_attempts: int,
) -> str:
    """Record a send that did not (certainly) go out; returns the recipient's new status.

    Ambiguous -> unknown (never retried automatically); permanent -> failed; fatal -> pending
    with the attempt not counted (the account, not the recipient, is at fault); transient ->
    pending until `max_attempts` attempts were made, then failed.
    """
    error = f"{err.code}: {err}" if err.code else str(err)
    refund = 0
    if err.error_class == "ambiguous":
        log_status = new_status = "unknown"
    elif err.error_class == "permanent":
        log_status = new_status = "failed"
    elif err.error_class == "fatal":
        log_status, new_status, refund = "failed", "pending", 1
    else:
        log_status = "failed"
        attempts = conn.execute("SELECT attempts FROM recipients WHERE id = ?", (c.recipient_id,)).fetchone()[0]
        new_status = "failed" if attempts >= max_attempts else "pending"
    with transaction(conn):
        conn.execute(
            "UPDATE send_log SET status = ?, error = ?, error_class = ?, finished_at = ? WHERE id = ?",
            (log_status, error, err.error_class, iso(now), c.log_id),
        )
        conn.execute(
            "UPDATE recipients SET status = ?, last_error = ?, attempts = attempts - ?, updated_at = ? WHERE id = ?",
            (new_status, error, refund, iso(now), c.recipient_id),
        )
    return new_status


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
