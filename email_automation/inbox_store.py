"""The database side of reading the inbox: find the sends a message concerns, store each message
once, apply what it means, and move the mailbox's read mark, all in one transaction per message.

So a crash, a bad message or a lost connection never loses the mark of what was already read,
and a message seen again (a second read, or every message after a UIDVALIDITY reset) is a no-op.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import applications, bounces, ledger
from .database import iso, transaction
from .mail_classify import Classification, SentRef, normalize_subject

SOURCE = "inbox"  # suppressions.source and admin_log.actor of everything done here
# Attempts that may have reached someone who can answer: `sending` too, which a killed run leaves
# until the next run's recovery makes it `unknown` (its reply must still stop the follow-ups).
_SENT_STATUSES = "('sent', 'unknown', 'sending')"


class DbSentLookup:
    """`mail_classify.SentLookup` over send_log."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def by_message_ids(self, ids: Sequence[str]) -> SentRef | None:
        for message_id in ids:
            candidates = delivered_id_forms(message_id)
            marks = ",".join("?" * len(candidates))
            row = self.conn.execute(
                "SELECT l.id, l.recipient_id, r.email, l.subject FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
                f" WHERE l.message_id IN ({marks}) AND l.status IN {_SENT_STATUSES} ORDER BY l.id DESC LIMIT 1",
                candidates,
            ).fetchone()
            if row is not None:
                return SentRef(*row)
        return None

    def by_address(self, email: str) -> list[SentRef]:
        rows = self.conn.execute(
            "SELECT l.id, l.recipient_id, r.email, l.subject FROM recipients r JOIN send_log l ON l.recipient_id = r.id"
            f" WHERE r.email = ? AND l.status IN {_SENT_STATUSES} ORDER BY l.id DESC LIMIT 20",
            (email,),
        ).fetchall()
        return [SentRef(*row) for row in rows]


def delivered_id_forms(message_id: str) -> tuple[str, ...]:
    """How send_log may hold the send that a header's Message-ID names.

    SMTP sends store the Message-ID header we set. SES replaces it with `<MessageId@REGION.amazonses.com>`
    built from the MessageId its API returned, which is what send_log stores ("Amazon SES header
    fields": https://docs.aws.amazon.com/ses/latest/dg/header-fields.html); the domain varies by
    region (email.amazonses.com, eu-west-1.amazonses.com, ...), so the local part is what matches.
    """
    bare = message_id.strip().strip("<>")
    local, _, domain = bare.rpartition("@")
    forms = [f"<{bare}>", bare]
    if local and domain.lower().endswith("amazonses.com"):
        forms.append(local)
    return tuple(forms)


def dedupe_key(message_id: str | None, raw_headers: bytes) -> str:
    """A message's identity across reads and UIDVALIDITY resets: its Message-ID, else its headers' hash."""
    if message_id:
        return f"mid:{message_id}"
    return "sha256:" + hashlib.sha256(raw_headers).hexdigest()


@dataclass(frozen=True)
class Position:
    """Where a message sits in the mailbox: UIDs are only meaningful with their UIDVALIDITY (RFC 3501 §2.3.1.1)."""

    mailbox: str
    uidvalidity: int
    uid: int


def read_mark(conn: sqlite3.Connection, mailbox: str) -> tuple[int, int] | None:
    """(UIDVALIDITY, highest UID read) of this mailbox, or None before its first read."""
    row = conn.execute("SELECT uidvalidity, last_uid FROM inbox_state WHERE mailbox = ?", (mailbox,)).fetchone()
    return (row[0], row[1]) if row else None


def set_mark(conn: sqlite3.Connection, position: Position, *, now: datetime) -> None:
    """Move the read mark to `position` (a new UIDVALIDITY replaces the old mark)."""
    conn.execute(
        "INSERT INTO inbox_state (mailbox, uidvalidity, last_uid, read_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (mailbox) DO UPDATE SET last_uid = CASE WHEN uidvalidity = excluded.uidvalidity"
        "   THEN max(last_uid, excluded.last_uid) ELSE excluded.last_uid END,"
        " uidvalidity = excluded.uidvalidity, read_at = excluded.read_at",
        (position.mailbox, position.uidvalidity, position.uid, iso(now)),
    )


def store(conn: sqlite3.Connection, position: Position, key: str, found: Classification, *, now: datetime) -> list[str] | None:
    """Record one message and apply it, with the read mark, in one transaction.

    Returns what changed, as lines for the log; None when the message was stored before (a second
    read, or a re-read after a UIDVALIDITY reset), which then changes nothing but the mark.
    """
    with transaction(conn):
        set_mark(conn, position, now=now)
        sent = found.sent
        new = conn.execute(
            "INSERT INTO inbox_messages (dedupe_key, mailbox, uidvalidity, uid, kind, recipient_id, send_log_id,"
            " from_email, subject, snippet, message_id, dated_at, detail, read_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
            (key, position.mailbox, position.uidvalidity, position.uid, found.kind,
             sent.recipient_id if sent else None, sent.log_id if sent else None,
             *_shown(found), found.message_id, iso(found.date) if found.date else None, found.detail, iso(now)),
        ).rowcount
        if not new:
            return None
        return _apply(conn, found, now)


def _shown(found: Classification) -> tuple[str | None, str | None, str | None]:
    """From, subject and snippet are kept only for messages about our sends (an ignored one is not ours)."""
    if found.kind == "ignored":
        return None, None, None
    return found.from_email, found.subject[:300], found.snippet


def _apply(conn: sqlite3.Connection, found: Classification, now: datetime) -> list[str]:
    settled = [_settle_unknown(conn, ref, found.kind, found.subject, found.date, now) for ref in _answered(found)]
    return [line for line in settled if line] + _act(conn, found, now)


