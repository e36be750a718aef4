"""SES delivery events (bounces, complaints, deliveries, ...) read from SQS and applied to the ledger.

SES publishes events through the configuration set to a standard SNS topic; an SQS queue
subscribed to that topic keeps them until `poll_queue` reads them
(https://docs.aws.amazon.com/ses/latest/dg/event-publishing-add-event-destination-sns.html). Every hop
delivers at least once, so each event is applied once, keyed on the SNS MessageId (or a hash of
its content), and a message leaves the queue only after its effects are committed.

This module parses and stores events; every change of send state they cause is made by `ledger`
(and `suppressions` for the list). What an event does:
- a permanent bounce, a complaint or an unsubscribe-all puts the address on the suppression list
  and skips its pending recipients, like `email-automation suppress`;
- any event tagged with the `attempt_id` of an attempt left `unknown` proves that SES accepted
  that message (tags come back in `mail.tags`:
  https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html), so
  the attempt becomes `sent`, unless SES only rejected it (Reject, Rendering Failure): then it
  becomes `failed`, as nothing went out;
- such an event for an attempt a person resolved as not sent is flagged, and the recipient, if
  still waiting in the queue, becomes `sent` so it is not mailed twice. Nothing ever becomes
  `pending` here: only a person may decide that a message should go out again;
- everything else is only recorded in `ses_events`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from email.utils import parseaddr
from enum import StrEnum
from typing import Any

from . import bounces, database, ledger


log = logging.getLogger("email_automation.events")

SOURCE = "ses-event"  # suppressions.source and admin_log.actor of everything done here
_DETAIL_LIMIT = 500


class EventKind(StrEnum):
    """The closed set every SES notification is normalized into; anything else is UNKNOWN."""

    SENT = "SENT"
    DELIVERED = "DELIVERED"
    BOUNCED_PERMANENT = "BOUNCED_PERMANENT"
    BOUNCED_TRANSIENT = "BOUNCED_TRANSIENT"
    BOUNCED_UNDETERMINED = "BOUNCED_UNDETERMINED"
    COMPLAINED = "COMPLAINED"
    COMPLAINED_NOT_SPAM = "COMPLAINED_NOT_SPAM"  # feedback type not-spam: the opposite of a complaint
    REJECTED = "REJECTED"
    DELAYED = "DELAYED"
    RENDERING_FAILED = "RENDERING_FAILED"
    OPENED = "OPENED"
    CLICKED = "CLICKED"
    UNSUBSCRIBED = "UNSUBSCRIBED"
    SUBSCRIPTION_CHANGED = "SUBSCRIPTION_CHANGED"
    UNKNOWN = "UNKNOWN"


# Bounces and complaints go to bounces.py, which counts them for the circuit breaker and
# suppresses hard bounces, complaints and the third transient bounce of an address. An
# undetermined bounce may well be delivered next time: recorded here only
# (https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html#bounce-types).
BOUNCE_KINDS = {
    EventKind.BOUNCED_PERMANENT: bounces.HARD,
    EventKind.BOUNCED_TRANSIENT: bounces.SOFT,
    EventKind.COMPLAINED: bounces.COMPLAINT,
}
SUPPRESS_REASONS = {EventKind.UNSUBSCRIBED: "unsubscribe"}
# Delivery delays that say something about the sender or the list, not the weather: shown as
# warnings (https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html).
WARNING_DELAYS = {"SpamDetected", "IPFailure", "MailboxFull"}


@dataclass(frozen=True)
class DeliveryEvent:
    """One SES event for one recipient, normalized."""

    kind: EventKind
    email: str | None
    message_id: str | None
    attempt_id: str | None
    timestamp: str | None
    detail: str | None
    dedupe_key: str


@dataclass
class EventReport:
    """What reading the queue did; `as_dict` is the `--json` output."""

    messages: int = 0  # SQS messages handled
    events: int = 0  # events found in them
    recorded: int = 0  # new events stored in ses_events
    duplicates: int = 0  # events stored before (a redelivered message)
    suppressed: int = 0  # addresses newly on the suppression list
    skipped: int = 0  # pending recipients skipped because of them
    reconciled: int = 0  # unknown attempts now known to be sent
    unknown: int = 0  # events nobody could read, stored as UNKNOWN for a person
    ignored: int = 0  # messages without an event (SNS and SES set-up notes)
    failed: int = 0  # messages that could not be applied; they stay on the queue
    not_deleted: int = 0  # applied but not deleted; they come back as duplicates
    warnings: int = 0  # delivery delays that point at the sender or the list
    notes: list[str] = field(default_factory=list)

    def add(self, other: EventReport) -> None:
        for f in fields(self):
            if f.name == "notes":
                self.notes.extend(other.notes)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.messages} message(s), {self.events} event(s): {self.suppressed} address(es) suppressed, "
                f"{self.skipped} pending recipient(s) skipped, {self.reconciled} unknown send(s) reconciled as sent, "
                f"{self.duplicates} duplicate(s), {self.ignored} ignored, {self.unknown} unrecognised, "
                f"{self.failed} failed" + (f", {self.warnings} delivery delay warning(s)" if self.warnings else ""))


# --- parsing: pure ------------------------------------------------------------------------------

# SNS posts this plain-text Message once when SES is given the topic (anymail handles it the same).
_SETUP_MESSAGES = {"Successfully validated SNS topic for Amazon SES event publishing."}
# SES's test note after SetIdentityNotificationTopic; not an event about any message.
_SETUP_TYPES = {"AmazonSnsSubscriptionSucceeded"}
_BOUNCE_KINDS = {"Permanent": EventKind.BOUNCED_PERMANENT, "Transient": EventKind.BOUNCED_TRANSIENT}


def parse_notification(body: str | bytes | dict) -> list[DeliveryEvent]:
    """The events in one SQS message body: an SNS envelope, or raw SES JSON (RawMessageDelivery).

    Never raises: what cannot be read becomes one UNKNOWN event saying why; SNS and SES set-up
    notes give an empty list.
    """
    try:
        data = json.loads(body) if isinstance(body, (str, bytes, bytearray)) else body
    except ValueError as err:
        return [_unknown(f"message body is not JSON ({err}): {_preview(body)}", _hash(body))]
    if not isinstance(data, dict):
        return [_unknown(f"message body is not a JSON object: {_preview(body)}", _hash(body))]
    if "eventType" in data or "notificationType" in data:
        return _parse_ses(data, sns_id=None)
    if "Type" in data:
        return _parse_sns(data)
    return [_unknown(f"neither an SNS notification nor an SES event: {_preview(data)}", _hash(data))]


def _parse_sns(envelope: dict) -> list[DeliveryEvent]:
    sns_type, sns_id = envelope.get("Type"), _text(envelope.get("MessageId"))
    key = f"sns:{sns_id}" if sns_id else _hash(envelope)
    if sns_type == "UnsubscribeConfirmation":
        return []
    if sns_type == "SubscriptionConfirmation":
        return [_unknown(f"SNS asks to confirm this queue's subscription to {envelope.get('TopicArn')}: "
                         "confirm it in the SNS console", key)]
    if sns_type != "Notification":
        return [_unknown(f"unrecognised SNS message type {sns_type!r}", key)]
    message = envelope.get("Message")
    if message in _SETUP_MESSAGES:
        return []
    try:
        record = json.loads(message)
    except (TypeError, ValueError) as err:
        return [_unknown(f"SNS message is not SES JSON ({err}): {_preview(message)}", key)]
    if not isinstance(record, dict) or not ("eventType" in record or "notificationType" in record):
        return [_unknown(f"SNS message is not an SES event: {_preview(message)}", key)]
    return _parse_ses(record, sns_id=sns_id)


def _parse_ses(record: dict, *, sns_id: str | None) -> list[DeliveryEvent]:
    # Event publishing says eventType; the legacy identity notifications say notificationType.
    event_type = record.get("eventType") or record.get("notificationType")
    if event_type in _SETUP_TYPES:
        return []
    mail = record.get("mail") if isinstance(record.get("mail"), dict) else {}
    try:
        message_id, attempt_id = _text(mail.get("messageId")), _attempt_id(mail)
        handler = _HANDLERS.get(event_type)
        if handler is None:
            when, rows = mail.get("timestamp"), [(None, EventKind.UNKNOWN, f"unrecognised SES event type {event_type!r}")]
        else:
            when, rows = handler(record, mail)
        rows = [(_address(raw), kind, _clip(detail)) for raw, kind, detail in rows] or [(None, *_default(event_type))]
        timestamp = _when(when or mail.get("timestamp"))
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as err:
        key = f"sns:{sns_id}" if sns_id else _hash(record)
        return [_unknown(f"malformed SES {event_type!r} event ({type(err).__name__}: {err})", key)]
    return [
        DeliveryEvent(kind, email, message_id, attempt_id, timestamp, detail,
                      _dedupe_key(sns_id, message_id, event_type, email, timestamp))
        for email, kind, detail in rows
    ]


def _default(event_type: Any) -> tuple[EventKind, str | None]:
    """Kind for an event that names no recipient (still worth keeping for its attempt_id)."""
    return _EMPTY_KINDS.get(event_type, EventKind.UNKNOWN), "no recipient in the event"


def _bounce(record: dict, mail: dict):
    bounce = record["bounce"]
    # Undetermined (or a type SES adds later) is not proof the address is dead: record, never suppress.
    kind = _BOUNCE_KINDS.get(bounce.get("bounceType"), EventKind.BOUNCED_UNDETERMINED)
    summary = f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}"
    return bounce.get("timestamp"), [
        (r.get("emailAddress"), kind, _join(summary, r.get("diagnosticCode"))) for r in _list(bounce["bouncedRecipients"])
    ]


def _complaint(record: dict, mail: dict):
    complaint = record["complaint"]
    feedback = complaint.get("complaintFeedbackType")
    detail = _join(feedback or "no feedback report", complaint.get("complaintSubType"))
    # RFC 5965 §7.3: "not-spam" reports a message wrongly marked as spam; it suppresses nothing.
    kind = EventKind.COMPLAINED_NOT_SPAM if feedback == "not-spam" else EventKind.COMPLAINED
    return complaint.get("timestamp"), [
        (r.get("emailAddress"), kind, detail) for r in _list(complaint["complainedRecipients"])
    ]


def _delivery(record: dict, mail: dict):
    delivery = record["delivery"]
    return delivery.get("timestamp"), [
        (r, EventKind.DELIVERED, delivery.get("smtpResponse")) for r in _list(delivery["recipients"])
    ]


def _delay(record: dict, mail: dict):
    delay = record["deliveryDelay"]
    return delay.get("timestamp"), [
        (r.get("emailAddress"), EventKind.DELAYED, _join(delay.get("delayType"), r.get("diagnosticCode")))
        for r in _list(delay["delayedRecipients"])
    ]


def _subscription(record: dict, mail: dict):
    sub = record["subscription"]
    new = sub.get("newTopicPreferences") or {}
    destination = _list(mail.get("destination", []))
    # An unsubscribe from a message with one recipient can only be that recipient's. Opting out of
    # a topic counts too: outreach goes out under one topic, so it means "no more of this".
    left = _newly_opted_out(sub.get("oldTopicPreferences") or {}, new)
    if (new.get("unsubscribeAll") is True or left) and len(destination) == 1:
        what = "all" if new.get("unsubscribeAll") is True else "topic " + ", ".join(left)
        return sub.get("timestamp"), [(destination[0], EventKind.UNSUBSCRIBED, f"unsubscribed from {what} ({sub.get('source')})")]
    detail = f"subscription preferences changed ({sub.get('source')}): {json.dumps(new, sort_keys=True)}"
    return sub.get("timestamp"), [(r, EventKind.SUBSCRIPTION_CHANGED, detail) for r in destination]


def _newly_opted_out(old: dict, new: dict) -> list[str]:
    """Topics whose status became OptOut with this change."""
    def out(prefs: dict) -> set[str]:
        return {t.get("topicName") for t in prefs.get("topicSubscriptionStatus") or []
                if isinstance(t, dict) and t.get("subscriptionStatus") == "OptOut"}
    return sorted(str(t) for t in out(new) - out(old))


def _per_destination(kind: EventKind, payload: str | None, detail_field: str | None):
    """Events that concern the message as a whole: one per address in `mail.destination`."""

    def handler(record: dict, mail: dict):
        body = record.get(payload) if payload else None
        body = body if isinstance(body, dict) else {}
        detail = body.get(detail_field) if detail_field else None
        return body.get("timestamp"), [(r, kind, detail) for r in _list(mail.get("destination", []))]

    return handler


_HANDLERS: dict[Any, Callable] = {
    "Bounce": _bounce,
    "Complaint": _complaint,
    "Delivery": _delivery,
    "DeliveryDelay": _delay,
    "Subscription": _subscription,
    "Send": _per_destination(EventKind.SENT, "send", None),
    "Reject": _per_destination(EventKind.REJECTED, "reject", "reason"),
    "Rendering Failure": _per_destination(EventKind.RENDERING_FAILED, "failure", "errorMessage"),
    "Open": _per_destination(EventKind.OPENED, "open", None),
    "Click": _per_destination(EventKind.CLICKED, "click", "link"),
}
_EMPTY_KINDS = {"Send": EventKind.SENT, "Delivery": EventKind.DELIVERED, "Open": EventKind.OPENED,
                "Click": EventKind.CLICKED, "Reject": EventKind.REJECTED,
                "Rendering Failure": EventKind.RENDERING_FAILED}


def _attempt_id(mail: dict) -> str | None:
    """Our `attempt_id` message tag; SES repeats tags as lists (legacy notifications carry none)."""
    tags = mail.get("tags")
    values = tags.get("attempt_id") if isinstance(tags, dict) else None
    return _text(values[0]) if isinstance(values, list) and values else None


def _address(raw: Any) -> str | None:
    if not isinstance(raw, str) or not raw.strip():
        return None
    if "<" in raw:  # "Jane Doe <jane@example.com>"
        raw = parseaddr(raw)[1] or raw
    from .addresses import lookup_form  # email-validator loads only once an event is read

    return lookup_form(raw) or None


def _when(value: Any) -> str | None:
    """SES timestamps in the database's one format; a value that is not a time is kept as text."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return database.iso(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))


