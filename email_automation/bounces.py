"""Every bounce and complaint, whoever reported it: SES events, SMTP refusals, DSNs from the inbox.

Each one is a row in `bounces` (stored once per report, keyed), which the circuit breaker counts.
Hard bounces and complaints suppress the address at once; soft (transient) bounces suppress it as
`soft_bounce` once three different sends to it came back. `record_bounce` is the entry point for
callers outside a transaction (the inbox watcher, the run after an SMTP refusal); `note_bounce`
runs inside the caller's transaction (the SES events handler).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from . import ledger, suppressions
from .database import audit, iso, transaction

Kind = Literal["hard", "soft", "complaint"]
HARD, SOFT, COMPLAINT = "hard", "soft", "complaint"
# Three transient bounces from three different sends: the mailbox is full for good, or gone
# behind a server that will not say so; mailing it again only adds to the bounce rate.
SOFT_BOUNCE_LIMIT = 3
SUPPRESS_REASONS = {HARD: "bounce", COMPLAINT: "complaint"}

# RFC 3463 enhanced status codes, class.subject.detail, at the start of an SMTP reply text.
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
# X.1.Y is the addressing subject (RFC 3463 §3.2). Not every 5.1.Y says the mailbox is gone:
# 5.1.7 and 5.1.8 are about the *sender's* address, and 5.1.9 is not a failure of the recipient.
_SENDER_OR_NOT_MAILBOX = {7, 8, 9}


@dataclass(frozen=True)
class BounceResult:
    """What recording one bounce did."""

    recorded: bool  # False: this report was stored before (a redelivery)
    suppressed: str | None = None  # the reason, when the address was newly suppressed
    skipped: int = 0  # pending recipients of that address now skipped


def enhanced_status(reply: str) -> str | None:
    """The RFC 3463 status (`5.1.1`) an SMTP reply text starts with, if any."""
    match = _ENHANCED.match(reply or "")
    return ".".join(match.groups()) if match else None


def mailbox_gone(status: str | None) -> bool:
    """Whether an enhanced status is a permanent failure of the recipient's address (5.1.x)."""
    if not status:
        return False
    klass, subject, detail = (int(part) for part in status.split("."))
    return klass == 5 and subject == 1 and detail not in _SENDER_OR_NOT_MAILBOX


def record_bounce(
    conn: sqlite3.Connection, email: str, *, kind: Kind = HARD, source: str, now: datetime,
    detail: str | None = None, attempt_id: str | None = None, message_id: str | None = None,
    dedupe_key: str | None = None,
) -> BounceResult:
    """Record one bounce or complaint in its own write transaction (see `note_bounce`).

    For the inbox watcher: `record_bounce(conn, addr, kind="hard", source="inbox",
    message_id=<the original Message-ID>, detail=<the DSN's Status and Diagnostic-Code>, now=...)`.
    """
    with transaction(conn):
        return note_bounce(conn, email, kind=kind, source=source, now=now, detail=detail,
                           attempt_id=attempt_id, message_id=message_id, dedupe_key=dedupe_key)


def note_bounce(
    conn: sqlite3.Connection, email: str, *, kind: Kind, source: str, now: datetime,
    detail: str | None = None, attempt_id: str | None = None, message_id: str | None = None,
    dedupe_key: str | None = None,
) -> BounceResult:
    """Store one bounce (once per `dedupe_key`) and suppress the address when it must be.

    Call inside a write transaction. The bounce is tied to the campaign of the send it answers
    (by attempt id, else message id, else the address's last send) so the breaker can pause
    that campaign alone.
    """
    from .addresses import lookup_form  # email-validator loads only once a bounce is stored

    address = lookup_form(email)
    key = dedupe_key or _key(source, address, kind, attempt_id, message_id, detail)
    attempt_id, campaign_id = _send_of(conn, address, attempt_id, message_id)
    added = conn.execute(
        "INSERT INTO bounces (dedupe_key, email, kind, source, campaign_id, attempt_id, message_id, detail, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
        (key, address, kind, source, campaign_id, attempt_id, message_id, detail, iso(now)),
    ).rowcount
    if not added:
        return BounceResult(False)
    reason = SUPPRESS_REASONS.get(kind)
    if kind == SOFT and soft_bounces(conn, address) >= SOFT_BOUNCE_LIMIT:
        reason = "soft_bounce"
    if reason is None:
        return BounceResult(True)
    done = suppress_in_transaction(conn, address, reason, source=source, detail=detail, now=now)
    return BounceResult(True, reason if done.added else None, done.skipped)


def soft_bounces(conn: sqlite3.Connection, email: str) -> int:
    """How many different sends to this address came back with a transient bounce."""
    return conn.execute(
        "SELECT count(DISTINCT COALESCE(attempt_id, message_id, dedupe_key)) FROM bounces WHERE email = ? AND kind = 'soft'",
        (email,),
    ).fetchone()[0]


@dataclass(frozen=True)
class Suppressed:
    """What one suppression did: the address's entry (first reason and date kept) and the pending
    recipients it skipped."""

    entry: suppressions.Suppression
    skipped: int

    @property
    def added(self) -> bool:
        """Whether the address was newly put on the list (else it keeps its first reason)."""
        return self.entry.added

    def message(self) -> str:
        e = self.entry
        done = f"{e.email} suppressed ({e.reason})" if e.added else (
            f"{e.email} was already suppressed on {e.since[:10]} ({e.reason}, from {e.source}); "
            "that reason and date are kept and this request is recorded in its history")
        return f"{done}; {self.skipped} pending recipient(s) skipped."


def suppress_in_transaction(conn: sqlite3.Connection, email: str, reason: str, *, source: str, now: datetime,
                            detail: str | None = None, actor: str | None = None) -> Suppressed:
    """Suppress inside the caller's transaction (suppressions.py keeps the first reason and the
    history); its pending recipients become skipped.

    A report (a bounce, an SES event) goes to `admin_log` when it suppressed; a person's request
    (`actor`: the CLI, the dashboard) goes there every time, as every hand-made action does.
    """
    entry = suppressions.add(conn, email, reason=reason, source=source, now=now)
    skipped = ledger.skip_pending_address(conn, email, entry.reason, now=now)
    if entry.added or actor:
        audit(conn, actor or source, "suppress", email, f"{reason}: {detail}" if detail else reason, now)
    return Suppressed(entry, skipped)


def _send_of(conn: sqlite3.Connection, email: str, attempt_id: str | None,
             message_id: str | None) -> tuple[str | None, int | None]:
    """(attempt id, campaign id) of the send a bounce answers, as well as it can be told."""
    if attempt_id or message_id:
        row = conn.execute(
            "SELECT l.attempt_id, r.campaign_id FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
            " WHERE l.attempt_id = ? OR (? IS NOT NULL AND l.message_id = ?) LIMIT 1",
            (attempt_id, message_id, message_id),
        ).fetchone()
        if row is not None:
            return row[0], row[1]
    row = conn.execute(
        "SELECT campaign_id FROM recipients WHERE email = ? AND (status IN ('sent', 'unknown', 'failed') OR step > 1)"
        " ORDER BY sent_at DESC, id DESC LIMIT 1", (email,),
    ).fetchone()
    return attempt_id, row[0] if row else None


def _key(*parts: str | None) -> str:
    return "sha256:" + hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()[:40]
