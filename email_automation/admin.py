"""Hand-made decisions over recipients and campaigns, shared by the CLI and the dashboard.

Each action runs in one write transaction and leaves an `admin_log` row saying who did what.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from . import ledger, suppressions
from .addresses import lookup_form
from .bounces import Suppressed, suppress_in_transaction
from .circuit_breaker import lift_in_transaction
from .database import audit, get_campaign, transaction, utc_now
from .errors import InvalidInputError, NotFoundError
from .sequences import sequence_running


def _recipient_ids(conn: sqlite3.Connection, email: str, campaign: str | None, statuses: tuple[str, ...]) -> list[int]:
    sql = "SELECT r.id FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE r.email = ?"
    args: list = [lookup_form(email)]
    if campaign:
        get_campaign(conn, campaign)  # a misspelt campaign is named as such, not as a missing recipient
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
        audit(conn, actor, "pause" if status == "paused" else "resume", name, "", now)


def skip_recipient(conn: sqlite3.Connection, email: str, *, campaign: str | None = None,
                   actor: str = "cli", now: datetime | None = None) -> int:
    """Never send to this pending (or failed) recipient, nor a follow-up to a sent one; returns how many rows changed."""
    now = now or utc_now()
    with transaction(conn):
        ids = _recipient_ids(conn, email, campaign, ("pending", "failed"))
        ids += [i for i in _recipient_ids(conn, email, campaign, ("sent",)) if sequence_running(conn, i)]
        if not ids:
            raise NotFoundError(f"{lookup_form(email)}: no pending or failed recipient with that address")
        ledger.skip_by_hand(conn, ids, actor=actor, now=now)
        audit(conn, actor, "skip", lookup_form(email), campaign or "", now)
    return len(ids)


def retry_failed(conn: sqlite3.Connection, *, campaign: str | None = None,
                 actor: str = "cli", now: datetime | None = None) -> int:
    """Put failed recipients back in the queue with a fresh attempt count; returns how many.

    Suppressed addresses stay failed: a bounce or complaint is not something to retry.
    """
    now = now or utc_now()
    with transaction(conn):
        campaign_id = get_campaign(conn, campaign)["id"] if campaign else None
        count = ledger.requeue_failed(conn, campaign_id=campaign_id, now=now)
        audit(conn, actor, "retry-failed", campaign or "(all campaigns)", f"{count} recipients", now)
    return count


def suppress(conn: sqlite3.Connection, email: str, *, reason: str = "manual", source: str = "cli",
             actor: str = "cli", now: datetime | None = None) -> Suppressed:
    """Never mail this address again, in any campaign; pending copies become skipped.

    An address already on the list keeps its first reason and date (an unsubscribe is legally
    relevant); the new request is recorded in its history.
    """
    now = now or utc_now()
    address = lookup_form(email)
    if "@" not in address:
        raise InvalidInputError(f"{email!r} is not an email address")
    with transaction(conn):
        return suppress_in_transaction(conn, address, reason, source=source, actor=actor, now=now)


@dataclass(frozen=True)
class Unsuppressed:
    """An address taken off the list, and how many of the recipients its suppression had skipped
    are back in the queue."""

    email: str
    requeued: int
    stopped: int = 0  # follow-up sequences the suppression stopped: they stay stopped

    def message(self) -> str:
        kept = (f"; {self.stopped} follow-up sequence(s) the suppression stopped stay stopped (a stopped sequence "
                "never starts again)") if self.stopped else ""
        return f"{self.email} may be mailed again; {self.requeued} recipient(s) back in the queue{kept}."


def unsuppress(conn: sqlite3.Connection, email: str, *, actor: str = "cli",
               now: datetime | None = None) -> Unsuppressed:
    """Allow mail to this address again: the recipients its suppression skipped, and that were
    never (maybe) mailed, are pending again (`ledger.requeue_unsuppressed`); anyone skipped for
    another reason stays skipped. Any reason may be lifted, a bounce or complaint too: a person decides.

    The entry's reason and date stay in the suppression history.
    """
    now = now or utc_now()
    address = lookup_form(email)
    with transaction(conn):
        reason = suppressions.remove(conn, address, source=actor, now=now)
        if reason is None:
            raise NotFoundError(f"{address}: not on the suppression list")
        requeued = ledger.requeue_unsuppressed(conn, address, reason, now=now)
        stopped = conn.execute("SELECT count(*) FROM recipients WHERE email = ? AND sequence_stopped LIKE 'suppressed: %'",
                               (address,)).fetchone()[0]
        audit(conn, actor, "unsuppress", address, "", now)
    return Unsuppressed(address, requeued, stopped)


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
            raise NotFoundError(f"{lookup_form(email)}: no recipient in unknown state with that address")
        if outcome == "pending":
            _refuse_if_ses_saw_it(conn, ids, lookup_form(email))
        ledger.resolve_by_hand(conn, ids, outcome, actor=actor, now=now)
        audit(conn, actor, f"resolve-{outcome}", lookup_form(email), campaign or "", now)
    return len(ids)


def _refuse_if_ses_saw_it(conn: sqlite3.Connection, recipient_ids: list[int], address: str) -> None:
    """A stored SES event tagged with the attempt's id proves SES accepted it: never send it again."""
    kinds = ledger.seen_by_ses(conn, recipient_ids)
    if kinds:
        raise InvalidInputError(  # the request is refused, not the tool failing: exit 2
            f"{address}: SES reported {kinds} for this send, so it went out and must not be sent again; "
            f"resolve it as sent (`email-automation resolve {address} --sent`)"
        )