def _dedupe_key(sns_id: str | None, message_id: str | None, event_type: Any, email: str | None,
                timestamp: str | None) -> str:
    # SNS keeps its MessageId on every retry; raw deliveries have only their content to go by.
    if sns_id:
        return f"sns:{sns_id}:{email or ''}"
    return _hash([message_id, event_type, email, timestamp])


def _unknown(detail: str, key: str) -> DeliveryEvent:
    return DeliveryEvent(EventKind.UNKNOWN, None, None, None, None, _clip(detail), key)


def _hash(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:40]


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _join(*parts: Any) -> str | None:
    return ": ".join(str(p) for p in parts if p) or None


def _clip(value: Any) -> str | None:
    return None if value is None else str(value)[:_DETAIL_LIMIT]


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:200])


# --- applying: one write transaction ------------------------------------------------------------

def apply_events(conn: sqlite3.Connection, events: Iterable[DeliveryEvent], *, now: datetime) -> EventReport:
    """Apply parsed events in one write transaction; an event applied before changes nothing."""
    events = list(events)
    report = EventReport(events=len(events))
    with database.transaction(conn):
        _apply(conn, events, now, report)
        _reconcile_unknown(conn, now, report)
    return report


def reconcile(conn: sqlite3.Connection, *, now: datetime) -> EventReport:
    """Settle `unknown` attempts from the events already stored, in one write transaction.

    For a drain that found the queue empty: the event that proves a send may have been stored
    while its attempt was still `sending`, before the run's recovery made it `unknown`.
    """
    report = EventReport()
    with database.transaction(conn):
        _reconcile_unknown(conn, now, report)
    return report


