"""A loopback SMTP sink (aiosmtpd) for tests, subprocess tests and benchmarks.

In-process (pytest):

    from tests.smtp_sink import SmtpSink

    with SmtpSink(rcpt_replies={"gone@example.com": "550 5.1.1 No such user"}) as sink:
        ...send to 127.0.0.1:sink.port...
        assert sink.deliveries[0].rcpt_tos == ["bob@example.com"]

Standalone, for another process to send to while this one counts:

    python tests/smtp_sink.py --port 0 --count-file counts.sqlite --ready-file port.txt

A slow server for deadline tests: `drip_at="MAIL"` (or greeting, EHLO, RCPT, DATA, END for the
reply to the message content, QUIT) sends "250-still thinking" continuation lines every
`drip_every` seconds for `drip_for` seconds before the real reply, so each read is quick while
the reply as a whole never comes in time.

It prints "listening on 127.0.0.1:PORT", writes PORT to --ready-file once it accepts connections,
and records every accepted message per recipient in --count-file *before* answering 250, so a
sender that saw 250 always finds its message counted. A count file ending in .db/.sqlite/.sqlite3
is an SQLite database (table `deliveries(recipient, count)`, plus `messages`), safe to read from
other processes while the sink runs (WAL); any other name is a JSON object {recipient: count},
replaced atomically on every delivery. `read_counts(path)` reads either form. SIGTERM/SIGINT stop
the sink cleanly.

Only the standard library and aiosmtpd are imported, so the file runs from any working directory.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import os
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

SQLITE_SUFFIXES = {".db", ".sqlite", ".sqlite3"}
ACCEPTED = "250 2.0.0 Message accepted for delivery"


@dataclass
class Delivery:
    """One message the sink accepted (or refused at the end of DATA, see `SmtpSink.rejected`)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any = None
    received_at: float = field(default_factory=time.time)

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


def _reply(value: str) -> str:
    """"550" -> "550 5.0.0 refused by smtp_sink"; a full reply line is kept as given."""
    value = value.strip()
    return f"{value} 5.0.0 refused by smtp_sink" if value.isdigit() else value


