"""One exception family for the tool, so the CLI can turn any of them into one clear line.

ConfigError sits deliberately outside EmailAutomationError's send branch: a bad setting must stop
a run before anything is claimed, never be recorded as a per-recipient failure.
"""

from __future__ import annotations


class EmailAutomationError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(EmailAutomationError):
    """A setting is missing or has a value the tool cannot use."""

    exit_code = 2


class CsvImportError(EmailAutomationError):
    """A file cannot be imported at all (nothing was written)."""

    exit_code = 2


class TemplateRenderError(EmailAutomationError):
    """A template does not compile, or does not render for a recipient."""

    exit_code = 2


class NotFoundError(EmailAutomationError):
    """A campaign, recipient or address named by the user does not exist: bad input, exit code 2."""

    exit_code = 2


class InvalidInputError(EmailAutomationError):
    """A value the user typed cannot be used (say, an address that is not one): exit code 2."""

    exit_code = 2


class SendError(EmailAutomationError):
    """A transport could not hand one message over; the subclass says what that means."""

    error_class = "error"

    def __init__(self, message: str, *, code: str | None = None, mailbox_status: str | None = None,
                 before_recipient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        # The receiving server's RFC 3463 status for the recipient (`5.1.1`), when it gave one.
        self.mailbox_status = mailbox_status
        # Refused before the recipient was named (the relay not reached, its greeting or login
        # failed, the account throttled): the relay or the account is at fault, not the recipient,
        # so the attempt does not count toward MAX_ATTEMPTS (ledger.record_failure).
        self.before_recipient = before_recipient


class TransientSendError(SendError):
    """The provider definitely refused for now (throttled, connection never opened): retry later."""

    error_class = "transient"


class PermanentSendError(SendError):
    """The provider refused this message or recipient for good: never retry it."""

    error_class = "permanent"


class FatalSendError(SendError):
    """Nothing can be sent this run (credentials, unverified sender, paused account, quota)."""

    error_class = "fatal"
    exit_code = 3


class AmbiguousSendError(SendError):
    """The request left and no clear answer came back: the message may have been accepted."""

    error_class = "ambiguous"
