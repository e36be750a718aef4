"""Header field values folded by hand, so that every header decodes back to exactly what was meant.

The standard library's folder can lose or glue spaces when it mixes plain and encoded words in a
long non-ASCII header ("Caisse d'Épargne Île-de-France" arrives as "d'ÉpargneÎle-de-France"),
and 3.13.0 can glue two encoded-words together, which Yahoo rejects ("554 Invalid Subject
header", CPython gh-144156). So a value here is either plain printable ASCII folded at its
spaces, or entirely RFC 2047 "B" encoded-words of whole UTF-8 characters: the white space between
two encoded-words is ignored when decoding (RFC 2047 section 6.2), so folding between them can
never add or drop a character. The message stores the folded text as is (`set_raw`) and a policy
with `refold_source="none"` writes it unchanged.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only an annotation: `status` (config.py uses this module) loads no email package
    from email.message import EmailMessage

MAX_LINE = 78  # RFC 5322 section 2.1.1: lines SHOULD be at most 78 characters
MAX_ENCODED_LINE = 76  # RFC 2047 section 2: a line holding an encoded-word is at most 76
_PREFIX, _SUFFIX = "=?utf-8?b?", "?="
_SHORTEST_WORD = len(_PREFIX) + 8 + len(_SUFFIX)  # one 4-byte character
# C0 and C1 controls except tab (RFC 5322 section 2.2 allows only printable characters and WSP),
# and lone surrogates, which are not text and cannot be encoded as UTF-8.
_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")  # RFC 5322 section 3.2.3
_LONGEST_ATOM = 60  # a longer plain word is encoded, so that every line stays short


class HeaderValueError(ValueError):
    """A value that no header may carry."""


def forbidden_character(value: str) -> str | None:
    """Describe the first character no header may carry (a control, tab aside), or None: "a control
    character U+000D at position 5", article included."""
    match = _FORBIDDEN.search(value)
    if match is None:
        return None
    kind = "an invalid character" if "\ud800" <= match.group() <= "\udfff" else "a control character"
    return f"{kind} U+{ord(match.group()):04X} at position {match.start() + 1}"


def unstructured(name: str, value: str) -> str:
    """The folded field body of an unstructured header such as Subject."""
    _check(value)
    if not value:
        return ""
    if _plain_words(value) and _fits(name, value.split(" ")):
        return _fold(name, value.split(" "))
    return _fold(name, _encoded_words(value, first=MAX_ENCODED_LINE - len(name) - 2))


def mailbox(name: str, display_name: str, addr_spec: str) -> str:
    """The folded field body of an address header with one mailbox: `Name <addr>` or `addr`.

    `addr_spec` must already be a valid ASCII address (see messages._address). White space in the
    display name is collapsed to single spaces.
    """
    _check(display_name)
    words = display_name.split()
    if not words:
        return _fold(name, [addr_spec])
    return _fold(name, [*_phrase(words, first=MAX_ENCODED_LINE - len(name) - 2), f"<{addr_spec}>"])


def uri_list(name: str, uris: list[str]) -> str:
    """A List-Unsubscribe style `<uri>, <uri>` body, folded only between URIs, never encoded.

    An encoded-word is not allowed there (RFC 2047 section 5) and would break the link, so a long
    URI stays whole on its own line; the caller keeps it under RFC 5322's 998-character limit.
    """
    for uri in uris:
        _check(uri)
    items = [f"<{uri}>," for uri in uris]
    items[-1] = items[-1].rstrip(",")
    return _fold(name, items)


def ascii_domain(domain: str) -> str:
    """A domain as headers carry it: internationalized names in their IDNA (punycode) form."""
    return domain if domain.isascii() else domain.encode("idna").decode("ascii")


def set_folded(msg: EmailMessage, name: str, body: str) -> None:
    """Store a body folded here so that the message writes it exactly as it is."""
    if body:
        msg.set_raw(name, body)
    else:
        msg[name] = ""  # written as "Name:", with no trailing space


def _check(value: str) -> None:
    problem = forbidden_character(value)
    if problem:
        raise HeaderValueError(problem)


def _phrase(words: list[str], *, first: int) -> list[str]:
    """A display name as plain atoms and encoded-words, one encoded-word per run of words to encode.

    The space between a plain word and an encoded-word is kept by every reader. Between two
    encoded-words RFC 2047 says to drop it, but Python's address parser keeps it, so a run of
    consecutive words to encode goes into one encoded-word (several only when it is too long).
    """
    tokens: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            tokens.extend(_encoded_words(" ".join(run), first=first if not tokens else MAX_ENCODED_LINE - 1))
            run.clear()

    for word in words:
        if _ATEXT.fullmatch(word) and "=?" not in word and len(word) <= _LONGEST_ATOM:
            flush()
            tokens.append(word)
        else:
            run.append(word)
    flush()
    return tokens


def _plain_words(value: str) -> bool:
    """Printable ASCII, single spaces between words, nothing a reader could decode as RFC 2047."""
    return (value.isascii() and value.isprintable() and "=?" not in value
            and value == " ".join(value.split()) and value != "")


def _fits(name: str, words: list[str]) -> bool:
    return all(len(word) + 1 <= MAX_LINE for word in words) and len(name) + 2 + len(words[0]) <= MAX_LINE


def _fold(name: str, tokens: list[str]) -> str:
    """Pack tokens on lines, a single space between them; a fold is CRLF before that space."""
    lines = [tokens[0]]
    used = len(name) + 2 + len(tokens[0])
    for token in tokens[1:]:
        limit = MAX_ENCODED_LINE if _PREFIX in lines[-1] or _PREFIX in token else MAX_LINE
        if used + 1 + len(token) <= limit:
            lines[-1] += " " + token
            used += 1 + len(token)
        else:
            lines.append(token)
            used = 1 + len(token)
    return "\r\n ".join(lines)


def _encoded_words(text: str, *, first: int) -> list[str]:
    """`text` as B encoded-words, each on a line of its own: whole characters, never split."""
    words: list[str] = []
    limit = max(first, _SHORTEST_WORD)
    chunk = b""
    for char in text:
        data = char.encode("utf-8")
        if chunk and _encoded_length(len(chunk) + len(data)) > limit:
            words.append(_encoded_word(chunk))
            chunk, limit = b"", MAX_ENCODED_LINE - 1  # the line starts with the folding space
        chunk += data
    words.append(_encoded_word(chunk))
    return words


def _encoded_length(size: int) -> int:
    return len(_PREFIX) + 4 * ((size + 2) // 3) + len(_SUFFIX)


def _encoded_word(data: bytes) -> str:
    return _PREFIX + base64.b64encode(data).decode("ascii") + _SUFFIX