class _Counter:
    """Per-recipient delivery counts persisted for other processes to read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.sqlite = self.path.suffix.lower() in SQLITE_SUFFIXES
        self.counts: dict[str, int] = {}
        if self.sqlite:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")  # readers in other processes never block it
            self.db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process; fast enough to benchmark
            self.db.execute("CREATE TABLE IF NOT EXISTS deliveries (recipient TEXT PRIMARY KEY,"
                            " count INTEGER NOT NULL, last_at TEXT NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, received_at TEXT,"
                            " mail_from TEXT, rcpt_to TEXT, message_id TEXT, subject TEXT)")
        else:
            self.counts = read_counts(self.path) if self.path.exists() else {}
            self._write_json()

    def add(self, delivery: Delivery) -> None:
        at = datetime.now(timezone.utc).isoformat()
        recipients = [r.lower() for r in delivery.rcpt_tos]
        if not self.sqlite:
            for rcpt in recipients:
                self.counts[rcpt] = self.counts.get(rcpt, 0) + 1
            self._write_json()
            return
        headers = email.message_from_bytes(delivery.data)
        with self.db:  # one committed transaction per message
            self.db.execute("BEGIN IMMEDIATE")
            for rcpt in recipients:
                self.db.execute(
                    "INSERT INTO deliveries (recipient, count, last_at) VALUES (?, 1, ?)"
                    " ON CONFLICT (recipient) DO UPDATE SET count = count + 1, last_at = excluded.last_at",
                    (rcpt, at))
                self.db.execute(
                    "INSERT INTO messages (received_at, mail_from, rcpt_to, message_id, subject) VALUES (?, ?, ?, ?, ?)",
                    (at, delivery.mail_from, rcpt, headers.get("Message-ID"), headers.get("Subject")))

    def _write_json(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent or ".", prefix=".smtp_sink-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self.counts, out, sort_keys=True)
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.sqlite:
            self.db.close()


def read_counts(path: str | Path) -> dict[str, int]:
    """{recipient: deliveries} from a count file written by a running or stopped sink."""
    path = Path(path)
    if path.suffix.lower() in SQLITE_SUFFIXES:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return dict(conn.execute("SELECT recipient, count FROM deliveries").fetchall())
        except sqlite3.OperationalError:  # the sink has not created its table yet
            return {}
        finally:
            conn.close()
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return {k: int(v) for k, v in json.loads(text).items()} if text else {}


class _Handler:
    """aiosmtpd hooks: the sink's configured answers, and recording."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        reply = self.sink.mail_replies.get(address.lower())
        if reply:
            return _reply(reply)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        reply = self.sink.rcpt_replies.get(address.lower())
        if reply:
            return _reply(reply)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        sink = self.sink
        delivery = Delivery(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content or b""),
                            session.peer)
        if sink.data_reply:
            sink._record(delivery, accepted=False)
            return _reply(sink.data_reply)
        sink._record(delivery, accepted=True)  # counted before the 250, see module docstring
        server.drip_stage = "END"
        if sink.stall_after_data:
            await asyncio.sleep(sink.stall_after_data)  # the client times out: an ambiguous send
        return ACCEPTED


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP that also counts and tracks client connections."""

    def __init__(self, sink: SmtpSink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink
        self.drip_stage: str | None = "greeting"  # the reply the next push answers, for `drip_at`

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._sink.stall_before_content:  # a small window, so a big message cannot all be written
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with self._sink._lock:
            self._sink.connections += 1
            self._sink._live.add(self)

    async def smtp_EHLO(self, hostname: str):  # noqa: N802
        self.drip_stage = "EHLO"
        return await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg):  # noqa: N802
        self.drip_stage = "MAIL"
        return await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg):  # noqa: N802
        self.drip_stage = "RCPT"
        return await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg):  # noqa: N802
        self.drip_stage = "DATA"
        return await super().smtp_DATA(arg)

    async def smtp_QUIT(self, arg):  # noqa: N802
        self.drip_stage = "QUIT"
        return await super().smtp_QUIT(arg)

    async def push(self, status):
        stage, self.drip_stage = self.drip_stage, None
        if stage is not None and stage == self._sink.drip_at:
            code = status[:3] if isinstance(status, str) else status[:3].decode()
            await self._drip(code)
        await super().push(status)
        if stage == "DATA" and self._sink.stall_before_content and str(status).startswith("354"):
            self.transport.pause_reading()  # the content waits in the client's and kernel's buffers
            await asyncio.sleep(self._sink.stall_before_content)
            if not self.transport.is_closing():
                self.transport.resume_reading()

    async def _drip(self, code: str) -> None:
        """Continuation lines, each well within any read timeout, for `drip_for` seconds."""
        sink = self._sink
        loop = asyncio.get_running_loop()
        ends = loop.time() + sink.drip_for
        while loop.time() < ends:
            if self.transport is None or self.transport.is_closing():
                return  # the client gave up
            try:
                await super().push(f"{code}-still thinking")
            except ConnectionError:
                return
            with self._sink._lock:
                sink.drips += 1
            await asyncio.sleep(sink.drip_every)

    def connection_lost(self, exc: Exception | None) -> None:
        with self._sink._lock:
            self._sink._live.discard(self)
        super().connection_lost(exc)


class SmtpSink:
    """An SMTP server on 127.0.0.1 (a free port by default) running in a background thread.

    Answers can be changed while it runs: `rcpt_replies` / `mail_replies` map a (lower-case)
    address to a reply such as "550 5.1.1 No such user"; `data_reply` answers the end of DATA
    instead of 250; `stall_after_data` waits that many seconds after receiving the content
    before answering; `stall_before_content` reads nothing for that many seconds after 354.
    `drip_at` (see module docstring) makes one reply arrive line by line over `drip_for`
    seconds. `auth={"user": "password"}` requires AUTH (PLAIN/LOGIN, no TLS). `message_dir`
    gets each accepted message as a file, as a relay that queues to disk would (benchmarks).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rcpt_replies: dict[str, str] | None = None,
        mail_replies: dict[str, str] | None = None,
        data_reply: str | None = None,
        stall_after_data: float = 0.0,
        stall_before_content: float = 0.0,
        drip_at: str | None = None,
        drip_every: float = 0.1,
        drip_for: float = 10.0,
        auth: dict[str, str] | None = None,
        count_file: str | Path | None = None,
        idle_timeout: float = 300,
        message_dir: str | Path | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.rcpt_replies = {k.lower(): v for k, v in (rcpt_replies or {}).items()}
        self.mail_replies = {k.lower(): v for k, v in (mail_replies or {}).items()}
        self.data_reply = data_reply
        self.stall_after_data = stall_after_data
        self.stall_before_content = stall_before_content
        self.drip_at, self.drip_every, self.drip_for = drip_at, drip_every, drip_for
        self.drips = 0  # continuation lines sent so far
        self.auth = dict(auth or {})
        self.idle_timeout = idle_timeout
        self.count_file = Path(count_file) if count_file else None
        self.message_dir = Path(message_dir) if message_dir else None  # each accepted message as N.eml
        self.connections = 0
        self.auth_failures = 0
        self._deliveries: list[Delivery] = []
        self._rejected: list[Delivery] = []
        self._lock = threading.Lock()
        self._received = threading.Condition(self._lock)
        self._live: set[_SinkSMTP] = set()
        self._counter: _Counter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> SmtpSink:
        if self.count_file:
            self._counter = _Counter(self.count_file)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-sink", daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(self._protocol, self.host, self.port), self._loop)
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for proto in list(self._live):
                if proto.transport is not None:
                    proto.transport.close()
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=10)
        loop.close()
        if self._counter:
            self._counter.close()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_settings(self, **extra: str) -> dict[str, str]:
        """The environment of a real run that sends through this sink: plain SMTP, no delay, the
        day in UTC; `extra` adds or overrides settings."""
        return {"DRY_RUN": "false", "TRANSPORT": "smtp", "SMTP_HOST": self.host, "SMTP_PORT": str(self.port),
                "SMTP_STARTTLS": "false", "SENDER_EMAIL": "jane@example.com", "DELAY_SECONDS": "0",
                "TIMEZONE": "UTC", **extra}

    # --- what the tests look at ---------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def deliveries(self) -> list[Delivery]:
        """Accepted messages, in arrival order."""
        with self._lock:
            return list(self._deliveries)

    @property
    def rejected(self) -> list[Delivery]:
        """Messages whose content arrived but were refused with `data_reply`."""
        with self._lock:
            return list(self._rejected)

    def counts(self) -> dict[str, int]:
        """{recipient (lower case): accepted deliveries}."""
        result: dict[str, int] = {}
        for delivery in self.deliveries:
            for rcpt in delivery.rcpt_tos:
                result[rcpt.lower()] = result.get(rcpt.lower(), 0) + 1
        return result

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least `count` messages were accepted; False on timeout."""
        with self._received:
            return self._received.wait_for(lambda: len(self._deliveries) >= count, timeout)

    def drop_connections(self) -> None:
        """Close every open client connection now, as a server does with idle ones."""
        assert self._loop is not None

        async def drop() -> None:
            for proto in list(self._live):
                if proto.transport is not None:
                    proto.transport.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(timeout=5)

    # --- internals ----------------------------------------------------------------------------

    def _protocol(self) -> _SinkSMTP:
        kwargs: dict[str, Any] = {"hostname": "smtp-sink.test", "timeout": self.idle_timeout, "loop": self._loop}
        if self.auth:
            kwargs.update(auth_required=True, auth_require_tls=False, authenticator=self._authenticate)
        with warnings.catch_warnings():  # "Requiring AUTH while not requiring TLS": intended here
            warnings.simplefilter("ignore")
            return _SinkSMTP(self, _Handler(self), **kwargs)

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword)
              and self.auth.get(auth_data.login.decode("utf-8", "replace")) == auth_data.password.decode("utf-8", "replace"))
        if not ok:
            with self._lock:
                self.auth_failures += 1
        # handled=False: aiosmtpd then answers "535 5.7.8"; with the default (True) it answers
        # nothing and the client hangs until its timeout.
        return AuthResult(success=ok, handled=False)

    def _record(self, delivery: Delivery, *, accepted: bool) -> None:
        if accepted and self._counter:
            self._counter.add(delivery)
        with self._received:
            if accepted and self.message_dir:
                (self.message_dir / f"{len(self._deliveries) + 1}.eml").write_bytes(delivery.data)
            (self._deliveries if accepted else self._rejected).append(delivery)
            self._received.notify_all()


# --- standalone ---------------------------------------------------------------------------------

def _pairs(values: list[str]) -> dict[str, str]:
    """["a@x=550 No", ...] -> {"a@x": "550 No"}."""
    result = {}
    for value in values:
        address, sep, reply = value.partition("=")
        if not sep:
            raise SystemExit(f"smtp_sink: expected ADDRESS=REPLY, got {value!r}")
        result[address.strip()] = reply
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Loopback SMTP sink that counts deliveries per recipient.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed, and in --ready-file)")
    parser.add_argument("--count-file", help=".db/.sqlite/.sqlite3 for SQLite, anything else for JSON")
    parser.add_argument("--ready-file", help="written with the port number once connections are accepted")
    parser.add_argument("--rcpt-reply", action="append", default=[], metavar="ADDRESS=REPLY")
    parser.add_argument("--mail-reply", action="append", default=[], metavar="ADDRESS=REPLY")
    parser.add_argument("--data-reply", help='answer the end of DATA with this, e.g. "451 4.3.0 try later"')
    parser.add_argument("--stall-after-data", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--drip-at", choices=["greeting", "EHLO", "MAIL", "RCPT", "DATA", "END", "QUIT"],
                        help="send that reply as continuation lines, one per --drip-every, for --drip-for seconds")
    parser.add_argument("--drip-every", type=float, default=0.1, metavar="SECONDS")
    parser.add_argument("--drip-for", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD")
    parser.add_argument("--idle-timeout", type=float, default=300.0, metavar="SECONDS")
    parser.add_argument("--message-dir", help="write each accepted message to a file in this folder")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    sink = SmtpSink(
        args.host, args.port, rcpt_replies=_pairs(args.rcpt_reply), mail_replies=_pairs(args.mail_reply),
        data_reply=args.data_reply, stall_after_data=args.stall_after_data,
        drip_at=args.drip_at, drip_every=args.drip_every, drip_for=args.drip_for,
        auth=dict(item.split(":", 1) for item in args.auth), count_file=args.count_file,
        idle_timeout=args.idle_timeout, message_dir=args.message_dir,
    ).start()
    try:
        if args.ready_file:
            ready = Path(args.ready_file)
            tmp = ready.with_name(ready.name + ".tmp")
            tmp.write_text(f"{sink.port}\n", encoding="utf-8")
            os.replace(tmp, ready)  # readers never see an empty file
        print(f"listening on {sink.host}:{sink.port}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sink.stop()
    print(f"stopped after {len(sink.deliveries)} deliveries", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
