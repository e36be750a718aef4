"""AWS SDK calls with a deadline for the whole call (botocore's timeouts bound one socket read).

Shared by the SES transport, the events queue and `doctor`, so no AWS call can hang a run.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError

from .deadline import DeadlineExceeded, call_with_deadline


class CallTimedOut(BotoCoreError):
    """An AWS call did not end within its deadline (the request may have reached AWS)."""

    fmt = "no complete answer from {service} within {seconds:g} s"


class BoundedClient:
    """`client` whose API calls each end within `seconds`, else raise CallTimedOut.

    CallTimedOut is a BotoCoreError, so code that already handles "AWS could not be reached"
    handles it too. `on_late=` (not sent to AWS) is told of an answer that came after the deadline.
    """

    def __init__(self, client: Any, seconds: float) -> None:
        self.client, self.seconds = client, seconds

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if not callable(method) or name == "close":
            return method

        def bounded(*args: Any, on_late: Any = None, **kwargs: Any) -> Any:
            try:
                return call_with_deadline(lambda: method(*args, **kwargs), self.seconds, name=f"aws-{name}",
                                          on_late=on_late)
            except DeadlineExceeded as err:
                service = getattr(getattr(self.client, "meta", None), "service_model", None)
                raise CallTimedOut(service=getattr(service, "service_name", "AWS"), seconds=self.seconds) from err

        return bounded
