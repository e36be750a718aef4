"""Build the MIME message for one recipient: multipart/alternative, UTF-8, unsubscribe headers.

With attachments, a multipart/mixed holds the alternative first and then each file, base64
encoded, its name in RFC 2231 form when it is not ASCII (RFC 2183's `filename` parameter).

Bodies are quoted-printable, so every line stays under the 1000-character SMTP limit whatever
the template produces, and the message is 7-bit clean for any relay. Headers use CRLF. The
headers that carry text (From, To, Reply-To, Subject, List-Unsubscribe) are folded by `headers`,
not by the standard library, so they decode back to exactly what was meant.
"""

from __future__ import annotations

import email.policy
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from collections.abc import Sequence
from typing import Any

from . import headers, unsubscribe
from .attachments import DEFAULT_MAX_MESSAGE_BYTES, Attachment
from .config import show_value
from .email_templates import RenderedEmail
from .errors import ConfigError, PermanentSendError

# refold_source="none": the values `headers` folded are written exactly as they are.
POLICY = email.policy.SMTP.clone(refold_source="none")


def build_message(
    rendered: RenderedEmail,
    *,
    to: str,
    settings: Any,
    to_name: str = "",
    message_id_domain: str | None = None,
    now: datetime | None = None,
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    """The complete message for `to` (shown as `to_name <to>` when a name is known), ready for any transport.

    Raises:
        ConfigError: SENDER_EMAIL, SENDER_NAME, REPLY_TO or UNSUBSCRIBE_URL cannot be used.
        PermanentSendError: `to` is not an address that can be sent to (code "InvalidAddress"),
            or the subject or name has a control character (code "InvalidHeader"), or with its
            attachments the message is bigger than MAX_MESSAGE_BYTES (code "MessageTooLarge").
    """
    if not settings.sender_email:
        raise ConfigError("SENDER_EMAIL is not set: set it to the verified address you send from")
    sender = _address(settings.sender_email, "SENDER_EMAIL")
    reply_to = _address(settings.reply_to, "REPLY_TO") if settings.reply_to else None
    recipient = _address(to, None)
    msg = EmailMessage(policy=POLICY)
    headers.set_folded(msg, "From", headers.mailbox("From", _setting_text(settings.sender_name, "SENDER_NAME"),
                                                      sender.addr_spec))
    name = _recipient_text(to_name, to, "name (first_name, last_name)")
    headers.set_folded(msg, "To", headers.mailbox("To", name, recipient.addr_spec))
    if reply_to:
        headers.set_folded(msg, "Reply-To", headers.mailbox("Reply-To", "", reply_to.addr_spec))
    subject = _recipient_text(rendered.subject, to, "subject")  # one line, whoever built `rendered`
    headers.set_folded(msg, "Subject", headers.unstructured("Subject", subject))
    msg["Date"] = format_datetime(_aware(now or datetime.now(timezone.utc)))
    msg["Message-ID"] = make_msgid(domain=headers.ascii_domain(message_id_domain or sender.domain))
    _add_unsubscribe_headers(msg, settings, recipient.addr_spec, (reply_to or sender).addr_spec)
    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in msg.iter_parts():
        del part["MIME-Version"]  # add_alternative gives the HTML part one; it belongs at the top only
    if attachments:
        _attach(msg, attachments, to=recipient.addr_spec,
                limit=getattr(settings, "max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES))
    return msg


def _attach(msg: EmailMessage, files: Sequence[Attachment], *, to: str, limit: int) -> None:
    """Wrap the alternative in multipart/mixed with the files after it, within `limit` bytes in all."""
    for file in files:
        maintype, _, subtype = file.content_type.partition("/")
        msg.add_attachment(file.data, maintype=maintype, subtype=subtype, filename=file.filename)
    for part in msg.iter_parts():
        del part["MIME-Version"]
    _check_size(msg, to=to, limit=limit)


def _check_size(msg: EmailMessage, *, to: str, limit: int) -> None:
    """Refuse a message bigger than `limit` bytes as it will be written."""
    size = len(msg.as_bytes())
    if size > limit:
        raise PermanentSendError(
            f"recipient {to}: with its attachments the message is {size:,} bytes, more than MAX_MESSAGE_BYTES "
            f"({limit:,}); send a smaller file or a link", code="MessageTooLarge")


def recipient_name(row: Any) -> str:
    """The name to show in To: "first last" from a recipients row, "" when neither is known."""
    keys = row.keys() if hasattr(row, "keys") else ()
    parts = (row[key] for key in ("first_name", "last_name") if key in keys)
    return " ".join(str(part).strip() for part in parts if part and str(part).strip())


def _add_unsubscribe_headers(msg: EmailMessage, settings: Any, to: str, mailto_address: str) -> None:
    """List-Unsubscribe (RFC 2369) with the https URL first, and RFC 8058 one-click with it."""
    problem = unsubscribe.url_problem(settings.unsubscribe_url)
    if problem:
        raise ConfigError(f"invalid setting UNSUBSCRIBE_URL={show_value(settings.unsubscribe_url)}: {problem}")
    uris = unsubscribe.header_uris(settings, to, mailto_address)
    headers.set_folded(msg, "List-Unsubscribe", headers.uri_list("List-Unsubscribe", uris))
    if settings.unsubscribe_url:
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"


def _setting_text(value: str, setting: str) -> str:
    """A setting's text for a header, on one line; a control character is a ConfigError naming it."""
    problem = headers.forbidden_character(value)
    if problem:
        raise ConfigError(f"invalid setting {setting}={show_value(value)}: has a {problem}")
    return " ".join(value.split())


def _recipient_text(value: str, to: str, field: str) -> str:
    """Recipient data for a header, on one line; a control character refuses this recipient."""
    problem = headers.forbidden_character(value)
    if problem:
        raise PermanentSendError(f"recipient {to}: the {field} has a {problem}; a header cannot carry it",
                                 code="InvalidHeader")
    return " ".join(value.split())


def _address(value: str, setting: str | None) -> Address:
    """A header Address with an IDNA (punycode) domain; SES and most relays lack SMTPUTF8."""
    local, at, domain = value.strip().rpartition("@")
    problem = headers.forbidden_character(value)
    if problem:
        problem = f"is not an email address (it has a {problem})"
    elif not at or not local or not domain or any(c in value for c in "<>,;\" \t"):
        problem = "is not an email address"
    elif not local.isascii():
        problem = "has a non-ASCII local part, which SES and most SMTP servers cannot deliver"
    else:
        try:
            return Address(username=local, domain=headers.ascii_domain(domain))
        except (ValueError, UnicodeError, TypeError) as err:
            problem = f"is not an email address ({err})"
    if setting:
        raise ConfigError(f"invalid setting {setting}={show_value(value)}: {problem}")
    raise PermanentSendError(f"recipient {value!r} {problem}", code="InvalidAddress")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
