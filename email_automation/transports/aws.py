"""AWS SDK calls with a deadline for the whole call (botocore's timeouts bound one socket read).

Shared by the SES transport, the events queue and `doctor`, so no AWS call can hang a run.
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .deadline import DeadlineExceeded, call_with_deadline


_HTML = re.compile(r"<\s*(!doctype|html|head|body|title|h1|center|pre)\b", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]*>")


def one_line(text: object, limit: int = 300) -> str:
    """An AWS error's text as one line for the log and the terminal. A wrong AWS_ENDPOINT_URL or a
    proxy can answer a 4xx with a whole HTML page, which botocore passes on as the error's message;
    its tags go (an address such as `<a@b.example>` in SES's own messages stays), then the line breaks."""
    text = str(text)
    if _HTML.search(text):
        text = _TAG.sub(" ", text)
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def error_message(err: ClientError) -> str:
    """A ClientError's own message (the `Message` of its `Error`), as one line."""
    return one_line(err.response.get("Error", {}).get("Message", ""))


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
