"""Delivery status notifications (bounces that come back by mail), read into plain facts.

RFC 3464 defines the machine-readable form: a `multipart/report; report-type=delivery-status`
whose `message/delivery-status` part holds one block of fields per recipient (`Final-Recipient`,
`Action`, `Status`, `Diagnostic-Code`), usually followed by the returned message or its headers.
Postfix, Exchange/Outlook and Gmail send that form; Exim's plain-text bounces carry the failed
addresses in `X-Failed-Recipients` and a copy of the message in the body, so both are read.
https://www.rfc-editor.org/rfc/rfc3464
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

_ADDRESS = re.compile(r"[^\s<>;:,\"']+@[^\s<>;:,\"']+")
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
# A Message-ID line inside returned headers or a quoted copy of the message.
_MESSAGE_ID_LINE = re.compile(r"^\s*Message-ID:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient's fate as a DSN reports it."""

    email: str
    action: str  # failed, delayed, delivered, relayed, expanded (RFC 3464 §2.3.3)
    status: str  # the enhanced status code, e.g. 5.1.1 (RFC 3463); "" when the DSN gave none
    diagnostic: str

    @property
    def permanent(self) -> bool:
        """A failure the next attempt will meet again: `Action: failed` with a 5.x.x status."""
        return self.action == "failed" and self.status.startswith("5")


@dataclass(frozen=True)
class DeliveryReport:
    recipients: tuple[RecipientStatus, ...]
    original_message_ids: tuple[str, ...]  # Message-IDs of the message that came back, if returned


def is_delivery_report(msg: Message) -> bool:
    """An RFC 3464 report, or a bounce in Exim's plain form."""
    if msg.get_content_type() == "multipart/report" and \
            str(msg.get_param("report-type", "", header="content-type")).lower() == "delivery-status":
        return True
    return msg.get("X-Failed-Recipients") is not None


def parse_report(msg: Message) -> DeliveryReport:
    """The recipients a DSN reports on and the ids of the message it returns; never raises on odd input."""
    recipients: list[RecipientStatus] = []
    ids: list[str] = []
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            recipients.extend(_status_blocks(part))
        elif kind in ("text/rfc822-headers", "message/rfc822", "message/rfc822-headers"):
            ids.extend(_returned_ids(part))
    if not recipients:
        recipients = _failed_recipients_header(msg)
    if not ids:  # Exim and some NDRs quote the returned message inside a text part
        ids = [i for p in msg.walk() if p.get_content_maintype() == "text" for i in _MESSAGE_ID_LINE.findall(_text(p))]
    return DeliveryReport(tuple(_unique(recipients)), tuple(dict.fromkeys(ids)))


def _status_blocks(part: Message) -> list[RecipientStatus]:
    """The per-recipient blocks: the email package parses each block into a Message of its own."""
    blocks = part.get_payload()
    if not isinstance(blocks, list):  # a flat text payload the parser did not split
        blocks = [_fields(block) for block in re.split(r"\r?\n\s*\r?\n", str(blocks))]
    found = []
    for block in blocks:
        get = block.get if hasattr(block, "get") else (lambda name, b=block: b.get(name.lower()))
        address = _address(get("Final-Recipient") or get("Original-Recipient") or "")
        action = str(get("Action") or "").strip().lower()
        if not address or not action:
            continue  # the per-message block, or a block without what we need
        diagnostic = " ".join(str(get("Diagnostic-Code") or "").split())
        found.append(RecipientStatus(address, action, _status(str(get("Status") or ""), diagnostic, action), diagnostic))
    return found


def _status(value: str, diagnostic: str, action: str) -> str:
    """The DSN's status code; a 5xx diagnostic stands in for a missing one on a failure."""
    match = _STATUS.search(value) or _STATUS.search(diagnostic)
    if match:
        return match.group(0)
    if action == "failed" and re.search(r"\b5\d\d\b", diagnostic):
        return "5.0.0"
    return ""


def _failed_recipients_header(msg: Message) -> list[RecipientStatus]:
    """Exim's X-Failed-Recipients names addresses that failed permanently (Exim spec, ch. 48)."""
    value = " ".join(str(v) for v in msg.get_all("X-Failed-Recipients") or [])
    return [RecipientStatus(a, "failed", "5.0.0", "X-Failed-Recipients") for a in _ADDRESS.findall(value)]


def _returned_ids(part: Message) -> list[str]:
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822: the email package gives the message itself
        return [str(m.get("Message-ID", "")).strip() for m in payload if m.get("Message-ID")]
    return _MESSAGE_ID_LINE.findall(_text(part))


def _fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in block.splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip():
            fields[name.strip().lower()] = value.strip()
    return fields


def _address(value: str) -> str:
    """`rfc822; bob@example.com` -> bob@example.com (lower-cased, the stored form's case)."""
    match = _ADDRESS.search(str(value).partition(";")[2] or str(value))
    return match.group(0).strip(".").lower() if match else ""


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode("utf-8", "replace")
    return str(part.get_payload() or "")


def _unique(items: list[RecipientStatus]) -> list[RecipientStatus]:
    seen, kept = set(), []
    for item in items:
        if item.email not in seen:
            seen.add(item.email)
            kept.append(item)
    return kept
