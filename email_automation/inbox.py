"""Read the IMAP inbox: fetch what arrived since the last read, classify it, store it.

Read-only by construction: the folder is opened with EXAMINE (`select_folder(readonly=True)`) and
bodies are fetched with BODY.PEEK, so nothing is deleted, moved or marked as read (RFC 3501
§6.3.2, §6.4.5). Each message is committed with the read mark (inbox_store), so a failure half-way
loses nothing and the next read goes on from there.
"""

from __future__ import annotations

import email
import logging
import sqlite3
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import getaddresses
from typing import Any

from . import inbox_store
from .config import Settings
from .database import transaction
from .errors import ConfigError, EmailAutomationError
from .mail_classify import Classification, classify

log = logging.getLogger("email_automation.inbox")

TIMEOUT_SECONDS = 60
FETCH_BATCH = 25
# Bigger messages are read as their headers and the first part of the body: enough to classify a
# reply that carries a large attachment (the text comes first), and a batch holds at most 25 MB.
MAX_MESSAGE_BYTES = 1024 * 1024
PARTIAL_BODY_BYTES = 256 * 1024
_COUNT_KEYS = {"reply": "replies", "auto_reply": "auto_replies", "bounce": "bounces",
               "unsubscribe": "unsubscribes", "ignored": "ignored"}


class InboxError(EmailAutomationError):
    """The IMAP server could not be reached, refused the login, or has no such folder."""


class InboxRequiredError(EmailAutomationError):
    """`run --require-inbox` and the inbox could not be read: nothing was sent."""

    exit_code = 3


@dataclass
class InboxReport:
    """Messages newly classified by one read; `as_dict` is the `inbox --json` object."""

    replies: int = 0
    auto_replies: int = 0
    bounces: int = 0
    unsubscribes: int = 0
    ignored: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in _COUNT_KEYS.values()}

    def summary(self) -> str:
        return (f"{self.replies} repl{'y' if self.replies == 1 else 'ies'}, {self.auto_replies} auto-reply(ies), "
                f"{self.bounces} bounce(s), {self.unsubscribes} unsubscribe(s), {self.ignored} ignored")


def mailbox_key(settings: Settings) -> str:
    """Which mailbox a read mark belongs to: another account or folder starts its own."""
    return f"{settings.imap_username}@{settings.imap_host}:{settings.imap_port}/{settings.imap_folder}"


def require_configured(settings: Settings) -> None:
    """Raises ConfigError naming the first missing IMAP setting (an empty password too: logging in
    without one can only fail, and the server's "Authentication failed" does not say why)."""
    for name in ("imap_host", "imap_username", "imap_password"):
        value = getattr(settings, name)
        if not (value.get_secret_value() if hasattr(value, "get_secret_value") else value):
            raise ConfigError(f"{name.upper()} is not set: set IMAP_HOST, IMAP_USERNAME and IMAP_PASSWORD "
                              "to read replies from your mailbox")


def connect(settings: Settings, *, timeout: float = TIMEOUT_SECONDS) -> Any:
    """A logged-in IMAPClient (imported here: only commands that read mail need it); `timeout`
    bounds each network operation.

    Raises:
        InboxError: the server cannot be reached or refuses the login.
    """
    from imapclient import IMAPClient

    where = f"IMAP {settings.imap_host}:{settings.imap_port}"
    context = ssl.create_default_context()
    try:
        client = IMAPClient(settings.imap_host, port=settings.imap_port, ssl=settings.imap_ssl,
                            ssl_context=context, timeout=timeout)
    except OSError as err:  # refused, unreachable, timed out, TLS handshake failed
        raise InboxError(f"{where}: cannot connect: {_reason(err)}") from err
    step = "STARTTLS"
    try:
        if settings.imap_starttls:
            client.starttls(context)
        step = f"login as {settings.imap_username}"
        client.login(settings.imap_username, settings.imap_password.get_secret_value())
    except Exception as err:  # noqa: BLE001 - imaplib, ssl and socket errors all mean "not logged in"
        _logout(client)
        raise InboxError(f"{where}: {step} failed: {_reason(err)}") from err
    return client


