"""SES events: every shape SES and SNS deliver, what each one does to the ledger, and the SQS drain."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from email_automation.database import transaction
from email_automation import event_queue as queue
from email_automation import events as ev
from email_automation import ledger
from email_automation.event_queue import poll_queue
from email_automation.events import EventKind, apply_events, parse_notification
from tests.cli_helpers import cli

DATA = Path(__file__).parent / "data" / "ses_events"
NOW = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)
MID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"


def sample(name: str, **changes) -> dict:
    """An AWS sample (tests/data/ses_events/README.md), with `to=` / `attempt_id=` adapted."""
    record = json.loads((DATA / f"{name}.json").read_text())
    if "attempt_id" in changes:
        record["mail"].setdefault("tags", {})["attempt_id"] = [changes["attempt_id"]]
    if "to" in changes:
        text = json.dumps(record).replace("recipient@example.com", changes["to"])
        record = json.loads(text)
    return record


def envelope(record: dict, sns_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324") -> str:
    """The SQS body without RawMessageDelivery: the SNS Notification with the SES JSON as a string."""
    outer = json.loads((DATA / "sns-envelope-bounce.json").read_text())
    outer["Message"], outer["MessageId"] = json.dumps(record), sns_id
    return json.dumps(outer)


def add_recipient(db, email: str, *, status: str = "pending", campaign: str = "default") -> int:
    with transaction(db):
        db.execute("INSERT OR IGNORE INTO campaigns (name, subject_template, html_template, created_at)"
                   " VALUES (?, 's', 'h', 'now')", (campaign,))
        cid = db.execute("SELECT id FROM campaigns WHERE name = ?", (campaign,)).fetchone()[0]
        return db.execute("INSERT INTO recipients (campaign_id, email, status, created_at) VALUES (?, ?, ?, 'now')",
                          (cid, email, status)).lastrowid


def add_attempt(db, recipient_id: int, attempt_id: str, status: str) -> None:
    with transaction(db):
        db.execute("UPDATE recipients SET status = ? WHERE id = ?", (status, recipient_id))  # claimed, then logged
        db.execute("INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, error, transport)"
                   " VALUES (?, ?, '2026-11-24', 'then', ?, 'ReadTimeoutError: no answer', 'ses')",
                   (recipient_id, attempt_id, status))


def statuses(db, email: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT status FROM recipients WHERE email = ? ORDER BY id", (email,))]


def suppression(db, email: str):
    row = db.execute("SELECT reason, source FROM suppressions WHERE email = ?", (email,)).fetchone()
    return tuple(row) if row else None


# --- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind, email, detail", [
    ("event-bounce", EventKind.BOUNCED_PERMANENT, "recipient@example.com", "Permanent/General: smtp; 550 5.1.1 user unknown"),
    ("event-complaint", EventKind.COMPLAINED, "recipient@example.com", "abuse"),
    ("event-delivery", EventKind.DELIVERED, "recipient@example.com", "250 2.6.0 Message received"),
    ("event-send", EventKind.SENT, "recipient@example.com", None),
    # AWS's own sample names the sender in mail.destination; it is copied as published.
    ("event-reject", EventKind.REJECTED, "sender@example.com", "Bad content"),
    ("event-open", EventKind.OPENED, "recipient@example.com", None),
    ("event-click", EventKind.CLICKED, "recipient@example.com", "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html"),
    ("event-rendering-failure", EventKind.RENDERING_FAILED, "recipient@example.com", "Attribute 'attributeName' is not present in the rendering data."),
    ("event-delivery-delay", EventKind.DELAYED, "recipient@example.com", "TransientCommunicationFailure: smtp; 421 4.4.1 Unable to connect to remote host"),
    ("event-subscription", EventKind.UNSUBSCRIBED, "recipient@example.com", "unsubscribed from all (UnsubscribeHeader)"),
    ("notification-bounce", EventKind.BOUNCED_PERMANENT, "jane@example.com", "Permanent/General: smtp; 550 5.1.1 <jane@example.com>... User"),
    ("notification-complaint", EventKind.COMPLAINED, "richard@example.com", "abuse"),
    ("notification-delivery", EventKind.DELIVERED, "jane@example.com", "250 ok:  Message 64111812 accepted"),
])
def test_every_aws_sample_is_normalized(name, kind, email, detail):
    [event] = parse_notification(json.dumps(sample(name)))
    assert (event.kind, event.email, event.detail) == (kind, email, detail)
    assert event.message_id and event.timestamp.endswith("Z")
    assert event.attempt_id is None  # AWS's samples carry no tag of ours (legacy ones carry no tags at all)
    assert event.dedupe_key.startswith("sha256:")


def test_both_sqs_body_forms_give_the_same_event():
    raw = json.dumps(sample("event-bounce", attempt_id="a1b2"))
    [from_raw] = parse_notification(raw)  # RawMessageDelivery=true: the SES JSON itself
    [from_envelope] = parse_notification(envelope(json.loads(raw), sns_id="sns-1"))
    [from_file] = parse_notification((DATA / "sns-envelope-bounce.json").read_text())
    assert from_raw.dedupe_key != from_envelope.dedupe_key == "sns:sns-1:recipient@example.com"
    same = ("kind", "email", "message_id", "attempt_id", "timestamp", "detail")
    assert [getattr(from_raw, f) for f in same] == [getattr(from_envelope, f) for f in same]
    assert from_raw.attempt_id == "a1b2" and from_raw.message_id == MID
    assert from_raw.timestamp == "2017-08-05T00:41:02.669000Z"  # the bounce's own time, stored format
    assert (from_file.kind, from_file.dedupe_key) == (EventKind.BOUNCED_PERMANENT, "sns:22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324:recipient@example.com")


def test_one_event_per_recipient_with_stable_keys():
    record = sample("event-delivery")
    record["delivery"]["recipients"] = ["A@Example.com", "Bob <bob@example.org>"]
    first, second = parse_notification(record)
    assert (first.email, second.email) == ("a@example.com", "bob@example.org")
    assert first.dedupe_key != second.dedupe_key
    assert [e.dedupe_key for e in parse_notification(json.dumps(record))] == [first.dedupe_key, second.dedupe_key]


@pytest.mark.parametrize("body, detail", [
    # A type SES may add one day, and moto's canned legacy payload: UNKNOWN, never an exception.
    (json.dumps({"eventType": "Teleport", "mail": {"messageId": "m"}}), "unrecognised SES event type 'Teleport'"),
    (json.dumps({"notificationType": "Bounce, Complaint, or Delivery."}), "unrecognised SES event type 'Bounce, Complaint, or Delivery.'"),
    ("this is not json", "message body is not JSON (Expecting value: line 1 column 1 (char 0)): 'this is not json'"),
    ("[1, 2]", "message body is not a JSON object: '[1, 2]'"),
    (json.dumps({"hello": "world"}), "neither an SNS notification nor an SES event: \"{'hello': 'world'}\""),
    (json.dumps({"Type": "Notification", "MessageId": "x", "Message": "<html>"}),
     "SNS message is not SES JSON (Expecting value: line 1 column 1 (char 0)): '<html>'"),
    (json.dumps({"Type": "SubscriptionConfirmation", "MessageId": "x", "TopicArn": "arn:aws:sns:us-east-1:1:t"}),
     "SNS asks to confirm this queue's subscription to arn:aws:sns:us-east-1:1:t: confirm it in the SNS console"),
    # bouncedRecipients must be a list: a malformed record is reported, not half-applied.
    (json.dumps({"eventType": "Bounce", "bounce": {"bounceType": "Permanent", "bouncedRecipients": "x@y.z"}}),
     "malformed SES 'Bounce' event (TypeError: expected a list, got str)"),
    (json.dumps({"eventType": "Bounce", "mail": {}}), "malformed SES 'Bounce' event (KeyError: 'bounce')"),
])
def test_what_cannot_be_read_becomes_one_unknown_event(body, detail):
    [event] = parse_notification(body)
    assert (event.kind, event.email, event.detail) == (EventKind.UNKNOWN, None, detail)
    assert parse_notification(body)[0].dedupe_key == event.dedupe_key


@pytest.mark.parametrize("body", [
    json.dumps({"Type": "Notification", "MessageId": "x",
                "Message": "Successfully validated SNS topic for Amazon SES event publishing."}),
    json.dumps({"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "You have successfully subscribed"}),
    json.dumps({"Type": "UnsubscribeConfirmation", "MessageId": "x"}),
])
def test_set_up_notes_are_no_events(body):
    assert parse_notification(body) == []


def test_undetermined_bounce_and_multi_recipient_unsubscribe_are_not_suppressing_kinds():
    bounce = sample("event-bounce")
    bounce["bounce"]["bounceType"] = "Undetermined"
    unsubscribe = sample("event-subscription")
    unsubscribe["mail"]["destination"] = ["a@example.com", "b@example.com"]
    assert [e.kind for e in parse_notification(bounce)] == [EventKind.BOUNCED_UNDETERMINED]
    assert [e.kind for e in parse_notification(unsubscribe)] == [EventKind.SUBSCRIPTION_CHANGED] * 2


# --- applying -----------------------------------------------------------------------------------

def apply(db, record_or_body, now=NOW):
    return apply_events(db, parse_notification(record_or_body), now=now)


def test_permanent_bounce_suppresses_and_skips_pending_copies(db):
    add_recipient(db, "ada@example.com", status="sent")
    add_recipient(db, "ada@example.com", campaign="autumn")  # pending in another campaign
    report = apply(db, sample("event-bounce", to="ada@example.com"))
    assert (report.recorded, report.suppressed, report.skipped) == (1, 1, 1)
    assert suppression(db, "ada@example.com") == ("bounce", "ses-event")
    assert statuses(db, "ada@example.com") == ["sent", "skipped"]
    assert db.execute("SELECT last_error FROM recipients WHERE status = 'skipped'").fetchone()[0] == "suppressed: bounce"
    assert tuple(db.execute("SELECT actor, action, target, detail FROM admin_log").fetchone()) == (
        "ses-event", "suppress", "ada@example.com", "bounce: Permanent/General: smtp; 550 5.1.1 user unknown")
    assert report.notes == ["ada@example.com suppressed (bounce: Permanent/General: smtp; 550 5.1.1 user unknown); "
                            "1 pending recipient(s) skipped"]


def test_transient_bounce_is_only_recorded(db):
    add_recipient(db, "bob@example.com")
    record = sample("event-bounce", to="bob@example.com")
    record["bounce"].update(bounceType="Transient", bounceSubType="MailboxFull")
    report = apply(db, record)
    assert (report.recorded, report.suppressed) == (1, 0)
    assert suppression(db, "bob@example.com") is None and statuses(db, "bob@example.com") == ["pending"]
    row = db.execute("SELECT kind, email, message_id, detail, event_at, received_at FROM ses_events").fetchone()
    assert tuple(row) == ("BOUNCED_TRANSIENT", "bob@example.com", MID,
                          "Transient/MailboxFull: smtp; 550 5.1.1 user unknown",
                          "2017-08-05T00:41:02.669000Z", "2026-11-25T07:00:00.000000Z")


@pytest.mark.parametrize("name, reason", [("event-complaint", "complaint"), ("notification-complaint", "complaint"),
                                          ("event-subscription", "unsubscribe")])
def test_complaints_and_unsubscribes_suppress(db, name, reason):
    record = sample(name, to="cy@example.com")
    if name == "notification-complaint":
        record["complaint"]["complainedRecipients"] = [{"emailAddress": "cy@example.com"}]
    add_recipient(db, "cy@example.com")
    assert apply(db, record).suppressed == 1
    assert suppression(db, "cy@example.com") == (reason, "ses-event")
    assert statuses(db, "cy@example.com") == ["skipped"]


def test_a_not_spam_feedback_report_suppresses_nothing_and_is_no_complaint(db):
    record = sample("event-complaint", to="fay@example.com")
    record["complaint"]["complaintFeedbackType"] = "not-spam"
    add_recipient(db, "fay@example.com")
    report = apply(db, record)
    assert (report.recorded, report.suppressed) == (1, 0)
    assert suppression(db, "fay@example.com") is None and statuses(db, "fay@example.com") == ["pending"]
    assert db.execute("SELECT kind FROM ses_events").fetchone()[0] == "COMPLAINED_NOT_SPAM"
    assert db.execute("SELECT count(*) FROM bounces").fetchone()[0] == 0  # the breaker does not count it


def test_three_transient_bounces_of_one_address_suppress_it_as_soft_bounce(db):
    add_recipient(db, "gus@example.com", campaign="autumn")  # still pending elsewhere
    for n in range(3):
        record = sample("event-bounce", to="gus@example.com", attempt_id=f"attempt{n}")
        record["bounce"].update(bounceType="Transient", bounceSubType="MailboxFull", timestamp=f"2026-11-2{n}T00:00:00Z")
        report = apply(db, record)
    assert (report.suppressed, report.skipped) == (1, 1)
    assert suppression(db, "gus@example.com") == ("soft_bounce", "ses-event")


@pytest.mark.parametrize("delay_type, warned", [("SpamDetected", True), ("IPFailure", True), ("MailboxFull", True),
                                                ("TransientCommunicationFailure", False)])
def test_delivery_delays_that_point_at_the_sender_are_warnings(db, delay_type, warned):
    record = sample("event-delivery-delay", to="hal@example.com")
    record["deliveryDelay"]["delayType"] = delay_type
    report = apply(db, record)
    assert report.warnings == int(warned)
    assert [n for n in report.notes if n.startswith("warning:")] == (
        [f"warning: delivery to hal@example.com delayed: {delay_type}: smtp; 421 4.4.1 Unable to connect to remote host"]
        if warned else [])
    assert ("delivery delay warning" in report.summary()) is warned


def test_an_address_suppressed_before_keeps_its_reason(db):
    with transaction(db):
        db.execute("INSERT INTO suppressions VALUES ('dee@example.com', 'unsubscribe', 'cli', 'then')")
    report = apply(db, sample("event-complaint", to="dee@example.com"))
    assert (report.recorded, report.suppressed) == (1, 0)
    assert suppression(db, "dee@example.com") == ("unsubscribe", "cli")


def test_delivery_of_an_unknown_attempt_reconciles_it_as_sent(db):
    rid = add_recipient(db, "eve@example.com")
    add_attempt(db, rid, "att-1", "unknown")
    report = apply(db, sample("event-delivery", to="eve@example.com", attempt_id="att-1"))
    assert report.reconciled == 1
    log = db.execute("SELECT status, message_id, error FROM send_log WHERE attempt_id = 'att-1'").fetchone()
    assert tuple(log) == ("sent", MID, "ReadTimeoutError: no answer [resolved as sent by ses-event: SES reported DELIVERED]")
    recipient = db.execute("SELECT status, sent_at, last_error FROM recipients WHERE id = ?", (rid,)).fetchone()
    assert tuple(recipient) == ("sent", "2016-10-19T23:21:04.133000Z", "resolved as sent by ses-event: SES reported DELIVERED")
    assert db.execute("SELECT action FROM admin_log").fetchone()[0] == "resolve-sent"


@pytest.mark.parametrize("status", ["sending", "failed", "sent"])
def test_events_never_touch_attempts_that_are_not_unknown(db, status):
    rid = add_recipient(db, "fay@example.com")
    add_attempt(db, rid, "att-2", status)
    assert apply(db, sample("event-send", to="fay@example.com", attempt_id="att-2")).reconciled == 0
    assert db.execute("SELECT status FROM send_log").fetchone()[0] == status
    assert statuses(db, "fay@example.com") == [status]


def unknown_after_its_send_event(db, email: str, attempt_id: str) -> None:
    """SES's Send event is stored while the attempt is `sending`; then recovery makes it `unknown`."""
    rid = add_recipient(db, email)
    add_attempt(db, rid, attempt_id, "sending")
    apply(db, sample("event-send", to=email, attempt_id=attempt_id))
    with transaction(db):
        db.execute("UPDATE send_log SET status = 'unknown'")
        db.execute("UPDATE recipients SET status = 'unknown'")


