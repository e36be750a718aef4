"""The SQS queue that SES events arrive on: read it, apply what it holds, delete what was applied.

Thin I/O around events.py. A message leaves the queue only after its effects are committed, a
drain always ends (empty receive, a message seen twice, or MAX_RECEIVES calls), and a queue that
cannot be read before a run is a warning, never a reason not to run.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .errors import ConfigError, EmailAutomationError
from .events import EventReport, apply_messages, reconcile

log = logging.getLogger("email_automation.events")

DEFAULT_WAIT_SECONDS = 2  # long polling: > 0 asks every SQS server, so "empty" means empty
MAX_RECEIVES = 500  # receive calls per drain (up to 5,000 messages): a drain always ends
# Deadline of one SQS call on top of its long poll. botocore's read timeout bounds one socket read
# only, so an endpoint dripping its answer would otherwise hold the drain, and the run after it.
# A receive given up on is harmless: its messages reappear after their visibility timeout.
CALL_SECONDS = 30.0
_SQS_BATCH = 10  # the most SQS returns or deletes per call


class EventQueueError(EmailAutomationError):
    """The SQS queue of SES events cannot be read."""


def poll_queue(
    conn: sqlite3.Connection, sqs_client: Any, queue_url: str, *, now: Callable[[], datetime],
    max_messages: int | None = None, wait_seconds: int = DEFAULT_WAIT_SECONDS,
) -> EventReport:
    """Read the queue until it is empty (or `max_messages`): apply each batch, commit, then delete.

    A message that cannot be applied is left on the queue for its dead-letter queue; a message
    seen twice in one drain ends it, so a queue with no visibility timeout cannot loop forever.

    Raises:
        EventQueueError: SQS refused to hand out messages (queue missing, no permission, ...).
    """
    report, seen = EventReport(), set()
    for _ in range(MAX_RECEIVES):
        room = _SQS_BATCH if max_messages is None else min(_SQS_BATCH, max_messages - report.messages)
        if room <= 0:
            break
        fresh = [m for m in _receive(sqs_client, queue_url, room, wait_seconds) if m.get("MessageId") not in seen]
        if not fresh:
            break
        seen.update(m.get("MessageId") for m in fresh)
        report.messages += len(fresh)
        _delete(sqs_client, queue_url, apply_messages(conn, fresh, now(), report), report)
    # Once per drain, not per batch: the sweep reads every open attempt (~0.25 s at 1M log rows),
    # and it also settles attempts that became `unknown` after their event was stored.
    report.add(reconcile(conn, now=now()))
    return report


def _receive(client: Any, queue_url: str, count: int, wait_seconds: int) -> list[dict]:
    from botocore.exceptions import BotoCoreError, ClientError

    from .transports.aws import BoundedClient, error_message, one_line

    try:
        response = BoundedClient(client, wait_seconds + CALL_SECONDS).receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=count, WaitTimeSeconds=wait_seconds)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        hint = _QUEUE_HINTS.get(code, "")
        raise EventQueueError(f"{queue_url}: SQS refused to hand out messages ({code}: "
                              f"{error_message(err)}){hint}") from err
    except BotoCoreError as err:
        raise EventQueueError(f"{queue_url}: cannot reach SQS: {one_line(err)}") from err
    return response.get("Messages", [])


_QUEUE_HINTS = {
    "AWS.SimpleQueueService.NonExistentQueue": "; check SES_EVENTS_QUEUE_URL (and that it is in the right region)",
    "QueueDoesNotExist": "; check SES_EVENTS_QUEUE_URL (and that it is in the right region)",
    "AccessDenied": "; allow sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes on the queue ARN",
    "AccessDeniedException": "; allow sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes on the queue ARN",
}


def _delete(client: Any, queue_url: str, messages: list[dict], report: EventReport) -> None:
    """Delete applied messages; one that stays comes back later and is skipped as a duplicate."""
    from botocore.exceptions import BotoCoreError, ClientError

    from .transports.aws import BoundedClient, error_message, one_line

    bounded = BoundedClient(client, CALL_SECONDS)
    for start in range(0, len(messages), _SQS_BATCH):
        chunk = messages[start:start + _SQS_BATCH]
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
        try:
            failures = bounded.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
            problem = (failures[0].get("Message") or failures[0].get("Code")) if failures else ""
        except (ClientError, BotoCoreError) as err:
            failures, problem = entries, one_line(err)
        if failures:
            report.not_deleted += len(failures)
            report.notes.append(f"{len(failures)} applied message(s) could not be deleted from the queue "
                                f"({problem}); they will come back and be skipped as duplicates")
            log.warning(report.notes[-1])


_QUEUE_URL = re.compile(r"^https?://\S+/\S+$")
# https://sqs.us-east-1.amazonaws.com/123/q, and the legacy https://us-east-1.queue.amazonaws.com/123/q
_QUEUE_REGION = re.compile(r"^https://(?:sqs\.)?([a-z]{2}(?:-[a-z]+)+-\d+)\.(?:queue\.)?amazonaws\.com(?:\.cn)?/")


def check_queue_url(url: str | None) -> str:
    """The queue URL to read, or a ConfigError that says what to set.

    Raises:
        ConfigError: no URL, or a queue name or ARN where the URL belongs.
    """
    url = (url or "").strip()
    if not url:
        raise ConfigError("no SES events queue configured: set SES_EVENTS_QUEUE_URL (or pass --queue-url) to the "
                          "URL of the SQS queue subscribed to your SES event topic")
    if not _QUEUE_URL.match(url):
        raise ConfigError(f"invalid setting SES_EVENTS_QUEUE_URL={url}: expected the queue URL, e.g. "
                          "https://sqs.us-east-1.amazonaws.com/123456789012/ses-events (not its name or ARN)")
    return url


def make_sqs_client(settings: Any, *, queue_url: str | None = None, endpoint_url: str | None = None) -> Any:
    """The boto3 `sqs` client for the events queue, in the queue's own region when its URL says.

    The topic must be in the SES region, but the queue may be elsewhere, so the URL's region wins
    over AWS_REGION. boto3 honours AWS_ENDPOINT_URL(_SQS) itself when `endpoint_url` is not given.

    Raises:
        ConfigError: no region in the queue URL, AWS_REGION or boto3's own configuration.
    """
    import boto3
    from botocore.config import Config

    match = _QUEUE_REGION.match(queue_url or "")
    region = (match.group(1) if match else "") or settings.aws_region or boto3.session.Session().region_name
    if not region:
        raise ConfigError("no AWS region configured for the events queue: set AWS_REGION (e.g. AWS_REGION=us-east-1)")
    # Receiving and deleting are safe to retry, unlike sending; the read timeout outlasts long polls.
    config = Config(connect_timeout=5, read_timeout=DEFAULT_WAIT_SECONDS + 30, retries={"mode": "standard"})
    return boto3.client("sqs", region_name=region, endpoint_url=endpoint_url, config=config)


def drain_queue(settings: Any, conn: sqlite3.Connection, *, now: Callable[[], datetime], queue_url: str | None = None,
                client: Any = None, wait_seconds: int = DEFAULT_WAIT_SECONDS) -> EventReport:
    """Read SES_EVENTS_QUEUE_URL (or `queue_url`) once until it is empty, with a client made here.

    Raises:
        ConfigError: no queue URL or region. EventQueueError: SQS refused.
    """
    url = check_queue_url(queue_url or settings.ses_events_queue_url)
    own = client is None
    client = make_sqs_client(settings, queue_url=url) if own else client
    try:
        return poll_queue(conn, client, url, now=now, wait_seconds=wait_seconds)
    finally:
        if own:
            client.close()


def drain_before_run(settings: Any, conn: sqlite3.Connection, *, now: Callable[[], datetime],
                     client: Any = None, wait_seconds: int = DEFAULT_WAIT_SECONDS) -> EventReport | None:
    """At the start of a real run, apply the bounces and complaints that came in since the last one.

    Nothing without SES_EVENTS_QUEUE_URL. Never raises: a queue problem is logged as a warning and
    the run goes on; the events wait on the queue for the next drain.
    """
    if not settings.ses_events_queue_url:
        return None
    try:
        report = drain_queue(settings, conn, now=now, client=client, wait_seconds=wait_seconds)
    except Exception as err:  # noqa: BLE001 - sending must not depend on the events queue being readable
        log.warning("events: SES events not read (%s); the run goes on without them", err)
        return None
    log.info("events: %s", report.summary())
    for note in report.notes:
        log.info("events: %s", note)
    return report
