"""The unsubscribe setup: each recipient's link, the List-Unsubscribe URIs, and UNSUBSCRIBE_URL's problems.

Gmail and Yahoo require bulk senders to offer one-click unsubscribe: an https URI in
List-Unsubscribe plus List-Unsubscribe-Post (RFC 8058 section 3.1,
https://support.google.com/mail/answer/81126). Replies to the message go to REPLY_TO when it is
set, so the mailto: unsubscribe goes there too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

# What UNSUBSCRIBE_URL must contain; replaced by the recipient's URL-quoted address.
PLACEHOLDER = "{email}"
MAX_HEADER_LINE = 998  # RFC 5322 section 2.1.1: a line MUST be at most 998 characters
# "List-Unsubscribe: <" before the URL and ">," after it, on the line of its own it is folded to.
_HEADER_LINE_OVERHEAD = len("List-Unsubscribe: <>,")
# The longest an address can become once URL-quoted: a 64-character local part and the "@",
# each character percent-encoded, then a 253-character ASCII domain (RFC 5321 section 4.5.3.1).
LONGEST_QUOTED_ADDRESS = 3 * (64 + 1) + 253
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"  # RFC 3986 reserved + "%": only non-ASCII gets quoted
_NOT_IN_URL = set(' \t\r\n"<>\\^`{|}')  # RFC 3986 section 2: never valid in a URI as they are


def url_for(settings: Any, email: str) -> str:
    """The recipient's unsubscribe link: UNSUBSCRIBE_URL with {email} replaced ("" when unset).

    The one place that knows how a recipient is put into the URL (a signed token can replace it).
    """
    template = getattr(settings, "unsubscribe_url", "") or ""
    if not template:
        return ""
    from .unsubscribe_tokens import secret_of, token_for

    secret = secret_of(settings)  # with UNSUBSCRIBE_SECRET: an opaque signed token, not the address
    return template.replace(PLACEHOLDER, token_for(secret, email) if secret else quote(email, safe=""))


def url_problem(template: str) -> str | None:
    """Why UNSUBSCRIBE_URL cannot be used, or None (an empty one is fine: mailto only)."""
    if not template:
        return None
    parts = urlsplit(template)
    if parts.scheme.lower() != "https" or not parts.netloc:
        return "must be an https:// URL (one-click unsubscribe, RFC 8058, needs HTTPS)"
    if PLACEHOLDER not in template:
        return f"must contain {PLACEHOLDER}, so that each recipient gets their own link"
    if set(template.replace(PLACEHOLDER, "")) & _NOT_IN_URL or not template.isprintable():
        return "must not contain spaces, quotes, angle brackets or braces (percent-encode them)"
    longest = longest_line(template)
    if longest > MAX_HEADER_LINE:
        room = len(template) - (longest - MAX_HEADER_LINE)
        return (f"is too long: with a recipient's address its List-Unsubscribe line can reach {longest} "
                f"characters, over RFC 5322's {MAX_HEADER_LINE} (keep the URL to at most {room} characters)")
    return None


def longest_line(template: str) -> int:
    """The longest List-Unsubscribe line this URL template can make, for any valid address."""
    fixed = len(header_url(template.replace(PLACEHOLDER, "")))
    return fixed + template.count(PLACEHOLDER) * LONGEST_QUOTED_ADDRESS + _HEADER_LINE_OVERHEAD


def header_url(url: str) -> str:
    """A URL as it can stand in a header: non-ASCII percent-encoded (header values are ASCII)."""
    return quote(url, safe=_URL_SAFE)


def mailto_uri(address: str) -> str:
    """The mailto: unsubscribe for `address` (REPLY_TO, else SENDER_EMAIL), RFC 2369 section 3.2."""
    return f"mailto:{address}?subject=unsubscribe"


def header_uris(settings: Any, email: str, mailto_address: str) -> list[str]:
    """List-Unsubscribe's URIs: the https link first (RFC 8058 uses the first https one), then mailto."""
    url = url_for(settings, email)
    return ([header_url(url)] if url else []) + [mailto_uri(mailto_address)]