def test_an_event_that_came_while_sending_settles_the_attempt_once_it_is_unknown(db):
    # The Send event arrives while the run that claimed it is still (or was last seen) sending;
    # the next run's recovery makes it unknown, and the next drain settles it from the stored event.
    unknown_after_its_send_event(db, "gil@example.com", "att-3")
    assert apply_events(db, [], now=NOW).reconciled == 1
    assert statuses(db, "gil@example.com") == ["sent"]


def test_a_drain_of_an_empty_queue_still_settles_from_stored_events(db, sqs):
    # As above, but nothing new arrives: `email-automation events` (and the next run's drain)
    # must settle the attempt anyway, or a person is asked to decide what the database knows.
    url = sqs.create_queue(QueueName="ses-events-empty")["QueueUrl"]
    unknown_after_its_send_event(db, "gus@example.com", "att-9")
    report = poll_queue(db, sqs, url, now=lambda: NOW, wait_seconds=0)
    assert (report.messages, report.reconciled) == (0, 1)
    assert statuses(db, "gus@example.com") == ["sent"]


def test_a_redelivered_message_applies_once(db):
    add_recipient(db, "hal@example.com")
    body = envelope(sample("event-bounce", to="hal@example.com"), sns_id="same-sns-id")
    first, second = apply(db, body), apply(db, body)
    assert (first.recorded, first.suppressed, first.duplicates) == (1, 1, 0)
    assert (second.recorded, second.suppressed, second.duplicates) == (0, 0, 1)
    assert db.execute("SELECT count(*) FROM ses_events").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM admin_log").fetchone()[0] == 1


