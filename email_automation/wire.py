"""A message as bytes on the wire plus its envelope: what every transport actually sends.

Standard library only, so a transport can take it without loading the templating code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses


@dataclass(frozen=True)
class WireMessage:
    """A message as it goes on the wire (CRLF line ends), with the envelope a transport needs."""

    data: bytes
    sender: str
    recipients: tuple[str, ...]
    message_id: str
    to: str  # the To header's text, for log lines
    auto_submitted: bool = False  # an Auto-Submitted header (RFC 3834): a notice to the user, no list mail

    def as_bytes(self) -> bytes:
        return self.data


def as_wire(message: EmailMessage | WireMessage) -> WireMessage:
    """Any message a transport is given, as wire bytes and envelope (no Bcc header on the wire)."""
    if isinstance(message, WireMessage):
        return message
    sender = getaddresses([str(message.get("Sender") or message.get("From", ""))])[0][1]
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
    recipients = tuple(addr for _, addr in getaddresses(fields) if addr)
    if "Bcc" in message:
        message = copy.copy(message)
        del message["Bcc"]
    data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    return WireMessage(data, sender, recipients, str(message.get("Message-ID") or ""), str(message.get("To", "")),
                       auto_submitted="Auto-Submitted" in message)
