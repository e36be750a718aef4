"""Test doubles for the engine's side effects: a scripted transport and a recording sleep."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from email_automation.wire import WireMessage


class ScriptedTransport:
    """Accepts every message, except that `script[email]` lists errors to raise first, in order.

    Stands in for a provider only where the provider's reaction is the point of the test; the
    real transports have their own tests against moto and a loopback SMTP server.
    """

    def __init__(self, script: dict[str, list[Exception]] | None = None, name: str = "smtp") -> None:
        self.name = name
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.delivered: list[EmailMessage] = []
        self.calls: list[str] = []
        self.closed = False

    def send(self, message: EmailMessage | WireMessage, *, tags: dict[str, str]) -> str:
        if isinstance(message, WireMessage):  # what a run sends: parsed, so tests can read its headers
            message = email.message_from_bytes(message.data, policy=email.policy.SMTP)
        to = str(message["To"]).split("<")[-1].rstrip(">").lower()
        self.calls.append(to)
        pending = self.script.get(to)
        if pending:
            raise pending.pop(0)
        self.delivered.append(message)
        return f"msg-{len(self.delivered)}-{tags['attempt_id'][:8]}"

    @property
    def recipients(self) -> list[str]:
        return [str(m["To"]).split("<")[-1].rstrip(">").lower() for m in self.delivered]

    def close(self) -> None:
        self.closed = True


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def trace_statements(conn) -> list[str]:
    """The SQL statements `conn` runs from now on, in order.

    Python's trace callback reports a statement once more each time it starts a trigger (it shows
    the statement, not SQLite's "-- TRIGGER" note: https://sqlite.org/c3ref/c_trace.html); those
    repeats are left out, so a count is of what the code asked for.
    """
    statements: list[str] = []

    def trace(sql: str) -> None:
        if not statements or statements[-1] != sql:
            statements.append(sql)

    conn.set_trace_callback(trace)
    return statements