def examine(client: Any, settings: Settings) -> dict:
    """Open the folder read-only (EXAMINE); its status (UIDVALIDITY, UIDNEXT, EXISTS)."""
    try:
        return client.select_folder(settings.imap_folder, readonly=True)
    except Exception as err:  # noqa: BLE001
        raise InboxError(f"IMAP folder {settings.imap_folder!r} cannot be opened: {_reason(err)}") from err


def read_inbox(settings: Settings, conn: sqlite3.Connection, *, now: Callable[[], datetime],
               client: Any = None) -> InboxReport:
    """Classify every message that arrived since the last read; each is counted once, ever.

    Raises:
        ConfigError: IMAP_HOST or IMAP_USERNAME is not set.
        InboxError: the server, the login or the folder failed (what was read until then is kept).
    """
    require_configured(settings)
    owned = client is None
    client = client or connect(settings)
    try:
        return _read(settings, conn, client, now)
    finally:
        if owned:
            _logout(client)


def _read(settings: Settings, conn: sqlite3.Connection, client: Any, now: Callable[[], datetime]) -> InboxReport:
    status = examine(client, settings)
    uidvalidity = int(status.get(b"UIDVALIDITY") or 0)  # required by RFC 3501 §6.3.1; 0 if a server omits it
    mailbox = mailbox_key(settings)
    report = InboxReport()
    own = own_addresses(settings)
    try:
        uids = _new_uids(conn, client, mailbox, uidvalidity, status, now)
        for start in range(0, len(uids), FETCH_BATCH):
            for uid, raw in _fetch(client, uids[start:start + FETCH_BATCH]):
                _one(conn, inbox_store.Position(mailbox, uidvalidity, uid), raw, report, now(), own)
        if status.get(b"UIDNEXT"):  # all read: what lies below UIDNEXT and was not asked for is older mail
            with transaction(conn):
                inbox_store.set_mark(conn, inbox_store.Position(mailbox, uidvalidity, int(status[b"UIDNEXT"]) - 1),
                                     now=now())
    except (sqlite3.Error, EmailAutomationError):
        raise
    except Exception as err:  # noqa: BLE001 - a dropped connection: what was read is committed
        raise InboxError(f"IMAP {settings.imap_host}: reading {settings.imap_folder!r} failed: {_reason(err)}") from err
    return report


def _new_uids(conn, client, mailbox: str, uidvalidity: int, status: dict, now) -> list[int]:
    """UIDs above the read mark; on a first read (or a new UIDVALIDITY), those since our first send.

    Nothing that arrived before our first message can answer it, so a first read does not
    download years of mail; with nothing sent yet, the mark is simply set at the folder's end.
    """
    mark = inbox_store.read_mark(conn, mailbox)
    if mark is not None and mark[0] == uidvalidity:
        return sorted(u for u in client.search(["UID", f"{mark[1] + 1}:*"]) if u > mark[1])
    first = conn.execute("SELECT min(attempted_at) FROM send_log WHERE status IN ('sent', 'unknown')").fetchone()[0]
    if first is None:
        return []
    since = datetime.fromisoformat(first).date() - timedelta(days=1)
    return sorted(client.search(["SINCE", since]))