def _apply(conn: sqlite3.Connection, events: list[DeliveryEvent], now: datetime, report: EventReport) -> None:
    for event in events:
        new = conn.execute(
            "INSERT INTO ses_events (dedupe_key, kind, email, message_id, attempt_id, detail, event_at, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
            (event.dedupe_key, str(event.kind), event.email, event.message_id, event.attempt_id, event.detail,
             event.timestamp, database.iso(now)),
        ).rowcount
        if not new:
            report.duplicates += 1
            continue
        report.recorded += 1
        if event.kind is EventKind.UNKNOWN:
            report.unknown += 1
            report.notes.append(f"unrecognised event kept for a look: {event.detail}")
        if event.kind is EventKind.DELAYED and (event.detail or "").split(":", 1)[0] in WARNING_DELAYS:
            report.warnings += 1
            report.notes.append(f"warning: delivery to {event.email} delayed: {event.detail}")
            log.warning(report.notes[-1])
        if not (event.email and "@" in event.email):
            continue
        if event.kind in BOUNCE_KINDS:
            _hand_over_bounce(conn, event, now, report)
        elif reason := SUPPRESS_REASONS.get(event.kind):
            _suppress(conn, event, reason, now, report)


def _hand_over_bounce(conn: sqlite3.Connection, event: DeliveryEvent, now: datetime, report: EventReport) -> None:
    result = bounces.note_bounce(conn, event.email, kind=BOUNCE_KINDS[event.kind], source=SOURCE, now=now,
                                 detail=event.detail, attempt_id=event.attempt_id, message_id=event.message_id,
                                 dedupe_key=f"ses:{event.dedupe_key}")
    report.skipped += result.skipped
    if result.suppressed:
        report.suppressed += 1
        report.notes.append(f"{event.email} suppressed ({_join(result.suppressed, event.detail)}); "
                            f"{result.skipped} pending recipient(s) skipped")