def test_unknown_events_are_kept_for_a_person(db):
    report = apply(db, "garbage")
    assert (report.recorded, report.unknown, report.suppressed) == (1, 1, 0)
    assert db.execute("SELECT kind FROM ses_events").fetchone()[0] == "UNKNOWN"


# --- the queue (moto) ---------------------------------------------------------------------------

@pytest.fixture
def sqs():
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        yield client


def queue_counts(sqs, url) -> tuple[int, int]:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_poll_drains_the_queue_and_deletes_only_after_commit(db, sqs):
    url = sqs.create_queue(QueueName="ses-events")["QueueUrl"]
    add_recipient(db, "ida@example.com")
    rid = add_recipient(db, "jo@example.com")
    add_attempt(db, rid, "att-4", "unknown")
    bounce = envelope(sample("event-bounce", to="ida@example.com"), sns_id="sns-bounce")
    bodies = [bounce, bounce,  # SNS delivered the same notification twice
              json.dumps(sample("event-delivery", to="jo@example.com", attempt_id="att-4")),  # RawMessageDelivery
              json.dumps({"Type": "Notification", "MessageId": "setup",
                          "Message": "Successfully validated SNS topic for Amazon SES event publishing."})]
    bodies += [json.dumps(sample("event-open", to=f"reader{i}@example.com")) for i in range(10)]  # > one receive
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)

    report = poll_queue(db, sqs, url, now=lambda: NOW, wait_seconds=0)

    assert (report.messages, report.events, report.recorded, report.duplicates) == (14, 13, 12, 1)
    assert (report.suppressed, report.reconciled, report.ignored, report.failed) == (1, 1, 1, 0)
    assert queue_counts(sqs, url) == (0, 0)
    assert suppression(db, "ida@example.com") == ("bounce", "ses-event")
    assert statuses(db, "ida@example.com") == ["skipped"] and statuses(db, "jo@example.com") == ["sent"]


