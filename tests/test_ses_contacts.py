"""SES list management: ListManagementOptions on every outreach send, unsubscribed contacts never mailed.

Against moto (in process), which implements contact lists and contacts; moto ignores
ListManagementOptions when sending, so the request is read from botocore's own event hook.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone

import boto3
import pytest
from moto import mock_aws

from email_automation import events
from email_automation.database import transaction
from email_automation.run_daily import RunReport, run_daily
from email_automation.summary_report import send_summary
from email_automation.transports.ses import SesTransport

from .fakes import RecordingSleep

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)


@pytest.fixture
def ses(settings):
    with mock_aws():
        client = boto3.client("sesv2", region_name="us-east-1")
        client.create_email_identity(EmailIdentity="example.com")
        client.create_contact_list(ContactListName="outreach", Topics=[
            {"TopicName": "jobs", "DisplayName": "Job search", "Description": "Outreach", "DefaultSubscriptionStatus": "OPT_IN"}])
        sent: list[dict] = []
        client.meta.events.register("provide-client-params.sesv2.SendEmail", lambda params, **_: sent.append(params))
        yield client, sent


@pytest.fixture
def listed(settings):
    # moto has no suppression-list API in process: that part has its own tests (test_ses_suppression.py).
    return settings.model_copy(update={"ses_contact_list": "outreach", "ses_topic": "jobs", "ses_suppression_check": False})


def add_pending(db, *emails):
    with transaction(db):
        for email in emails:
            db.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (1, ?, 'x')", (email,))


def test_sends_carry_the_list_and_topic_and_unsubscribed_contacts_are_skipped(listed, db, clock, ses):
    client, sent = ses
    client.create_contact(ContactListName="outreach", EmailAddress="gone@x.org", UnsubscribeAll=True)
    client.create_contact(ContactListName="outreach", EmailAddress="no-jobs@x.org",
                          TopicPreferences=[{"TopicName": "jobs", "SubscriptionStatus": "OPT_OUT"}])
    add_pending(db, "gone@x.org", "new@x.org", "no-jobs@x.org")

    report = run_daily(listed, db, SesTransport(listed, client=client), now=clock, sleep=RecordingSleep(),
                       rng=random.Random(1))

    assert (report.sent, report.skipped) == (1, 2)
    assert [p["ListManagementOptions"] for p in sent] == [{"ContactListName": "outreach", "TopicName": "jobs"}]
    assert client.get_contact(ContactListName="outreach", EmailAddress="new@x.org")["EmailAddress"] == "new@x.org"
    assert dict(db.execute("SELECT email, reason FROM suppressions").fetchall()) == {
        "gone@x.org": "unsubscribe", "no-jobs@x.org": "unsubscribe"}
    assert db.execute("SELECT count(*) FROM send_log").fetchone()[0] == 1  # no bounce provoked, no quota used


def test_without_a_contact_list_no_list_options_are_sent(settings, db, clock, ses):
    client, sent = ses
    add_pending(db, "new@x.org")
    plain = settings.model_copy(update={"ses_suppression_check": False})
    run_daily(plain, db, SesTransport(plain, client=client), now=clock, sleep=RecordingSleep(), rng=random.Random(1))
    assert len(sent) == 1 and "ListManagementOptions" not in sent[0]


def test_the_run_summary_to_the_user_is_no_list_mail(listed, ses):
    client, sent = ses
    reporting = listed.model_copy(update={"report_email": "me@example.com"})
    assert send_summary(reporting, RunReport(sent=1), SesTransport(reporting, client=client), now=NOW)
    assert "ListManagementOptions" not in sent[0]


def test_a_topic_opt_out_event_suppresses_like_an_unsubscribe(db):
    record = {"eventType": "Subscription", "mail": {"messageId": "m1", "destination": ["ann@x.org"], "timestamp": "2026-11-24T00:00:00Z"},
              "subscription": {"contactList": "outreach", "timestamp": "2026-11-24T01:00:00Z", "source": "UnsubscribeHeader",
                               "newTopicPreferences": {"unsubscribeAll": False, "topicSubscriptionStatus": [
                                   {"topicName": "jobs", "subscriptionStatus": "OptOut"}]},
                               "oldTopicPreferences": {"unsubscribeAll": False, "topicSubscriptionStatus": [
                                   {"topicName": "jobs", "subscriptionStatus": "OptIn"}]}}}
    report = events.apply_events(db, events.parse_notification(record), now=NOW)
    assert report.suppressed == 1
    assert tuple(db.execute("SELECT reason, source FROM suppressions").fetchone()) == ("unsubscribe", "ses-event")
    assert db.execute("SELECT detail FROM ses_events").fetchone()[0] == "unsubscribed from topic jobs (UnsubscribeHeader)"