def _suppress(conn: sqlite3.Connection, event: DeliveryEvent, reason: str, now: datetime, report: EventReport) -> None:
    """Suppress inside this transaction (bounces.suppress_in_transaction, as every other source does)."""
    done = bounces.suppress_in_transaction(conn, event.email, reason, source=SOURCE, detail=event.detail, now=now)
    report.skipped += done.skipped
    if done.added:
        report.suppressed += 1
        report.notes.append(f"{event.email} suppressed ({_join(reason, event.detail)}); "
                            f"{done.skipped} pending recipient(s) skipped")


def _reconcile_unknown(conn: sqlite3.Connection, now: datetime, report: EventReport) -> None:
    """Hand the stored events to the ledger, which settles the attempts they prove (or disprove)."""
    settled = ledger.settle_from_events(conn, actor=SOURCE, now=now)
    report.reconciled += settled.count
    report.notes.extend(settled.notes)


def apply_messages(conn: sqlite3.Connection, messages: list[dict], now: datetime, report: EventReport) -> list[dict]:
    """Apply a received batch of SQS messages in one transaction, each in a savepoint.

    Returns the messages whose effects are committed, the only ones the caller may delete. Does
    not settle `unknown` attempts: the caller runs `reconcile` once after its last batch.
    """
    applied = []
    parsed = [(m, parse_notification(m.get("Body", ""))) for m in messages]
    with database.transaction(conn):
        for message, events in parsed:
            report.events += len(events)
            part = EventReport(ignored=0 if events else 1)
            conn.execute("SAVEPOINT ses_message")
            try:
                _apply(conn, events, now, part)
            except sqlite3.OperationalError:
                raise  # locked, full, read-only: the database's fault, not this message's
            except Exception as err:  # noqa: BLE001 - one unstorable body must not hold up the rest
                conn.execute("ROLLBACK TO ses_message")
                conn.execute("RELEASE ses_message")
                report.failed += 1
                report.notes.append(f"message {message.get('MessageId')} could not be applied and stays on the "
                                    f"queue: {type(err).__name__}: {err}")
                log.warning(report.notes[-1])
                continue
            conn.execute("RELEASE ses_message")
            report.add(part)
            applied.append(message)
    return applied