def test_a_poison_body_stays_on_the_queue_and_the_rest_is_applied(db, sqs):
    url = sqs.create_queue(QueueName="ses-events-poison")["QueueUrl"]
    # Valid JSON, but "\ud800" decodes to a lone surrogate that SQLite cannot store: applying it
    # fails, so the message must stay for the dead-letter queue while its neighbours go through.
    poison = json.dumps(sample("event-bounce", to="\ud800x@example.com"))
    for body in (json.dumps(sample("event-bounce", to="kim@example.com")), poison):
        sqs.send_message(QueueUrl=url, MessageBody=body)

    report = poll_queue(db, sqs, url, now=lambda: NOW, wait_seconds=0)

    assert (report.messages, report.suppressed, report.failed) == (2, 1, 1)
    assert "could not be applied and stays on the queue: UnicodeEncodeError" in report.notes[-1]
    assert queue_counts(sqs, url) == (0, 1)  # received, not deleted: back after the visibility timeout
    assert suppression(db, "kim@example.com") == ("bounce", "ses-event")
    assert db.execute("SELECT count(*) FROM ses_events").fetchone()[0] == 1


def test_poll_stops_at_max_messages(db, sqs):
    url = sqs.create_queue(QueueName="ses-events-max")["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(sample("event-send", to=f"s{i}@example.com")))
    assert poll_queue(db, sqs, url, now=lambda: NOW, max_messages=3, wait_seconds=0).messages == 3
    assert queue_counts(sqs, url) == (2, 0)


@pytest.mark.parametrize("raw", [True, False])
def test_events_published_through_sns_reach_the_ledger(db, sqs, raw):
    sns = boto3.client("sns", region_name="us-east-1")
    topic = sns.create_topic(Name=f"ses-events-{raw}")["TopicArn"]
    url = sqs.create_queue(QueueName=f"ses-events-sub-{raw}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": str(raw).lower()})
    add_recipient(db, "lou@example.com")
    sns.publish(TopicArn=topic, Message=json.dumps(sample("event-complaint", to="lou@example.com")))

    report = poll_queue(db, sqs, url, now=lambda: NOW, wait_seconds=0)

    assert (report.messages, report.suppressed) == (1, 1)
    key = db.execute("SELECT dedupe_key FROM ses_events").fetchone()[0]
    assert key.startswith("sha256:" if raw else "sns:")
    assert statuses(db, "lou@example.com") == ["skipped"] and queue_counts(sqs, url) == (0, 0)


