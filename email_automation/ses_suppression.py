"""SES's account-level suppression list, kept in step with the local one.

SES accepts a message to an address on that list, counts it as a send and answers with a bounce
(https://docs.aws.amazon.com/ses/latest/dg/sending-email-suppression-list.html): each one uses
quota and raises the bounce rate for nothing. So a real SES run first reads the list
(ListSuppressedDestinations, only what changed since the last read) and suppresses those addresses
locally with reason `ses`. Where the credentials may not list it (a least-privilege policy often
grants only GetSuppressedDestination), each address is looked up before its claim instead, and the
answer kept for CHECK_TTL. With SES_PUSH_SUPPRESSIONS our own hard bounces and complaints go onto
SES's list too (PutSuppressedDestination), a second net for any other tool sending from the account.

Every SES call here is an optimisation: a failure is logged and never stops a run (in the SES
sandbox the suppression-list API is disabled altogether).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .addresses import lookup_form
from .bounces import suppress_in_transaction
from .database import iso, transaction
from .transports.aws import error_message, one_line

log = logging.getLogger("email_automation.ses")

REASON = "ses"  # suppressions.reason of an address SES had on its list
SOURCE = "ses-suppression-list"
CHECK_TTL = timedelta(days=7)
_SYNCED = "ses_suppression_list_synced_at"  # sync_state row: the last complete read of the list
# Our reasons SES's list has a place for (PutSuppressedDestination takes BOUNCE or COMPLAINT).
PUSHED_REASONS = {"bounce": "BOUNCE", "complaint": "COMPLAINT"}
_PAGE_SIZE = 1000  # the most ListSuppressedDestinations returns per page


@dataclass
class SuppressionList:
    """One run's view of SES's list: read once at the start, or asked address by address."""

    client: Any
    synced: bool = False  # the whole list was read this run: no lookups needed
    usable: bool = True  # False once a lookup failed: the run goes on without them

    def listed(self, conn: sqlite3.Connection, email: str, *, now: datetime) -> bool:
        """Whether `email` is on SES's list (then it is now suppressed locally as `ses`)."""
        if self.synced or not self.usable:
            return False
        cached = conn.execute("SELECT listed, checked_at FROM ses_suppression_checks WHERE email = ?",
                              (email,)).fetchone()
        if cached is not None and datetime.fromisoformat(cached[1]) > now - CHECK_TTL:
            return bool(cached[0])
        found = self._lookup(email)
        if found is None:
            return False
        with transaction(conn):
            conn.execute("INSERT INTO ses_suppression_checks (email, listed, checked_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (email) DO UPDATE SET listed = excluded.listed, checked_at = excluded.checked_at",
                         (email, int(found is not False), iso(now)))
            if found:
                suppress_in_transaction(conn, email, REASON, source=SOURCE, detail=found, now=now)
        return bool(found)

    def _lookup(self, email: str) -> str | bool | None:
        """SES's reason for listing `email`, False when it is not listed, None when SES would not say."""
        try:
            found = self.client.get_suppressed_destination(EmailAddress=email)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "NotFoundException":
                return False
            self._give_up("GetSuppressedDestination", err)
            return None
        except BotoCoreError as err:
            self._give_up("GetSuppressedDestination", err)
            return None
        return f"on SES's account-level suppression list ({found['SuppressedDestination'].get('Reason', '?')})"

    def _give_up(self, call: str, err: Exception) -> None:
        self.usable = False
        log.warning("SES suppression list not checked (%s: %s); the local list alone applies this run",
                    call, _describe(err))


def prepare(conn: sqlite3.Connection, client: Any, settings: Any, *, now: datetime) -> SuppressionList | None:
    """At the start of a real SES run: push our suppressions if asked, then read SES's list."""
    if not settings.ses_suppression_check and not settings.ses_push_suppressions:
        return None
    if settings.ses_push_suppressions:
        push(conn, client, now=now)
    view = SuppressionList(client, usable=settings.ses_suppression_check)
    if settings.ses_suppression_check:
        view.synced = sync(conn, client, now=now) is not None
    return view


def sync(conn: sqlite3.Connection, client: Any, *, now: datetime) -> int | None:
    """Suppress locally every address SES listed since the last sync; returns how many were new,
    or None when SES would not hand the list out (then addresses are looked up one by one)."""
    last = conn.execute("SELECT value FROM sync_state WHERE name = ?", (_SYNCED,)).fetchone()
    request: dict[str, Any] = {"PageSize": _PAGE_SIZE}
    if last:
        # A little overlap: an address listed while the last read was under way is read again.
        request["StartDate"] = datetime.fromisoformat(last[0]) - timedelta(hours=1)
    try:
        listed = _all_pages(client, request)
    except (ClientError, BotoCoreError) as err:
        log.warning("SES suppression list not read (ListSuppressedDestinations: %s); looking addresses up "
                    "one by one instead", _describe(err))
        return None
    added = 0
    with transaction(conn):
        for item in listed:
            done = suppress_in_transaction(
                conn, lookup_form(item["EmailAddress"]), REASON, source=SOURCE,
                detail=f"on SES's account-level suppression list ({item.get('Reason', '?')})", now=now)
            added += done.added
        conn.execute("INSERT INTO sync_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                     (_SYNCED, iso(now)))
    if added:
        log.info("%d address(es) on SES's account-level suppression list are now suppressed here too", added)
    return added


def _all_pages(client: Any, request: dict[str, Any]) -> list[dict]:
    items, token = [], None
    while True:
        page = client.list_suppressed_destinations(**request, **({"NextToken": token} if token else {}))
        items.extend(page.get("SuppressedDestinationSummaries", []))
        token = page.get("NextToken")
        if not token:
            return items


def push(conn: sqlite3.Connection, client: Any, *, now: datetime) -> int:
    """Put our hard bounces and complaints not yet pushed onto SES's list; returns how many went."""
    marks = ",".join("?" * len(PUSHED_REASONS))
    rows = conn.execute(
        f"SELECT email, reason FROM suppressions WHERE reason IN ({marks}) AND source != ?"
        " AND email NOT IN (SELECT email FROM ses_suppression_pushed) ORDER BY created_at",
        (*PUSHED_REASONS, SOURCE),
    ).fetchall()
    pushed = 0
    for email, reason in rows:
        try:
            client.put_suppressed_destination(EmailAddress=email, Reason=PUSHED_REASONS[reason])
        except (ClientError, BotoCoreError) as err:
            log.warning("SES suppression list not updated (PutSuppressedDestination: %s); trying again next run",
                        _describe(err))
            break
        with transaction(conn):
            conn.execute("INSERT OR IGNORE INTO ses_suppression_pushed (email, reason, pushed_at) VALUES (?, ?, ?)",
                         (email, reason, iso(now)))
        pushed += 1
    return pushed


def _describe(err: Exception) -> str:
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        return f"{error.get('Code')}: {error_message(err)}"
    return f"{type(err).__name__}: {one_line(err)}"
