"""The one interface every transport implements, and what the engine needs to know of a send."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

from ..wire import WireMessage


class Transport(Protocol):
    """Hands one message to a mail service; opened once per run, closed at its end.

    `send` returns the provider's message id, or raises a SendError subclass that says what the
    outcome means: Transient (definitely refused for now), Permanent (refused for good),
    Fatal (nothing can be sent this run) or Ambiguous (may have been accepted).
    """

    name: str

    def send(self, message: EmailMessage | WireMessage, *, tags: dict[str, str]) -> str: ...

    def close(self) -> None: ...