def test_a_missing_queue_is_one_clear_error(db, sqs):
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue"
    with pytest.raises(queue.EventQueueError, match="no-such-queue: SQS refused to hand out messages .*check SES_EVENTS_QUEUE_URL"):
        poll_queue(db, sqs, url, now=lambda: NOW, wait_seconds=0)


def test_drain_before_run_never_stops_the_run(db, settings, sqs, caplog):
    assert queue.drain_before_run(settings.model_copy(update={"ses_events_queue_url": ""}), db, now=lambda: NOW) is None
    missing = settings.model_copy(update={"ses_events_queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/gone"})
    with caplog.at_level(logging.WARNING, logger="email_automation.events"):
        assert queue.drain_before_run(missing, db, now=lambda: NOW, client=sqs, wait_seconds=0) is None
    assert "SES events not read" in caplog.text and "the run goes on without them" in caplog.text

    url = sqs.create_queue(QueueName="ses-events-run")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(sample("event-bounce", to="max@example.com")))
    ready = settings.model_copy(update={"ses_events_queue_url": url})
    assert queue.drain_before_run(ready, db, now=lambda: NOW, client=sqs, wait_seconds=0).suppressed == 1


@pytest.mark.parametrize("url, region", [
    ("https://sqs.eu-west-1.amazonaws.com/123456789012/ses-events", "eu-west-1"),
    ("https://ap-southeast-2.queue.amazonaws.com/123456789012/ses-events", "ap-southeast-2"),
    ("http://127.0.0.1:5000/123456789012/ses-events", "us-east-1"),  # moto server: AWS_REGION decides
])
def test_the_sqs_client_uses_the_queue_region(settings, url, region):
    assert queue.make_sqs_client(settings, queue_url=url).meta.region_name == region


