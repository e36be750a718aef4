"""Hand-made decisions over recipients and campaigns, shared by the CLI and the dashboard.

Each action runs in one write transaction and leaves an `admin_log` row saying who did what.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Literal

from .addresses import lookup_form
from .circuit_breaker import lift_in_transaction
from .database import get_campaign, iso, transaction, utc_now
from .errors import EmailAutomationError, NotFoundError


def normalize_email(email: str) -> str:
    """The form addresses are stored and compared in (see addresses.py)."""
    return lookup_form(email)


def _audit(conn: sqlite3.Connection, actor: str, action: str, target: str, detail: str, now: datetime) -> None:
    conn.execute(
        "INSERT INTO admin_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        (iso(now), actor, action, target, detail),
    )


def _recipient_ids(conn: sqlite3.Connection, email: str, campaign: str | None, statuses: tuple[str, ...]) -> list[int]:
    sql = "SELECT r.id FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE r.email = ?"
    args: list = [normalize_email(email)]
    if campaign:
        sql += " AND c.name = ?"
        args.append(campaign)
    if statuses:
        sql += f" AND r.status IN ({','.join('?' * len(statuses))})"
        args.extend(statuses)
    return [row[0] for row in conn.execute(sql, args)]


def set_campaign_status(conn: sqlite3.Connection, name: str, status: Literal["active", "paused"],
                        *, actor: str = "cli", now: datetime | None = None) -> None:
    """Pause or resume a campaign: a paused campaign's recipients are left out of runs."""
    now = now or utc_now()
    with transaction(conn):
        get_campaign(conn, name)
        conn.execute("UPDATE campaigns SET status = ? WHERE name = ?", (status, name))
        if status == "active":  # only an explicit resume lifts the circuit breaker's pause
            lift_in_transaction(conn, name, actor=actor, now=now)
        _audit(conn, actor, "pause" if status == "paused" else "resume", name, "", now)


def skip_recipient(conn: sqlite3.Connection, email: str, *, campaign: str | None = None,
                   actor: str = "cli", now: datetime | None = None) -> int:
    """Never send to this pending (or failed) recipient; returns how many rows changed."""
    now = now or utc_now()
    with transaction(conn):
        ids = _recipient_ids(conn, email, campaign, ("pending", "failed"))
        if not ids:
            raise NotFoundError(f"{normalize_email(email)}: no pending or failed recipient with that address")
        conn.executemany(
            "UPDATE recipients SET status = 'skipped', last_error = ?, updated_at = ? WHERE id = ?",
            [(f"skipped by {actor}", iso(now), i) for i in ids],
        )
        _audit(conn, actor, "skip", normalize_email(email), campaign or "", now)
    return len(ids)


def retry_failed(conn: sqlite3.Connection, *, campaign: str | None = None,
                 actor: str = "cli", now: datetime | None = None) -> int:
    """Put failed recipients back in the queue with a fresh attempt count; returns how many.

    Suppressed addresses stay failed: a bounce or complaint is not something to retry.
    """
    now = now or utc_now()
    sql = ("UPDATE recipients SET status = 'pending', attempts = 0, updated_at = ? WHERE status = 'failed'"
           " AND email NOT IN (SELECT email FROM suppressions)")
    args: list = [iso(now)]
    with transaction(conn):
        if campaign:
            sql += " AND campaign_id = ?"
            args.append(get_campaign(conn, campaign)["id"])
        count = conn.execute(sql, args).rowcount
        _audit(conn, actor, "retry-failed", campaign or "(all campaigns)", f"{count} recipients", now)
    return count


def suppress(conn: sqlite3.Connection, email: str, *, reason: str = "manual", source: str = "cli",
             actor: str = "cli", now: datetime | None = None) -> int:
    """Never mail this address again, in any campaign; pending copies become skipped."""
    now = now or utc_now()
    address = normalize_email(email)
    if "@" not in address:
        raise EmailAutomationError(f"{email!r} is not an email address")
    with transaction(conn):
        conn.execute(
            "INSERT INTO suppressions (email, reason, source, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (email) DO UPDATE SET reason = excluded.reason, source = excluded.source",
            (address, reason, source, iso(now)),
        )
        count = conn.execute(
            "UPDATE recipients SET status = 'skipped', last_error = ?, updated_at = ? WHERE email = ? AND status = 'pending'",
            (f"suppressed: {reason}", iso(now), address),
        ).rowcount
        _audit(conn, actor, "suppress", address, reason, now)
    return count


def unsuppress(conn: sqlite3.Connection, email: str, *, actor: str = "cli", now: datetime | None = None) -> None:
    """Allow mail to this address again (recipients already skipped stay skipped)."""
    now = now or utc_now()
    address = normalize_email(email)
    with transaction(conn):
        if conn.execute("DELETE FROM suppressions WHERE email = ?", (address,)).rowcount == 0:
            raise NotFoundError(f"{address}: not on the suppression list")
        _audit(conn, actor, "unsuppress", address, "", now)


def resolve_unknown(conn: sqlite3.Connection, email: str, outcome: Literal["sent", "pending"], *,
                    campaign: str | None = None, actor: str = "cli", now: datetime | None = None) -> int:
    """Settle recipients whose last send may or may not have gone out.

    `sent`: the message did arrive (e.g. seen in the SES console); `pending`: it certainly did
    not, so it may be sent again by the next run. The attempt's log row follows the decision, so
    the daily limit counts it only if it went out.
    """
    now = now or utc_now()
    with transaction(conn):
        ids = _recipient_ids(conn, email, campaign, ("unknown",))
        if not ids:
            raise NotFoundError(f"{normalize_email(email)}: no recipient in unknown state with that address")
        if outcome == "pending":
            _refuse_if_ses_saw_it(conn, ids, normalize_email(email))
        log_status = "sent" if outcome == "sent" else "failed"
        for rid in ids:
            conn.execute(
                "UPDATE send_log SET status = ?, error = COALESCE(error, '') || ? WHERE recipient_id = ? AND status = 'unknown'",
                (log_status, f" [resolved as {outcome} by {actor}]", rid),
            )
            conn.execute(
                "UPDATE recipients SET status = ?, sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END,"
                " last_error = ?, updated_at = ? WHERE id = ?",
                (outcome, outcome, iso(now), f"resolved as {outcome} by {actor}", iso(now), rid),
            )
        _audit(conn, actor, f"resolve-{outcome}", normalize_email(email), campaign or "", now)
    return len(ids)


def _refuse_if_ses_saw_it(conn: sqlite3.Connection, recipient_ids: list[int], address: str) -> None:
    """A stored SES event tagged with the attempt's id proves SES accepted it: never send it again."""
    marks = ",".join("?" * len(recipient_ids))
    row = conn.execute(
        "SELECT GROUP_CONCAT(DISTINCT e.kind) FROM send_log l JOIN ses_events e ON e.attempt_id = l.attempt_id"
        f" WHERE l.recipient_id IN ({marks}) AND l.status = 'unknown' AND e.kind != 'UNKNOWN'",
        recipient_ids,
    ).fetchone()
    if row[0]:
        raise EmailAutomationError(
            f"{address}: SES reported {row[0]} for this send, so it went out and must not be sent again; "
            f"resolve it as sent (`email-automation resolve {address} --sent`)"
        )
