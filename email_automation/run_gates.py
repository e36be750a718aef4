"""What may cap the day or stop a send before its claim: warm-up, the circuit breaker, SES's own lists.

run_daily asks these between picking the batch and claiming each message; none of them sends.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from . import circuit_breaker, warmup
from .config import Settings
from .ledger import batch_date

if TYPE_CHECKING:  # botocore loads only for an SES run
    from . import ses_contacts, ses_suppression

log = logging.getLogger("email_automation.run")


def within_warmup(settings: Settings, conn: sqlite3.Connection, now: datetime) -> Settings:
    """The settings with today's DAILY_LIMIT capped by WARMUP_SCHEDULE's step, if one applies."""
    today = warmup.limit_for(conn, settings.daily_limit, settings.warmup_schedule, batch_date(now, settings.tz))
    if today.note:
        log.info(today.note)
    return settings.model_copy(update={"daily_limit": today.limit})


def open_pause_lines(conn: sqlite3.Connection) -> list[str]:
    """The circuit breaker's open pauses, logged: a paused campaign is not even in the batch, but
    the user must read why nothing of it went out."""
    lines = [p.line() for p in circuit_breaker.open_pauses(conn)]
    for line in lines:
        log.error(line)
    return lines


def all_paused(conn: sqlite3.Connection) -> str | None:
    """Why all sending is paused, or None."""
    pause = circuit_breaker.active_pause(conn, circuit_breaker.ALL)
    return pause.line() if pause else None


class Breaker:
    """Asks the circuit breaker before each send; a campaign found paused is not asked about again.

    A campaign found clear is counted again only once `circuit_breaker.change_marker` moves (a
    bounce, a complaint, a pause or a resume, from this run or another process) or `RECOUNT_AFTER`
    has passed (old sends leave the window): counting the window's sends before every message cost
    two scans of the week's send_log per message, a run of n messages O(n²). Sends of the run
    itself only lower the rates.

    New pauses are appended to `paused` (the run's report); `stop` says why, once all sending is paused.
    """

    RECOUNT_AFTER = timedelta(seconds=60)

    def __init__(self, conn: sqlite3.Connection, thresholds: circuit_breaker.Thresholds, paused: list[str]) -> None:
        self.conn, self.thresholds, self.paused = conn, thresholds, paused
        self.held: set[str] = set()
        self.stop: str | None = None
        self._clear: dict[str, tuple[tuple, datetime]] = {}  # campaign -> (marker, when) of its last clear count

    def holds(self, campaign: str, now: datetime) -> bool:
        """Whether a send to `campaign` must not happen now."""
        if campaign in self.held:
            return True
        marker = circuit_breaker.change_marker(self.conn)
        last = self._clear.get(campaign)
        if last is not None and last[0] == marker and timedelta(0) <= now - last[1] < self.RECOUNT_AFTER:
            return False
        pause = circuit_breaker.check(self.conn, self.thresholds, campaign, now=now)
        if pause is None:
            self._clear[campaign] = (marker, now)
            return False
        if pause.line() not in self.paused:
            self.paused.append(pause.line())
            log.error(pause.line())
        if pause.scope == circuit_breaker.ALL:
            self.stop = pause.line()
        self.held.add(campaign)
        return True


@dataclass
class SesGate:
    """What SES itself would refuse, asked before each claim of a real SES run: an address on the
    account-level suppression list, or a contact who unsubscribed (both bounce and count)."""

    suppression: ses_suppression.SuppressionList | None
    contacts: ses_contacts.ContactList | None

    @classmethod
    def for_run(cls, settings: Settings, conn: sqlite3.Connection, transport, *, now) -> SesGate | None:
        client = getattr(transport, "client", None)
        if transport.name != "ses" or client is None:
            return None
        from . import ses_contacts, ses_suppression

        return cls(ses_suppression.prepare(conn, client, settings, now=now()), ses_contacts.for_run(client, settings))

    def refusal(self, conn: sqlite3.Connection, email: str, *, now: datetime) -> str | None:
        """`suppressed: ...` when the address must be skipped (it is now suppressed here too)."""
        if self.suppression is not None and self.suppression.listed(conn, email, now=now):
            from .ses_suppression import REASON

            return f"suppressed: {REASON}"
        if self.contacts is not None and self.contacts.refuses(conn, email, now=now):
            return "suppressed: unsubscribe"
        return None