@pytest.mark.parametrize("url, message", [
    ("", "no SES events queue configured: set SES_EVENTS_QUEUE_URL (or pass --queue-url) to the URL of the SQS queue "
         "subscribed to your SES event topic"),
    ("arn:aws:sqs:us-east-1:123456789012:ses-events",
     "invalid setting SES_EVENTS_QUEUE_URL=arn:aws:sqs:us-east-1:123456789012:ses-events: expected the queue URL, e.g. "
     "https://sqs.us-east-1.amazonaws.com/123456789012/ses-events (not its name or ARN)"),
])
def test_queue_url_errors_say_what_to_set(url, message):
    with pytest.raises(queue.ConfigError) as info:
        queue.check_queue_url(url)
    assert str(info.value) == message


# --- wiring -------------------------------------------------------------------------------------

# The command line as a user types it (in-process), against the moto server over real HTTP.
@pytest.fixture
def server_queue(moto_url, request):
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_url)
    url = client.create_queue(QueueName=f"cli-{request.node.name}".replace("[", "-").replace("]", ""))["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody=json.dumps(sample("event-bounce", to="nia@example.com")))
    return client, url


def test_cli_events_json(db, settings, server_queue, moto_url):
    client, url = server_queue
    add_recipient(db, "nia@example.com")
    result = cli("events", "--queue-url", url, "--db", str(settings.db_path), "--json", "--wait", "0",
                 env={"AWS_ENDPOINT_URL": moto_url})
    assert result.exit_code == 0, result.stderr
    assert {k: v for k, v in json.loads(result.stdout).items() if k in ("messages", "suppressed", "failed")} == {
        "messages": 1, "suppressed": 1, "failed": 0}
    assert statuses(db, "nia@example.com") == ["skipped"]


def test_cli_events_exits_1_when_a_message_stays_on_the_queue(db, settings, server_queue, moto_url):
    client, url = server_queue
    client.send_message(QueueUrl=url, MessageBody=json.dumps(sample("event-bounce", to="\ud800@example.com")))
    result = cli("events", "--queue-url", url, "--db", str(settings.db_path), "--wait", "0",
                 env={"AWS_ENDPOINT_URL": moto_url})
    assert result.exit_code == 1
    assert "1 address(es) suppressed" in result.stdout and "1 failed." in result.stdout
    assert "could not be applied and stays on the queue: UnicodeEncodeError" in result.stdout
    assert result.stderr.endswith("Error: 1 message(s) could not be applied and stay on the queue (its dead-letter "
                                  "queue takes them after maxReceiveCount receives).\n")


def test_cli_events_reads_the_setting_and_prints_counts(db, settings, server_queue, moto_url):
    client, url = server_queue
    result = cli("events", "--db", str(settings.db_path), "--wait", "0",
                 env={"AWS_ENDPOINT_URL": moto_url, "SES_EVENTS_QUEUE_URL": url})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "SES events: 1 message(s), 1 event(s): 1 address(es) suppressed, 0 pending recipient(s) skipped, "
        "0 unknown send(s) reconciled as sent, 0 duplicate(s), 0 ignored, 0 unrecognised, 0 failed.",
        "  nia@example.com suppressed (bounce: Permanent/General: smtp; 550 5.1.1 user unknown); "
        "0 pending recipient(s) skipped",
    ]


