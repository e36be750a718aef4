"""Build the MIME message for one recipient: multipart/alternative, UTF-8, unsubscribe headers.

Bodies are quoted-printable, so every line stays under the 1000-character SMTP limit whatever
the template produces, and the message is 7-bit clean for any relay. Headers use CRLF. The
headers that carry text (From, To, Reply-To, Subject, List-Unsubscribe) are folded by `headers`,
not by the standard library, so they decode back to exactly what was meant.

`build_wire` assembles the bytes directly (a run sends thousands: `EmailMessage` parses every
header it is given back into a class of its own, most of a message's build time, and holds about
25 times the message's size); `build_message` parses those bytes into an `EmailMessage` for the
callers that want one (preview, tests), so both are the same message.

With attachments, a multipart/mixed (RFC 2046 section 5.1.3) holds the alternative first and then
each file, base64 encoded (RFC 2045 section 6.8), named by Content-Disposition's `filename`
(RFC 2183) in RFC 2231 form when it is not plain ASCII.
"""

from __future__ import annotations

import base64
import email
import email.policy
import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email import quoprimime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import encode_rfc2231, format_datetime, make_msgid
from typing import Any

from . import headers, unsubscribe
from .attachments import DEFAULT_MAX_MESSAGE_BYTES, Attachment
from .config import show_value
from .email_templates import RenderedEmail
from .errors import ConfigError, PermanentSendError
from .wire import WireMessage

# refold_source="none": the values `headers` folded are written exactly as they are.
POLICY = email.policy.SMTP.clone(refold_source="none")


@dataclass(frozen=True)
class Headers:
    """A message's header lines but its Date and Message-ID, which are made as it is sent: what
    `check_wire` made, so that `build_wire` need not make them again for the same recipient data."""

    before: tuple[str, ...]  # From, To, Reply-To, Subject
    after: tuple[str, ...]  # In-Reply-To, References, List-Unsubscribe, List-Unsubscribe-Post
    sender: Address
    recipient: Address
    to_header: str

    def size(self) -> int:
        return sum(map(len, self.before)) + sum(map(len, self.after))


