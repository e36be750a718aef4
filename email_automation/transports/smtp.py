"""SMTP transport: one connection per run, the envelope driven step by step.

smtplib's `send_message` cannot tell a refusal before the message content was sent (safe to
record as failed or retry) from a lost connection after it (the server may have queued the
message). So MAIL, RCPT and DATA are issued here one by one on the smtplib object:

- connecting, greeting, STARTTLS, login: nothing sent yet -> Transient (Fatal for bad login);
- MAIL FROM / RCPT TO / DATA refused: 5xx -> Permanent (Fatal for the sender), 4xx -> Transient;
- a reused connection found dead before MAIL FROM is reopened once, transparently;
- the content could not be sent in full: without its final "." line there is no transaction to
  deliver (RFC 5321 §4.1.1.4), and a client treats it as a 451 reply (§3.8) -> Transient;
- the content has been sent and no reply came (timeout, disconnect) -> Ambiguous.

SEND_TIMEOUT_SECONDS bounds each whole send, from connecting to the final reply: a socket timeout
bounds one read only, which a server dripping "250-" continuation lines never lets expire. A
SocketWatchdog cuts the connection at the deadline, and the step it cut is classified as above.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from ..bounces import enhanced_status
from ..errors import (
    AmbiguousSendError,
    FatalSendError,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from ..wire import WireMessage, as_wire
from .deadline import SocketWatchdog

SmtpFactory = Callable[..., smtplib.SMTP]  # (*, timeout) -> an smtplib.SMTP not connected yet

_LOST = (smtplib.SMTPServerDisconnected, OSError)  # smtplib turns socket timeouts into these


class _StaleConnection(Exception):
    """The reused connection was closed by the server while idle."""


def default_smtp_factory(settings: Any) -> SmtpFactory:
    """smtplib.SMTP, or SMTP_SSL (implicit TLS, usually port 465) when SMTP_SSL is set.

    Unconnected, so a deadline can watch the socket from the first byte: smtplib.SMTP(host, port)
    would read the greeting inside its constructor.
    """
    if settings.smtp_ssl:
        context = ssl.create_default_context()
        return lambda *, timeout: smtplib.SMTP_SSL(timeout=timeout, context=context)
    return smtplib.SMTP


def connect(conn: smtplib.SMTP, host: str, port: int) -> smtplib.SMTP:
    """Connect `conn` and read the greeting; anything but 220 is refused, as smtplib.SMTP(host) does.

    Raises:
        OSError, smtplib.SMTPException: the connection or the greeting failed.
    """
    code, greeting = conn.connect(host, port)
    if code != 220:
        conn.close()
        raise smtplib.SMTPConnectError(code, greeting)
    return conn


def watch(seconds: float, conn: Callable[[], smtplib.SMTP | None]) -> SocketWatchdog:
    """A watchdog that cuts the socket of whatever client `conn()` returns when `seconds` pass."""
    return SocketWatchdog(seconds, lambda: getattr(conn(), "sock", None))


class SmtpTransport:
    """Sends through an SMTP relay; `smtp_factory(timeout=...)` makes an unconnected client."""

    name = "smtp"

    def __init__(self, settings: Any, *, smtp_factory: SmtpFactory | None = None) -> None:
        self._settings = settings
        self._factory = smtp_factory or default_smtp_factory(settings)
        self._conn: smtplib.SMTP | None = None
        self._used = False  # whether the open connection has already carried a message

    def send(self, message: EmailMessage | WireMessage, *, tags: dict[str, str]) -> str:
        """Deliver one message to the relay; returns its Message-ID header (or the server reply).

        Raises:
            SendError: Transient, Permanent, Fatal or Ambiguous (see module docstring).
        """
        wire = as_wire(message)
        sender, recipients = wire.sender, list(wire.recipients)
        with self._watchdog() as watchdog:
            conn = self._connection(watchdog)
            try:
                self._mail_and_rcpt(conn, sender, recipients, watchdog, reused=self._used)
            except _StaleConnection:
                self._discard()
                conn = self._connection(watchdog)
                self._mail_and_rcpt(conn, sender, recipients, watchdog, reused=False)
            reply = self._data(conn, wire.data, watchdog)
        self._used = True
        return wire.message_id or reply

    def close(self) -> None:
        """QUIT, within SEND_TIMEOUT_SECONDS as well: a server that never answers cannot hold the run."""
        if self._conn is None:
            return
        with self._watchdog():
            try:
                self._conn.quit()
            except _LOST + (smtplib.SMTPException,):
                self._conn.close()
        self._conn = None

    # --- connection ---------------------------------------------------------------------------

    def _watchdog(self) -> SocketWatchdog:
        return watch(self._settings.send_timeout_seconds, lambda: self._conn)

    def _connection(self, watchdog: SocketWatchdog) -> smtplib.SMTP:
        if self._conn is None:
            self._open(watchdog)
            self._used = False
        assert self._conn is not None
        return self._conn

    def _open(self, watchdog: SocketWatchdog) -> None:
        """Connect, greet, STARTTLS, log in; `self._conn` is set first so the watchdog can cut it."""
        s = self._settings
        where = f"{s.smtp_host}:{s.smtp_port}"
        if not watchdog.remaining():
            raise _too_slow(watchdog, f"SMTP server {where} was not reached", before_recipient=True)
        self._conn = self._factory(timeout=watchdog.remaining())
        try:
            connect(self._conn, s.smtp_host, s.smtp_port)
        except (smtplib.SMTPException, OSError) as err:
            self._discard()
            if watchdog.expired:
                raise _too_slow(watchdog, f"SMTP server {where} did not complete its greeting",
                                before_recipient=True) from err
            raise TransientSendError(
                f"could not connect to SMTP server {where} (connection never opened): {_describe(err)}",
                code=type(err).__name__, before_recipient=True) from err
        try:
            self._greet_and_login(self._conn, where, watchdog)
        except BaseException:
            self._discard()
            raise

    def _greet_and_login(self, conn: smtplib.SMTP, where: str, watchdog: SocketWatchdog) -> None:
        s = self._settings
        try:
            conn.ehlo_or_helo_if_needed()
            if s.smtp_starttls and not s.smtp_ssl:
                if not conn.has_extn("starttls"):
                    raise FatalSendError(
                        f"SMTP server {where} does not offer STARTTLS: use SMTP_SSL=true for an "
                        "implicit-TLS port (465), or SMTP_STARTTLS=false only for a trusted local relay",
                        code="NoStartTLS")
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if s.smtp_username:
                conn.login(s.smtp_username, _secret(s.smtp_password))
        except smtplib.SMTPAuthenticationError as err:
            raise FatalSendError(
                f"SMTP server {where} rejected the login ({err.smtp_code} {_text(err.smtp_error)}): "
                "check SMTP_USERNAME/SMTP_PASSWORD", code=str(err.smtp_code)) from err
        except smtplib.SMTPNotSupportedError as err:
            raise FatalSendError(
                f"SMTP server {where} does not accept a login here ({err}): check SMTP_PORT, "
                "SMTP_STARTTLS/SMTP_SSL, or unset SMTP_USERNAME", code="AuthNotSupported") from err
        except ssl.SSLCertVerificationError as err:
            raise FatalSendError(
                f"TLS certificate of SMTP server {where} is not valid for that name: {err}",
                code="SSLCertVerificationError") from err
        except (smtplib.SMTPException, OSError) as err:
            if watchdog.expired:
                raise _too_slow(watchdog, f"SMTP server {where} did not complete EHLO, STARTTLS and login",
                                before_recipient=True) from err
            raise TransientSendError(
                f"SMTP server {where} failed before the message was sent: {_describe(err)}",
                code=type(err).__name__, before_recipient=True) from err

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _reset(self, conn: smtplib.SMTP) -> None:
        """RSET after a refusal so the connection can carry the next message."""
        try:
            conn.rset()
        except _LOST + (smtplib.SMTPException,):
            self._discard()

    # --- envelope -----------------------------------------------------------------------------

    def _mail_and_rcpt(self, conn: smtplib.SMTP, sender: str, recipients: list[str], watchdog: SocketWatchdog,
                       *, reused: bool) -> None:
        try:
            code, reply = _command(conn, "mail", f"FROM:<{sender}>")
        except _LOST as err:
            if reused and not watchdog.expired:
                raise _StaleConnection from err
            self._discard()
            raise _lost_before_content(err, watchdog, "SMTP server did not answer MAIL FROM",
                                       before_recipient=True) from err
        if code == 421 and reused:  # "closing idle connection"
            raise _StaleConnection
        if code != 250:
            self._reset(conn)
            cls = FatalSendError if 500 <= code < 600 else TransientSendError
            hint = ": check SENDER_EMAIL is allowed to send through this server" if cls is FatalSendError else ""
            raise cls(f"SMTP server refused sender {sender}: {code} {_text(reply)}{hint}", code=str(code),
                      before_recipient=True)
        refused = {}
        for rcpt in recipients:
            try:
                code, reply = _command(conn, "rcpt", f"TO:<{rcpt}>")
            except _LOST as err:
                self._discard()
                raise _lost_before_content(err, watchdog, "SMTP server did not answer RCPT TO") from err
            if code not in (250, 251):
                refused[rcpt] = (code, reply)
        if refused:
            self._reset(conn)
            raise _refusal("refused recipient", refused)

    def _data(self, conn: smtplib.SMTP, data: bytes, watchdog: SocketWatchdog) -> str:
        try:
            conn.putcmd("data")
            code, reply = conn.getreply()
        except _LOST as err:
            self._discard()
            raise _lost_before_content(err, watchdog, "SMTP server did not answer DATA") from err
        if code != 354:
            self._reset(conn)
            raise _refusal("refused the DATA command", {"": (code, reply)})
        try:
            conn.send(_dot_stuffed(data))  # sendall: when it fails, the final "." line has not left
        except _LOST as err:
            self._discard()
            raise _lost_before_content(err, watchdog, "the message content could not be sent in full",
                                       partly=True) from err
        # From here on the server holds the content and may queue it even if no reply arrives.
        try:
            code, reply = conn.getreply()
        except _LOST + (smtplib.SMTPException,) as err:
            self._discard()
            why = (f"no complete reply within SEND_TIMEOUT_SECONDS ({watchdog.seconds:g} s)" if watchdog.expired
                   else _describe(err))
            raise AmbiguousSendError(
                f"no reply from the SMTP server after the message was sent ({why}); it may "
                "have been accepted, so it is not resent automatically", code="NoReplyAfterData") from err
        if code != 250:
            self._reset(conn)
            raise _refusal("refused the message", {"": (code, reply)})
        return _text(reply)


def _command(conn: smtplib.SMTP, verb: str, argument: str) -> tuple[int, bytes]:
    """MAIL FROM / RCPT TO as smtplib's `mail`/`rcpt` send them for a plain address, without their
    `quoteaddr`: it parses each address again with email.utils.parseaddr, a third of a send's CPU.
    The addresses are plain addr-specs (checked by messages._address, or parsed by wire.as_wire),
    for which `<address>` is what quoteaddr writes (tests/test_headers.py checks it)."""
    conn.putcmd(verb, argument)
    return conn.getreply()


def _too_slow(watchdog: SocketWatchdog, what: str, *, before_recipient: bool = False) -> TransientSendError:
    return TransientSendError(
        f"{what} within SEND_TIMEOUT_SECONDS ({watchdog.seconds:g} s); the message was not sent, "
        "so it is tried again later", code="SendTimeout", before_recipient=before_recipient)


def _lost_before_content(err: BaseException, watchdog: SocketWatchdog, late: str, *, partly: bool = False,
                         before_recipient: bool = False) -> SendError:
    """The send broke off before the server could hold the whole message: safe to try again.

    `late` says what did not happen in time, when the deadline is why it broke off;
    `before_recipient`: before RCPT TO named the recipient (see SendError).
    """
    if watchdog.expired:
        return _too_slow(watchdog, late, before_recipient=before_recipient)
    if partly:
        return TransientSendError(
            f"SMTP connection lost while the message content was sent ({_describe(err)}); without its end "
            "the server cannot deliver it, so it is tried again later", code="SMTPServerDisconnected")
    return TransientSendError(f"SMTP connection lost before the message was sent: {_describe(err)}",
                              code="SMTPServerDisconnected", before_recipient=before_recipient)


def _refusal(what: str, refused: dict[str, tuple[int, bytes | str]]) -> SendError:
    """Permanent when every refusal is 5xx; any 4xx means "try again later"."""
    codes = [code for code, _ in refused.values()]
    cls = PermanentSendError if all(500 <= c < 600 for c in codes) else TransientSendError
    shown = "; ".join(f"{who + ': ' if who else ''}{code} {_text(reply)}" for who, (code, reply) in refused.items())
    status = enhanced_status(_text(next(iter(refused.values()))[1]))
    return cls(f"SMTP server {what}: {shown}", code=str(codes[0]), mailbox_status=status)


def _dot_stuffed(data: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency, plus the terminating "." line (as smtplib.data does)."""
    stuffed = re.sub(rb"(?m)^\.", b"..", data) if data.startswith(b".") or b"\n." in data else data
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _secret(value: Any) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value or "")