def test_cli_events_says_each_warning_once(db, settings, moto_url, tmp_path):
    """A terminal showed each delivery-delay warning twice: in the report, and again on stderr
    through Python's last-resort log handler (the command configures no log output of its own)."""
    import os
    import subprocess
    import sys

    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_url)
    url = client.create_queue(QueueName="cli-warning-once")["QueueUrl"]
    delay = sample("event-delivery-delay", to="nia@example.com")
    delay["deliveryDelay"]["delayType"] = "MailboxFull"
    client.send_message(QueueUrl=url, MessageBody=json.dumps(delay))
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_url, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "DB_PATH": str(settings.db_path)}
    result = subprocess.run([sys.executable, "-m", "email_automation", "events", "--queue-url", url, "--wait", "0"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1 delivery delay warning(s)" in result.stdout
    assert "warning: delivery to nia@example.com delayed: MailboxFull" in result.stdout
    assert result.stderr == ""


def test_cli_events_without_a_queue_names_the_setting(db, settings):
    result = cli("events", "--db", str(settings.db_path))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == ("Error: no SES events queue configured: set SES_EVENTS_QUEUE_URL (or pass --queue-url) "
                             "to the URL of the SQS queue subscribed to your SES event topic\n")




def test_a_real_run_suppresses_yesterdays_bounces_before_it_sends(db, settings, moto_url):
    ses = boto3.client("sesv2", region_name="us-east-1", endpoint_url=moto_url)
    try:
        ses.create_email_identity(EmailIdentity="example.com")
    except ses.exceptions.AlreadyExistsException:
        pass
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_url)
    url = client.create_queue(QueueName="cli-run-drains-events")["QueueUrl"]
    add_recipient(db, "olga@example.org", status="sent")
    add_recipient(db, "olga@example.org", campaign="autumn")  # would go out today without the event
    add_recipient(db, "pat@example.org")
    client.send_message(QueueUrl=url, MessageBody=json.dumps(sample("event-bounce", to="olga@example.org")))
    env = {"AWS_ENDPOINT_URL": moto_url, "AWS_REGION": "us-east-1", "DRY_RUN": "false", "SES_EVENTS_QUEUE_URL": url,
           "SENDER_EMAIL": "jane@example.com", "DELAY_SECONDS": "0", "TIMEZONE": "UTC"}
    result = cli("run", "--json", "--db", str(settings.db_path), env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 1
    assert statuses(db, "olga@example.org") == ["sent", "skipped"] and statuses(db, "pat@example.org") == ["sent"]
    assert "events: 1 message(s), 1 event(s): 1 address(es) suppressed, 1 pending recipient(s) skipped" in result.stderr


def test_an_unknown_send_ses_only_rejected_is_settled_as_not_sent(db):
    rid = add_recipient(db, "hal@example.com")
    add_attempt(db, rid, "att-r", "unknown")
    apply(db, sample("event-send", to="hal@example.com", attempt_id="att-r"))
    report = apply(db, sample("event-reject", to="hal@example.com", attempt_id="att-r"))
    assert report.reconciled == 1
    assert db.execute("SELECT status FROM send_log WHERE attempt_id = 'att-r'").fetchone()[0] == "failed"
    assert statuses(db, "hal@example.com") == ["failed"]


def test_a_send_reported_after_it_was_resolved_as_pending_is_flagged_once(db):
    from email_automation import admin

    rid = add_recipient(db, "ida@example.com")
    add_attempt(db, rid, "att-p", "unknown")
    admin.resolve_unknown(db, "ida@example.com", "pending")
    apply(db, sample("event-delivery", to="ida@example.com", attempt_id="att-p"))
    apply(db, sample("event-send", to="ida@example.com", attempt_id="att-p"))
    flagged = db.execute("SELECT target FROM admin_log WHERE action = 'duplicate-risk'").fetchall()
    assert [r[0] for r in flagged] == ["ida@example.com"]
    error = db.execute("SELECT error FROM send_log WHERE attempt_id = 'att-p'").fetchone()[0]
    assert "SES later reported this send: DELIVERED" in error


def test_a_send_reported_after_resolve_pending_is_not_sent_again(db, settings):
    # The person resolved the unknown send as not sent; SES then reports it went out. The
    # recipient is still waiting in the queue: the next run must not mail it a second time.
    from email_automation import admin
    from email_automation.run_daily import pending_batch

    rid = add_recipient(db, "jo@example.com")
    add_recipient(db, "jo@example.com", campaign="autumn")  # the same address queued elsewhere
    add_attempt(db, rid, "att-q", "unknown")
    admin.resolve_unknown(db, "jo@example.com", "pending")
    assert statuses(db, "jo@example.com") == ["pending", "pending"]
    apply(db, sample("event-delivery", to="jo@example.com", attempt_id="att-q"))
    assert [r["email"] for r in pending_batch(db, 10)] == []
    assert statuses(db, "jo@example.com")[0] == "sent"
    row = db.execute("SELECT status, error FROM send_log WHERE attempt_id = 'att-q'").fetchone()
    assert row["status"] == "sent" and "SES later reported this send: DELIVERED" in row["error"]
    assert db.execute("SELECT count(*) FROM admin_log WHERE action = 'duplicate-risk'").fetchone()[0] == 1


def test_a_send_reported_after_resolve_pending_and_a_suppress_is_not_sent_again_by_an_unsuppress(db):
    # Resolved as not sent, then suppressed (both campaigns' recipients skipped), then SES reports
    # the first send delivered: the recipient is sent, and unsuppress puts no one back in the queue.
    from email_automation import admin
    from email_automation.run_daily import pending_batch

    rid = add_recipient(db, "lou@example.com", campaign="autumn")
    add_attempt(db, rid, "att-u", "unknown")
    admin.resolve_unknown(db, "lou@example.com", "pending")
    add_recipient(db, "lou@example.com")  # imported again, into another campaign
    admin.suppress(db, "lou@example.com")
    assert statuses(db, "lou@example.com") == ["skipped", "skipped"]
    apply(db, sample("event-delivery", to="lou@example.com", attempt_id="att-u"))
    assert statuses(db, "lou@example.com") == ["sent", "skipped"]

    assert admin.unsuppress(db, "lou@example.com").requeued == 0
    assert [r["email"] for r in pending_batch(db, 10)] == []
    assert statuses(db, "lou@example.com") == ["sent", "skipped"]


def test_a_send_resolved_as_pending_then_only_delayed_is_not_sent_again(db):
    from email_automation import admin

    rid = add_recipient(db, "kay@example.com")
    add_attempt(db, rid, "att-d", "unknown")
    admin.resolve_unknown(db, "kay@example.com", "pending")
    apply(db, sample("event-delivery-delay", to="kay@example.com", attempt_id="att-d"))
    assert statuses(db, "kay@example.com") == ["sent"]


def test_a_recorded_send_that_ses_rejects_afterwards_is_not_counted_as_sent(db):
    rid = add_recipient(db, "jon@example.com")
    add_attempt(db, rid, "att-s", "sent")
    apply(db, sample("event-send", to="jon@example.com", attempt_id="att-s"))
    assert db.execute("SELECT status FROM send_log WHERE attempt_id = 'att-s'").fetchone()[0] == "sent"
    apply(db, sample("event-reject", to="jon@example.com", attempt_id="att-s"))
    assert db.execute("SELECT status FROM send_log WHERE attempt_id = 'att-s'").fetchone()[0] == "failed"
    assert statuses(db, "jon@example.com") == ["failed"]


def test_the_settling_sweep_reads_the_log_through_indexes(db):
    # It runs after every drain: a full scan of a million-row send_log would cost each one ~0.25 s.
    plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {ledger.SETTLE_CANDIDATES_SQL}")]
    assert not [step for step in plan if step.startswith("SCAN")], plan
    assert any("send_log_unknown" in step for step in plan) and any("ses_events_rejects" in step for step in plan)
    flag = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {ledger.RESOLVED_PENDING_SQL}")]
    assert not [step for step in flag if step.startswith("SCAN")], flag