def _fetch(client: Any, uids: list[int]) -> list[tuple[int, bytes]]:
    """The raw messages, whole up to MAX_MESSAGE_BYTES, else headers and the start of the body."""
    sizes = client.fetch(uids, ["RFC822.SIZE"])
    small = [u for u in uids if int(sizes.get(u, {}).get(b"RFC822.SIZE", 0)) <= MAX_MESSAGE_BYTES]
    large = [u for u in uids if u not in small]
    raw: dict[int, bytes] = {}
    if small:
        for uid, data in client.fetch(small, ["BODY.PEEK[]"]).items():
            raw[uid] = data.get(b"BODY[]") or b""
    if large:
        for uid, data in client.fetch(large, ["BODY.PEEK[HEADER]", f"BODY.PEEK[TEXT]<0.{PARTIAL_BODY_BYTES}>"]).items():
            raw[uid] = (data.get(b"BODY[HEADER]") or b"") + (data.get(b"BODY[TEXT]<0>") or b"")
    # A UID the server returned nothing for was expunged meanwhile: nothing to read, and the mark passes it.
    return [(uid, raw[uid]) for uid in uids if raw.get(uid)]


def own_addresses(settings: Settings) -> frozenset[str]:
    """The addresses our own mail comes from, as classify compares them (lower-cased, without a name)."""
    pairs = getaddresses([settings.sender_email or "", settings.reply_to or ""])
    return frozenset(address.strip().lower() for _, address in pairs if "@" in address)


def _one(conn: sqlite3.Connection, position: inbox_store.Position, raw: bytes, report: InboxReport,
         now: datetime, own: frozenset[str] = frozenset()) -> None:
    """Classify and store one message; a message that cannot be read at all is stored as ignored."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    try:
        msg = email.message_from_bytes(raw)
        found = classify(msg, inbox_store.DbSentLookup(conn), own)
        key = inbox_store.dedupe_key(found.message_id, head)
    except Exception as err:  # noqa: BLE001 - one bad message must not stop the read nor lose its mark
        found = Classification("ignored", None, "", "", "", None, None, f"unreadable: {type(err).__name__}: {err}"[:300])
        key = inbox_store.dedupe_key(None, head or str(position).encode())
    changes = inbox_store.store(conn, position, key, found, now=now)
    if changes is None:
        return
    name = _COUNT_KEYS[found.kind]
    setattr(report, name, getattr(report, name) + 1)
    for line in changes:
        report.notes.append(line)
        log.info("inbox: %s", line)


def read_before_run(settings: Settings, conn: sqlite3.Connection, *, now: Callable[[], datetime],
                    require: bool = False, client: Any = None) -> InboxReport | None:
    """At the start of a real run, learn who answered overnight before anyone is mailed.

    Nothing without IMAP_HOST. A failing read is a warning and the run goes on, unless `require`.

    Raises:
        InboxRequiredError: `require` and the inbox is not configured or cannot be read.
    """
    if not settings.imap_host and not require:
        return None
    try:
        report = read_inbox(settings, conn, now=now, client=client)
    except (InboxError, ConfigError) as err:
        if require:
            raise InboxRequiredError(f"inbox not read, nothing sent (--require-inbox): {err}") from err
        log.warning("inbox: replies not read (%s); the run goes on without them", err)
        return None
    log.info("inbox: %s", report.summary())
    return report


def check(settings: Settings) -> str:
    """Log in and open the folder, for `doctor`; one line saying what was found.

    Raises:
        ConfigError, InboxError: as `read_inbox`.
    """
    require_configured(settings)
    # SEND_TIMEOUT_SECONDS bounds every doctor check: a server that never answers fails it as soon.
    client = connect(settings, timeout=min(TIMEOUT_SECONDS, settings.send_timeout_seconds))
    try:
        status = examine(client, settings)
    finally:
        _logout(client)
    return (f"logged in to {settings.imap_host} as {settings.imap_username}; folder {settings.imap_folder!r} "
            f"holds {int(status.get(b'EXISTS', 0))} message(s)")


def _logout(client: Any) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the connection may already be gone; nothing to save
        pass


def _reason(err: BaseException) -> str:
    """An IMAP error's words without Python's bytes repr: b'[AUTHENTICATIONFAILED] ...' -> [AUTH...] ..."""
    text = str(err) or type(err).__name__
    if text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
        text = text[2:-1]
    return " ".join(text.split())