def settle_recovered(conn: sqlite3.Connection, *, now: datetime) -> list[str]:
    """Settle the sends a run's recovery just made `unknown` that a message read while they were
    still `sending` (left so by a killed run) answers, as `_settle_unknown` would have at the read;
    returns a line per send settled."""
    rows = conn.execute(
        "SELECT m.kind, COALESCE(m.subject, ''), m.dated_at, l.id, l.recipient_id, r.email, l.subject"
        " FROM send_log l JOIN inbox_messages m ON m.send_log_id = l.id JOIN recipients r ON r.id = l.recipient_id"
        " WHERE l.status = 'unknown' AND m.kind != 'ignored' ORDER BY m.id").fetchall()
    lines = []
    with transaction(conn):
        for kind, subject, dated_at, *ref in rows:
            date = datetime.fromisoformat(dated_at) if dated_at else None
            if line := _settle_unknown(conn, SentRef(*ref), kind, subject, date, now):
                lines.append(line)
    return lines


def _answered(found: Classification) -> list[SentRef]:
    """The sends this message shows to have reached someone (or their server)."""
    if found.kind == "bounce":
        return [b.sent for b in found.bounces]
    return [found.sent] if found.sent is not None else []


# How far a message's Date may lag the attempt it answers: the writer's clock may be wrong by this much.
CLOCK_SKEW = timedelta(minutes=15)


def _settle_unknown(conn: sqlite3.Connection, ref: SentRef, kind: str, subject: str, date: datetime | None,
                    now: datetime) -> str | None:
    """A send whose outcome was unknown and that this message (its `kind`, `subject` and Date)
    answers went out: settled as sent,
    so it no longer waits for a person's decision. Only when no other send to the address could be
    the one answered: a send of the same subject (a follow-up's is its first message's), or any
    when the match was by address alone (an auto-reply, a bounce report); and only for a message
    dated after the attempt (`CLOCK_SKEW` aside): an out-of-office or a report written before it
    answers something else."""
    row = conn.execute("SELECT subject, attempted_at FROM send_log WHERE id = ? AND status = 'unknown'",
                       (ref.log_id,)).fetchone()
    if row is None or date is None or date < datetime.fromisoformat(row[1]) - CLOCK_SKEW:
        return None
    sent_subject = normalize_subject(row[0] or "")
    by_subject = sent_subject == normalize_subject(subject)
    others = conn.execute(
        "SELECT l.subject FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
        f" WHERE r.email = ? AND l.id != ? AND l.status IN {_SENT_STATUSES}", (ref.email, ref.log_id)).fetchall()
    if any(not by_subject or normalize_subject(other or "") == sent_subject for (other,) in others):
        return None
    what = {"bounce": "a delivery report", "auto_reply": "an automatic reply", "unsubscribe": "an unsubscribe request"}
    why = f"{what.get(kind, 'a reply')} answered it"
    ledger.settle_answered(conn, ref.log_id, why=why, actor=SOURCE, now=now)
    return f"{ref.email}: the send whose outcome was unknown went out ({why}): settled as sent"


def _act(conn: sqlite3.Connection, found: Classification, now: datetime) -> list[str]:
    if found.kind == "reply":
        changed = applications.record_reply(conn, found.sent.recipient_id, now=now, note=f"reply: {found.subject}"[:300])
        return [f"{found.sent.email} replied" + ("" if changed else " (status kept)") + f": {found.subject}"]
    if found.kind == "unsubscribe":
        return [suppress(conn, found.sent.email, "unsubscribe", found.detail, now)]
    if found.kind == "bounce":
        return [_bounce(conn, b, now) for b in found.bounces]
    return []


def _bounce(conn: sqlite3.Connection, bounce, now: datetime) -> str:
    """A delivery report: a permanent failure is a hard bounce, a failure for now (4.x.x) a soft one;
    bounces.py counts both for the circuit breaker and suppresses as it must."""
    status, email = bounce.status, bounce.sent.email
    detail = f"{status.status} {status.diagnostic}".strip()
    attempt = conn.execute("SELECT attempt_id FROM send_log WHERE id = ?", (bounce.sent.log_id,)).fetchone()
    kind = bounces.HARD if status.permanent else bounces.SOFT if status.action == "failed" else None
    if kind is None:
        return f"{email}: delivery {status.action} ({status.status or 'no status'}), recorded only"
    if kind == bounces.HARD:
        conn.execute("UPDATE send_log SET bounced_at = COALESCE(bounced_at, ?), bounce_status = ? WHERE id = ?",
                     (iso(now), detail[:500], bounce.sent.log_id))
    result = bounces.note_bounce(conn, email, kind=kind, source=SOURCE, now=now, detail=detail[:500],
                                 attempt_id=attempt[0] if attempt else None)
    if kind == bounces.SOFT and not result.suppressed:
        return f"{email}: delivery failed for now ({status.status or 'no status'}), counted as a soft bounce"
    return _suppressed_line(email, result.suppressed or "bounce", bool(result.suppressed), result.skipped)


def suppress(conn: sqlite3.Connection, email: str, reason: str, detail: str, now: datetime) -> str:
    """Suppress inside the caller's transaction; an address already listed keeps its first reason."""
    done = bounces.suppress_in_transaction(conn, email, reason, source=SOURCE, detail=detail[:500], now=now)
    return _suppressed_line(email, reason, done.added, done.skipped)


def _suppressed_line(email: str, reason: str, added: bool, skipped: int) -> str:
    return f"{email} suppressed ({reason}{'' if added else ', already listed'}); {skipped} pending recipient(s) skipped"
