"""Build the MIME message for one recipient: multipart/alternative, UTF-8, unsubscribe headers.

Bodies are quoted-printable, so every line stays under the 1000-character SMTP limit whatever
the template produces, and the message is 7-bit clean for any relay. Headers use CRLF.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import quote, urlsplit

from .email_templates import RenderedEmail, unsubscribe_url_for
from .errors import ConfigError, PermanentSendError

# Headers whose value is a list of <URI>s: RFC 2047 encoded words are not allowed in them.
_URI_LIST_HEADERS = frozenset({"list-unsubscribe"})


class _OutreachPolicy(EmailPolicy):
    """email.policy.SMTP, except that URI-list headers are folded only between their URIs.

    The stock folder turns any word longer than 78 characters into an RFC 2047 encoded word,
    which would make a long (tokenised) unsubscribe URL unusable for Gmail and Yahoo.
    """

    def fold(self, name: str, value: str) -> str:
        if name.lower() not in _URI_LIST_HEADERS:
            return super().fold(name, value)
        items = [item.strip() for item in re.split(r"(?<=>)\s*,\s*(?=<)", str(value))]
        return f"{name}: " + f",{self.linesep} ".join(items) + self.linesep

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() not in _URI_LIST_HEADERS:
            return super().fold_binary(name, value)
        return self.fold(name, value).encode("ascii")


POLICY = _OutreachPolicy(linesep="\r\n")
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"  # RFC 3986 reserved + "%": only non-ASCII and spaces get quoted


def build_message(
    rendered: RenderedEmail,
    *,
    to: str,
    settings: Any,
    message_id_domain: str | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """The complete message for `to`, ready for any transport.

    Raises:
        ConfigError: SENDER_EMAIL or REPLY_TO is missing or not a usable address.
        PermanentSendError: `to` is not an address that can be sent to (code "InvalidAddress").
    """
    if not settings.sender_email:
        raise ConfigError("SENDER_EMAIL is not set: set it to the verified address you send from")
    sender = _address(settings.sender_email, "SENDER_EMAIL", display_name=settings.sender_name)
    msg = EmailMessage(policy=POLICY)
    msg["From"] = sender
    msg["To"] = _address(to, None)
    if settings.reply_to:
        msg["Reply-To"] = _address(settings.reply_to, "REPLY_TO")
    msg["Subject"] = " ".join(rendered.subject.split())  # one line, whoever built `rendered`
    msg["Date"] = format_datetime(_aware(now or datetime.now(timezone.utc)))
    msg["Message-ID"] = make_msgid(domain=_ascii_domain(message_id_domain or sender.domain))
    _add_unsubscribe_headers(msg, settings, to, sender.addr_spec)
    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


def _add_unsubscribe_headers(msg: EmailMessage, settings: Any, to: str, sender: str) -> None:
    """List-Unsubscribe (RFC 2369) with an https URL first, and RFC 8058 one-click when https."""
    uris = []
    url = unsubscribe_url_for(settings, to)
    if url:
        # Percent-encode anything non-ASCII: header values here must be plain ASCII.
        uris.append("<" + quote(url, safe=_URL_SAFE) + ">")
    uris.append(f"<mailto:{sender}?subject=unsubscribe>")
    msg["List-Unsubscribe"] = ", ".join(uris)
    if url and urlsplit(url).scheme.lower() == "https":
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"


def _address(value: str, setting: str | None, *, display_name: str = "") -> Address:
    """A header Address with an IDNA (punycode) domain; SES and most relays lack SMTPUTF8."""
    local, at, domain = value.strip().rpartition("@")
    problem = None
    if not at or not local or not domain or any(c in value for c in "\r\n<>,;\" \t"):
        problem = "is not an email address"
    elif not local.isascii():
        problem = "has a non-ASCII local part, which SES and most SMTP servers cannot deliver"
    else:
        try:
            return Address(display_name=display_name, username=local, domain=_ascii_domain(domain))
        except (ValueError, UnicodeError, TypeError) as err:
            problem = f"is not an email address ({err})"
    if setting:
        raise ConfigError(f"invalid setting {setting}={value}: {problem}")
    raise PermanentSendError(f"recipient {value!r} {problem}", code="InvalidAddress")


def _ascii_domain(domain: str) -> str:
    return domain if domain.isascii() else domain.encode("idna").decode("ascii")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
