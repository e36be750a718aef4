"""What one incoming message means to the outreach: a reply, an auto-reply, a bounce, an
unsubscribe, or nothing of ours (ignored). Pure: the sends it may answer come from `SentLookup`.

Order matters: a delivery report is checked first (it quotes our message, so it would look like a
reply), then the automatic-answer signals (a vacation notice also names our message), then an
unsubscribe request, then a reply. Only messages that concern a send of ours are anything but
ignored, so a newsletter with `Precedence: bulk` stays ignored.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Protocol

from . import dsn
from .database import INBOX_KINDS

KINDS = INBOX_KINDS  # reply, auto_reply, bounce, unsubscribe, ignored: the schema CHECKs the same list
SNIPPET_CHARS = 300

# Subjects of automatic answers, in the languages job seekers meet most (Exchange, Gmail, Apple Mail).
_AUTO_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto(matic)?[- ]?(reply|response)|out of (the )?office|abwesenheitsnotiz|"
    r"automatische antwort|réponse automatique|respuesta automática|risposta automatica|"
    r"automatisch antwoord|autosvar|automaattinen vastaus|vacation|away from (the )?office)\b",
    re.IGNORECASE,
)
# Reply and forward prefixes mail clients put in front of a subject (Re, AW, SV, Antw, Réf, ...).
_PREFIX = re.compile(r"^\s*((re|aw|sv|vs|antw|ant|odp|r|rif|ref|réf|fw|fwd|wg|tr)\s*(\[\d+\])?\s*:\s*)+",
                     re.IGNORECASE)
# A line that asks only to be taken off the list, in the words people use ("Unsubscribe me", "Please
# take me off your mailing list", "Stop emailing me"); a line that goes on to say more is a reply.
_UNSUBSCRIBE = re.compile(
    r"^\W*(please\s+)?(unsubscribe(\s+me)?|remove\s+me|take\s+me\s+off|opt[\s-]*out|"
    r"stop(\s+(e-?mailing|mailing|contacting|writing\s+to)\s+me)?)\b[\s\W]*"
    r"(((from|off)\s+)?(your|this|the)\s+((mailing|e-?mail|contact)\s+)?list)?"
    r"([\s,]*(please|thanks?(\s+you)?))?[\s.!]*$",
    re.IGNORECASE,
)
# Where the quoted original starts in a reply's text: nothing from there on is the sender's own words.
_QUOTE_START = re.compile(
    r"^(>|On .{0,200}wrote:\s*$|Am .{0,200}schrieb.*$|Le .{0,200}a écrit\s*:\s*$|-+\s*Original Message\s*-+|"
    r"-+\s*Ursprüngliche Nachricht\s*-+|From:\s|Von:\s|De\s*:\s|_{10,})",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SentRef:
    """One send of ours that an incoming message may concern."""

    log_id: int
    recipient_id: int
    email: str
    subject: str | None


class SentLookup(Protocol):
    def by_message_ids(self, ids: Sequence[str]) -> SentRef | None:
        """The send whose delivered Message-ID is one of `ids` (as written in the headers)."""

    def by_address(self, email: str) -> list[SentRef]:
        """Sends to this address, newest first."""


@dataclass(frozen=True)
class Bounce:
    status: dsn.RecipientStatus
    sent: SentRef


@dataclass(frozen=True)
class Classification:
    kind: str
    sent: SentRef | None  # the send it answers (reply, auto-reply, unsubscribe)
    from_email: str
    subject: str
    snippet: str
    message_id: str | None
    date: datetime | None
    detail: str  # why it got this kind, shown beside it
    bounces: tuple[Bounce, ...] = field(default=())


def classify(msg: Message, sent: SentLookup, own: Collection[str] = ()) -> Classification:
    """Classify one parsed message; odd or broken input is classified or ignored, never raised on.

    `own`: our addresses (SENDER_EMAIL, REPLY_TO), lower-cased. A message from one of them is a
    copy of our own mail (a follow-up in Gmail's All Mail, a forward to ourselves): its thread
    headers name our send, yet nobody answered it.
    """
    base = dict(from_email=_from_address(msg), subject=header(msg, "Subject"), message_id=_message_id(msg),
                date=_date(msg))
    if dsn.is_delivery_report(msg):
        return _delivery_report(msg, sent, base)
    if base["from_email"] and base["from_email"] in own:
        # A group or list at our address (REPLY_TO a Google Group) rewrites From to itself and
        # names the person who wrote in Reply-To or X-Original-From: that is their reply.
        writer = next((a for a in _addresses(msg, "Reply-To", "X-Original-From") if a not in own), "")
        if not writer:
            return Classification("ignored", None, snippet="", detail="our own message", **base)
        base["from_email"] = writer
    answered, how = _answered_send(msg, sent, base["from_email"], base["subject"])
    if answered is None:
        return Classification("ignored", None, snippet="", detail="not about a message we sent", **base)
    own = own_lines(msg)
    words = _clip(own)
    auto = _auto_signal(msg, base["subject"])
    if auto:
        return Classification("auto_reply", answered, snippet=words, detail=auto, **base)
    first = next((line for line in own if line.strip()), "")
    if _UNSUBSCRIBE.match(_PREFIX.sub("", base["subject"])) or _UNSUBSCRIBE.match(first):
        return Classification("unsubscribe", answered, snippet=words, detail=f"asks to be removed ({how})", **base)
    return Classification("reply", answered, snippet=words, detail=how, **base)


def _delivery_report(msg: Message, sent: SentLookup, base: dict) -> Classification:
    report = dsn.parse_report(msg)
    by_id = sent.by_message_ids(report.original_message_ids) if report.original_message_ids else None
    bounces = []
    for status in report.recipients:
        if status.action not in ("failed", "delayed"):
            continue  # a success notice (delivered, relayed, expanded) changes nothing
        # The returned message names the send; its address wins when the only recipient reported is
        # another one (a forwarding address or alias that failed further down the line).
        if by_id is not None and (by_id.email == status.email or len(report.recipients) == 1):
            match = by_id
        else:
            match = next(iter(sent.by_address(status.email)), None)
        if match is not None:
            bounces.append(Bounce(status, match))
    if not bounces:
        return Classification("ignored", None, snippet="", detail="delivery report for an address we did not mail", **base)
    detail = "; ".join(f"{b.status.email} {b.status.action} {b.status.status} {b.status.diagnostic}".strip()
                       for b in bounces)
    return Classification("bounce", bounces[0].sent, snippet="", detail=detail[:500], bounces=tuple(bounces), **base)


def _answered_send(msg: Message, sent: SentLookup, sender: str, subject: str) -> tuple[SentRef | None, str]:
    """The send this message answers and how we know: its thread headers, else sender + subject."""
    ids = referenced_ids(msg)
    if ids:
        match = sent.by_message_ids(ids)
        if match is not None:
            return match, "In-Reply-To/References name our message"
    ours = sent.by_address(sender) if sender else []
    wanted = normalize_subject(subject)
    for ref in ours:
        if ref.subject and normalize_subject(ref.subject) == wanted:
            return ref, "from an address we wrote to, answering our subject"
    if ours and (_auto_signal(msg, subject) or _UNSUBSCRIBE.match(_PREFIX.sub("", subject))):
        return ours[0], "from an address we wrote to"
    return None, ""


def _auto_signal(msg: Message, subject: str) -> str:
    """Why this is an automatic answer (RFC 3834 and the headers vendors use instead), or ""."""
    submitted = header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return f"Auto-Submitted: {submitted}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if msg.get(name) is not None:
            return name
    precedence = header(msg, "Precedence").strip().lower()
    if precedence in ("auto_reply", "bulk", "junk"):
        return f"Precedence: {precedence}"
    if _AUTO_SUBJECT.match(_PREFIX.sub("", subject)):
        suppress = " with X-Auto-Response-Suppress" if msg.get("X-Auto-Response-Suppress") is not None else ""
        return f"automatic-reply subject{suppress}"
    return ""


def referenced_ids(msg: Message) -> list[str]:
    """Message-IDs named by In-Reply-To and References, nearest first."""
    text = header(msg, "In-Reply-To") + " " + " ".join(reversed(header(msg, "References").split()))
    return list(dict.fromkeys(re.findall(r"<[^<>\s]+>", text)))


def normalize_subject(subject: str) -> str:
    """A subject without reply/forward prefixes, case or spacing, to compare an answer with ours."""
    return " ".join(_PREFIX.sub("", subject or "").split()).casefold()


def header(msg: Message, name: str) -> str:
    """A header's decoded text ("" when absent); encoded words in unknown charsets do not raise."""
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return " ".join(str(make_header(decode_header(str(value)))).split())
    except (LookupError, UnicodeError, ValueError, TypeError, AssertionError):
        pass
    try:  # an encoded word in a charset Python does not know: read its bytes as UTF-8, replacing the rest
        parts = decode_header(str(value))
    except (ValueError, TypeError, AssertionError):
        return " ".join(str(value).split())
    text = "".join(p.decode("utf-8", "replace") if isinstance(p, bytes) else p for p, _ in parts)
    return " ".join(text.split())


def _from_address(msg: Message) -> str:
    return next(iter(_addresses(msg, "From")), "")


def _addresses(msg: Message, *names: str) -> list[str]:
    """The addresses of these headers, in order, lower-cased."""
    return [address.strip().lower() for _, address in getaddresses([header(msg, name) for name in names])
            if "@" in address]


def _message_id(msg: Message) -> str | None:
    found = re.search(r"<[^<>\s]+>", header(msg, "Message-ID"))
    return found.group(0) if found else None


def _date(msg: Message) -> datetime | None:
    try:
        moment = parsedate_to_datetime(header(msg, "Date"))
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def own_lines(msg: Message) -> list[str]:
    """The sender's own lines: the plain text (or the HTML as text) up to the quoted original."""
    lines = []
    for line in _body_text(msg).splitlines():
        if _QUOTE_START.match(line.strip()):
            break
        lines.append(line)
    return lines


def _clip(lines: list[str]) -> str:
    return " ".join(" ".join(lines).split())[:SNIPPET_CHARS]


def _body_text(msg: Message) -> str:
    html = None
    for part in msg.walk():
        if part.get_content_maintype() == "multipart" or part.get_filename():
            continue
        kind = part.get_content_type()
        if kind == "text/plain":
            return _decoded(part)
        if kind == "text/html" and html is None:
            html = _decoded(part)
    if html is None:
        return ""
    from inscriptis import get_text
    from lxml.etree import LxmlError

    try:
        return get_text(html)
    except (ValueError, LxmlError):  # lxml refuses some broken documents outright; a snippet is not worth more
        return ""


def _decoded(part: Message) -> str:
    """A text part's content; an unknown or lying charset is read as UTF-8 with replacements."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload() or "")
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")
