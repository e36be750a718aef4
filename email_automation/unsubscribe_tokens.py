"""Signed unsubscribe tokens: an opaque, hard-to-forge value in UNSUBSCRIBE_URL instead of the address.

RFC 8058 §3.1 asks for a List-Unsubscribe URL that identifies the recipient in a way that is
hard to forge (https://www.rfc-editor.org/rfc/rfc8058#section-3.1): with the plain address in the
link, anyone could unsubscribe anyone, and the address travels through every log of the endpoint.
With UNSUBSCRIBE_SECRET set, `{email}` becomes an HMAC-SHA256 of the address (RFC 2104) under that
secret. Nothing is stored: `email-automation unsubscribe URL_OR_TOKEN` finds the address by
computing the token of each address in the database, and a link without the secret stays useless.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from .addresses import lookup_form
from .bounces import suppress_in_transaction
from .database import transaction
from .errors import NotFoundError

PREFIX = "u1"  # the token's version: a new scheme gets a new prefix, old links keep working
TOKEN_BYTES = 20  # 160 bits of the MAC: no one guesses a valid token
_TOKEN = re.compile(rf"(?<![A-Za-z0-9_-]){PREFIX}[A-Za-z0-9_-]{{{(TOKEN_BYTES * 4 + 2) // 3}}}(?![A-Za-z0-9_-])")
_ADDRESS = re.compile(r"[^\s/?#&=<>\"']+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
SOURCE = "unsubscribe-link"
MIN_SECRET_LENGTH = 16


def token_for(secret: str, email: str) -> str:
    """The recipient's token: `u1` and the URL-safe base64 of an HMAC-SHA256 of the address."""
    mac = hmac.new(secret.encode(), f"unsubscribe:{lookup_form(email)}".encode(), hashlib.sha256).digest()
    return PREFIX + base64.urlsafe_b64encode(mac[:TOKEN_BYTES]).decode().rstrip("=")


def secret_of(settings: Any) -> str:
    value = getattr(settings, "unsubscribe_secret", None)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else (value or "")


@dataclass(frozen=True)
class Unsubscribed:
    email: str
    newly: bool  # False: the address was suppressed before (its first reason is kept)
    reason: str  # the suppression's reason now
    skipped: int  # pending recipients of the address now skipped


def find_address(conn: sqlite3.Connection, given: str, *, secret: str) -> str:
    """The address an unsubscribe link or token stands for.

    Raises:
        NotFoundError: neither a token of an address in the database nor an address.
    """
    text = unquote(given.strip())
    token = _TOKEN.search(text)
    if token and secret:
        for (email,) in conn.execute("SELECT DISTINCT email FROM recipients"):
            if hmac.compare_digest(token_for(secret, email), token.group()):
                return email
        raise NotFoundError(f"{given}: no recipient has this unsubscribe token (was UNSUBSCRIBE_SECRET changed?)")
    if token:
        raise NotFoundError(f"{given}: this is a signed unsubscribe token, but UNSUBSCRIBE_SECRET is not set")
    address = _ADDRESS.search(text)
    if address is None:
        raise NotFoundError(f"{given}: neither an unsubscribe link, a token nor an email address")
    return lookup_form(address.group())


def apply_unsubscribe(conn: sqlite3.Connection, given: str, *, secret: str, now: datetime) -> Unsubscribed:
    """Suppress the address behind an unsubscribe link or token collected elsewhere (reason `unsubscribe`)."""
    email = find_address(conn, given, secret=secret)
    with transaction(conn):
        done = suppress_in_transaction(conn, email, "unsubscribe", source=SOURCE, now=now)
    return Unsubscribed(email, done.added, done.entry.reason, done.skipped)