def build_wire(
    rendered: RenderedEmail,
    *,
    to: str,
    settings: Any,
    to_name: str = "",
    message_id_domain: str | None = None,
    now: datetime | None = None,
    thread: tuple[str, ...] = (),
    attachments: Sequence[Attachment] = (),
    checked: Headers | None = None,
) -> WireMessage:
    """The complete message for `to` (shown as `to_name <to>` when a name is known), ready for any transport.

    multipart/alternative (RFC 2046 section 5.1.4): text first, HTML last, each UTF-8 and
    quoted-printable (RFC 2045 section 6.7) as the standard library's content manager encodes it.
    `checked`: what `check_wire` returned for the same arguments, used instead of making them again.

    Raises:
        ConfigError: SENDER_EMAIL, SENDER_NAME, REPLY_TO or UNSUBSCRIBE_URL cannot be used.
        PermanentSendError: `to` is not an address that can be sent to (code "InvalidAddress"),
            or the subject or name has a control character (code "InvalidHeader"), or with its
            attachments the message is bigger than MAX_MESSAGE_BYTES (code "MessageTooLarge").
    """
    made = checked or _headers(rendered, to=to, settings=settings, to_name=to_name, thread=thread)
    message_id = make_msgid(domain=headers.ascii_domain(message_id_domain or made.sender.domain))
    boundary = _boundary()  # cannot occur in QP text (its "=" escapes are hex) nor in base64
    lines = [*made.before, f"Date: {_date_of(_aware(now or datetime.now(timezone.utc)))}",
             f"Message-ID: {message_id}", *made.after, "MIME-Version: 1.0"]
    if attachments:
        mixed = _boundary()
        lines += [f'Content-Type: multipart/mixed;\r\n boundary="{mixed}"', "", f"--{mixed}"]
    lines += [f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"', "",
              f"--{boundary}", _text_part("plain", rendered.text),
              f"--{boundary}", _text_part("html", rendered.html),
              f"--{boundary}--", ""]
    if attachments:
        for file in attachments:
            lines += [f"--{mixed}", _file_part(file)]
        lines += [f"--{mixed}--", ""]
    data = "\r\n".join(lines).encode("ascii")
    limit = getattr(settings, "max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
    if attachments and len(data) > limit:
        raise PermanentSendError(
            f"recipient {made.recipient.addr_spec}: with its attachments the message is {len(data):,} bytes, more "
            f"than MAX_MESSAGE_BYTES ({limit:,}); send a smaller file or a link", code="MessageTooLarge")
    return WireMessage(data, made.sender.addr_spec, (made.recipient.addr_spec,), message_id, made.to_header)


def check_wire(rendered: RenderedEmail, *, to: str, settings: Any, to_name: str = "",
               thread: tuple[str, ...] = (), attachments: Sequence[Attachment] = ()) -> Headers:
    """Raise what `build_wire` would raise for this message, for less: the run checks every message
    of its batch before the first send. The headers are made as `build_wire` makes them (and
    returned for it); the bodies, which cannot fail, are encoded only when attachments make the
    size matter."""
    made = _headers(rendered, to=to, settings=settings, to_name=to_name, thread=thread)
    if attachments:
        build_wire(rendered, to=to, settings=settings, to_name=to_name, thread=thread, attachments=attachments,
                   checked=made)
    else:
        "\r\n".join((*made.before, *made.after)).encode("ascii")  # as build_wire encodes them
    return made


def _headers(rendered: RenderedEmail, *, to: str, settings: Any, to_name: str, thread: tuple[str, ...]) -> Headers:
    """Every check of recipient data and settings that `build_wire` makes is made here."""
    sender, from_header, reply_to = _sender(settings.sender_email, settings.sender_name, settings.reply_to)
    recipient = _address(to, None)
    name = _recipient_text(to_name, to, "name (first_name, last_name)")
    subject = _recipient_text(rendered.subject, to, "subject")  # one line, whoever built `rendered`
    to_header = headers.mailbox("To", name, recipient.addr_spec)
    before = [("From", from_header), ("To", to_header)]
    if reply_to:
        before.append(("Reply-To", headers.mailbox("Reply-To", "", reply_to.addr_spec)))
    before.append(("Subject", headers.unstructured("Subject", subject)))
    after = [*_thread_headers(thread),
             *_unsubscribe_headers(settings, recipient.addr_spec, (reply_to or sender).addr_spec)]
    return Headers(_lines(before), _lines(after), sender, recipient, to_header)


def _lines(fields: list[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(f"{name}: {value}" if value else f"{name}:" for name, value in fields)


@functools.lru_cache(maxsize=8)
def _sender(sender_email: str, sender_name: str, reply_to: str) -> tuple[Address, str, Address | None]:
    """The sender's address, the From field's body and the Reply-To address: the same for every
    message of a run, so made once (settings they cannot be made from raise every time)."""
    if not sender_email:
        raise ConfigError("SENDER_EMAIL is not set: set it to the verified address you send from")
    sender = _address(sender_email, "SENDER_EMAIL")
    reply = _address(reply_to, "REPLY_TO") if reply_to else None
    return sender, headers.mailbox("From", _setting_text(sender_name, "SENDER_NAME"), sender.addr_spec), reply


def check_sender(settings: Any) -> None:
    """Raise what building any message raises for these settings (SENDER_EMAIL, SENDER_NAME,
    REPLY_TO), with nothing else to build: for `run --plan`, which builds no message.

    Raises:
        ConfigError: the first of them that cannot be used, as `build_wire` words it.
    """
    _sender(settings.sender_email, settings.sender_name, settings.reply_to)


def sender_problems(settings: Any) -> dict[str, str]:
    """Why SENDER_EMAIL, SENDER_NAME or REPLY_TO would stop `run` and `preview` (dry runs too), by
    variable: the ConfigError each raises when the first message is built. For `doctor`, so that
    it fails exactly what a run refuses."""
    checks = {"SENDER_EMAIL": lambda: _address(settings.sender_email, "SENDER_EMAIL"),
              "SENDER_NAME": lambda: _setting_text(settings.sender_name, "SENDER_NAME"),
              "REPLY_TO": lambda: settings.reply_to and _address(settings.reply_to, "REPLY_TO")}
    problems = {}
    for name, check in checks.items():
        try:
            check()
        except ConfigError as err:
            problems[name] = str(err)
    return problems


def _date_of(moment: datetime) -> str:
    """The Date field's body (RFC 5322 section 3.3), made once a second: a run sends many a second."""
    return _date(moment.replace(microsecond=0), moment.utcoffset())


@functools.lru_cache(maxsize=4)
def _date(moment: datetime, offset: Any) -> str:  # the offset keys it too: 12:00+00:00 == 13:00+01:00
    return format_datetime(moment)


def _thread_headers(thread: tuple[str, ...]) -> list[tuple[str, str]]:
    """A reply's In-Reply-To (the parent) and References (the whole chain, one id per folded
    line), RFC 5322 section 3.6.4; `thread` lists the earlier Message-IDs, oldest first."""
    if not thread:
        return []
    return [("In-Reply-To", thread[-1]), ("References", "\r\n ".join(thread))]


def _boundary() -> str:
    return "=" * 15 + secrets.token_hex(16) + "=="


def _file_part(file: Attachment) -> str:
    """One attached file: its type, its name (RFC 2183, RFC 2231), its bytes in base64 lines of 76."""
    encoded = base64.encodebytes(file.data).decode("ascii").replace("\n", "\r\n")  # RFC 2045's 76-character lines
    return (f"Content-Type: {file.content_type}\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment;{_filename_parameter(file.filename)}\r\n\r\n{encoded}")


def _filename_parameter(name: str) -> str:
    """` filename="..."` for a short plain-ASCII name, else RFC 2231 continuations of the UTF-8
    name percent-encoded, each on its own line (`filename*0*=utf-8''...; filename*1*=...`)."""
    if name.isascii() and name.isprintable() and len(name) <= 60 and not any(c in name for c in '"\\'):
        return f'\r\n filename="{name}"'
    encoded = encode_rfc2231(name, "utf-8")[len("utf-8''"):]
    pieces, start = [], 0
    while start < len(encoded):
        end = min(start + 48, len(encoded))  # with " filename*NN*=utf-8''" and ";", under 78
        while end < len(encoded) and "%" in encoded[end - 2:end]:  # never split a %XX escape
            end -= 1
        pieces.append(encoded[start:end])
        start = end
    charset = "utf-8''"
    return ";".join(f"\r\n filename*{n}*={charset if n == 0 else ''}{piece}" for n, piece in enumerate(pieces))


def build_message(rendered: RenderedEmail, *, to: str, settings: Any, to_name: str = "",
                  message_id_domain: str | None = None, now: datetime | None = None,
                  attachments: Sequence[Attachment] = (), thread: tuple[str, ...] = ()) -> EmailMessage:
    """`build_wire`'s message as an `EmailMessage` (same arguments, same errors)."""
    wire = build_wire(rendered, to=to, settings=settings, to_name=to_name,
                      message_id_domain=message_id_domain, now=now, attachments=attachments, thread=thread)
    message = email.message_from_bytes(wire.data, policy=POLICY)
    for name, value in message.items():
        if not value:  # stored again so that it is written "Name:", with no trailing space
            message.replace_header(name, "")
    return message  # type: ignore[return-value]


def _text_part(subtype: str, text: str) -> str:
    """One body part: headers, blank line, quoted-printable body ending in a line break."""
    body = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    encoded = quoprimime.body_encode(body.decode("latin-1"), POLICY.max_line_length)
    return (f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
            + encoded.replace("\n", "\r\n"))  # its last line break is the body's, the delimiter adds one


def recipient_name(row: Any) -> str:
    """The name to show in To: "first last" from a recipients row, "" when neither is known."""
    keys = row.keys() if hasattr(row, "keys") else ()
    parts = (row[key] for key in ("first_name", "last_name") if key in keys)
    return " ".join(str(part).strip() for part in parts if part and str(part).strip())


def _unsubscribe_headers(settings: Any, to: str, mailto_address: str) -> list[tuple[str, str]]:
    """List-Unsubscribe (RFC 2369) with the https URL first, and RFC 8058 one-click with it."""
    problem = _url_problem(settings.unsubscribe_url)
    if problem:
        raise ConfigError(f"invalid setting UNSUBSCRIBE_URL={show_value(settings.unsubscribe_url)}: {problem}")
    uris = unsubscribe.header_uris(settings, to, mailto_address)
    fields = [("List-Unsubscribe", headers.uri_list("List-Unsubscribe", uris))]
    if settings.unsubscribe_url:
        fields.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return fields


_url_problem = functools.lru_cache(maxsize=8)(unsubscribe.url_problem)  # one UNSUBSCRIBE_URL a run


def _setting_text(value: str, setting: str) -> str:
    """A setting's text for a header, on one line; a control character is a ConfigError naming it."""
    problem = headers.forbidden_character(value)
    if problem:
        raise ConfigError(f"invalid setting {setting}={show_value(value)}: has {problem}")
    return " ".join(value.split())


def _recipient_text(value: str, to: str, field: str) -> str:
    """Recipient data for a header, on one line; a control character refuses this recipient."""
    problem = headers.forbidden_character(value)
    if problem:
        raise PermanentSendError(f"recipient {to}: the {field} has {problem}; a header cannot carry it",
                                 code="InvalidHeader")
    return " ".join(value.split())


def _address(value: str, setting: str | None) -> Address:
    """A header Address with an IDNA (punycode) domain; SES and most relays lack SMTPUTF8.

    Only a plain address: no quoting, comment, group or domain literal (email-validator refuses
    them in an import too), so the SMTP envelope is `<address>` as it stands."""
    local, at, domain = value.strip().rpartition("@")
    problem = headers.forbidden_character(value)
    if problem:
        problem = f"is not an email address (it has {problem})"
    elif not at or not local or not domain or any(c in value for c in "<>,;:\"()[]\\ \t"):
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
