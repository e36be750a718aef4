"""SES's account-level suppression list: read before a run, looked up when it cannot be read, pushed to.

moto implements none of the suppression-list calls (ListSuppressedDestinations,
GetSuppressedDestination, PutSuppressedDestination), so these tests use botocore's Stubber on a
real `sesv2` client: each request is checked against the SES API model, and nothing leaves the
machine.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import Stubber

from email_automation import ses_suppression
from email_automation.database import transaction
from email_automation.run_daily import run_daily

from .fakes import RecordingSleep, ScriptedTransport

WHEN = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture
def ses():
    client = boto3.client("sesv2", region_name="us-east-1")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def ses_transport(client) -> ScriptedTransport:
    """Accepts every message like SES; its `client` is the one the suppression-list calls go to."""
    transport = ScriptedTransport(name="ses")
    transport.client = client
    return transport


def add_pending(db, *emails):
    with transaction(db):
        for email in emails:
            db.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (1, ?, 'x')", (email,))


def run(settings, db, transport, clock):
    return run_daily(settings, db, transport, now=clock, sleep=RecordingSleep(), rng=random.Random(1))


def listed(email, reason="BOUNCE"):
    return {"EmailAddress": email, "Reason": reason, "LastUpdateTime": WHEN}


def test_addresses_on_ses_list_are_suppressed_as_ses_and_never_claimed(settings, db, clock, ses):
    client, stub = ses
    add_pending(db, "listed@x.org", "ok@x.org", "also-listed@x.org")
    stub.add_response("list_suppressed_destinations", {"SuppressedDestinationSummaries": [listed("Listed@X.org")],
                                                       "NextToken": "page2"}, {"PageSize": 1000})
    stub.add_response("list_suppressed_destinations",
                      {"SuppressedDestinationSummaries": [listed("also-listed@x.org", "COMPLAINT")]},
                      {"PageSize": 1000, "NextToken": "page2"})
    transport = ses_transport(client)

    report = run(settings, db, transport, clock)

    assert transport.calls == ["ok@x.org"]  # the listed ones were never handed to SES
    assert (report.sent, report.skipped) == (1, 2)
    assert dict(db.execute("SELECT email, reason FROM suppressions").fetchall()) == {
        "listed@x.org": "ses", "also-listed@x.org": "ses"}
    assert db.execute("SELECT count(*) FROM send_log").fetchone()[0] == 1  # no quota used on them
    assert dict(db.execute("SELECT email, last_error FROM recipients WHERE status = 'skipped'").fetchall()) == {
        "listed@x.org": "suppressed: ses", "also-listed@x.org": "suppressed: ses"}


def test_the_next_sync_asks_only_for_what_changed_since_the_last(settings, db, clock, ses):
    client, stub = ses
    stub.add_response("list_suppressed_destinations", {"SuppressedDestinationSummaries": []}, {"PageSize": 1000})
    stub.add_response("list_suppressed_destinations", {"SuppressedDestinationSummaries": []},
                      {"PageSize": 1000, "StartDate": clock() - timedelta(hours=1)})
    ses_suppression.sync(db, client, now=clock())
    clock.advance(86400)
    assert ses_suppression.sync(db, client, now=clock()) == 0


def test_without_permission_to_list_each_address_is_looked_up_once_a_week(settings, db, clock, ses):
    client, stub = ses
    add_pending(db, "listed@x.org", "ok@x.org")
    stub.add_client_error("list_suppressed_destinations", service_error_code="AccessDeniedException", http_status_code=403)
    stub.add_response("get_suppressed_destination", {"SuppressedDestination": listed("listed@x.org")},
                      {"EmailAddress": "listed@x.org"})
    stub.add_client_error("get_suppressed_destination", service_error_code="NotFoundException", http_status_code=404,
                          expected_params={"EmailAddress": "ok@x.org"})
    transport = ses_transport(client)

    run(settings, db, transport, clock)

    assert transport.calls == ["ok@x.org"]
    assert db.execute("SELECT reason FROM suppressions WHERE email = 'listed@x.org'").fetchone()[0] == "ses"
    view = ses_suppression.SuppressionList(client)
    assert view.listed(db, "ok@x.org", now=clock() + timedelta(days=6)) is False  # cached: no call
    stub.add_response("get_suppressed_destination", {"SuppressedDestination": listed("ok@x.org", "COMPLAINT")},
                      {"EmailAddress": "ok@x.org"})
    assert view.listed(db, "ok@x.org", now=clock() + timedelta(days=8)) is True  # asked again after a week


def test_a_sandbox_account_that_may_not_use_the_list_still_sends(settings, db, clock, ses, caplog):
    client, stub = ses
    add_pending(db, "a@x.org", "b@x.org")
    stub.add_client_error("list_suppressed_destinations", service_error_code="BadRequestException",
                          service_message="suppression list management is disabled in the sandbox")
    stub.add_client_error("get_suppressed_destination", service_error_code="BadRequestException",
                          service_message="suppression list management is disabled in the sandbox")
    transport = ses_transport(client)

    report = run(settings, db, transport, clock)

    assert transport.calls == ["a@x.org", "b@x.org"]  # asked once, then the run goes on without it
    assert report.sent == 2 and report.fatal_error is None
    assert ("SES suppression list not checked (GetSuppressedDestination: BadRequestException: suppression list "
            "management is disabled in the sandbox); the local list alone applies this run") in caplog.text


def test_push_puts_our_hard_bounces_and_complaints_on_ses_list_once(settings, db, clock, ses):
    client, stub = ses
    with transaction(db):
        db.executemany("INSERT INTO suppressions (email, reason, source, created_at) VALUES (?, ?, ?, ?)", [
            ("hard@x.org", "bounce", "ses-event", "2026-11-01"), ("angry@x.org", "complaint", "smtp", "2026-11-02"),
            ("asked@x.org", "manual", "cli", "2026-11-03"), ("soft@x.org", "soft_bounce", "ses-event", "2026-11-04"),
            ("theirs@x.org", "ses", "ses-suppression-list", "2026-11-05")])
    stub.add_response("put_suppressed_destination", {}, {"EmailAddress": "hard@x.org", "Reason": "BOUNCE"})
    stub.add_response("put_suppressed_destination", {}, {"EmailAddress": "angry@x.org", "Reason": "COMPLAINT"})
    pushing = settings.model_copy(update={"ses_push_suppressions": True, "ses_suppression_check": False})

    ses_suppression.prepare(db, client, pushing, now=clock())
    ses_suppression.prepare(db, client, pushing, now=clock())  # nothing left to push: no call

    assert dict(db.execute("SELECT email, reason FROM ses_suppression_pushed").fetchall()) == {
        "hard@x.org": "bounce", "angry@x.org": "complaint"}


def test_a_failed_push_is_tried_again_next_time(settings, db, clock, ses):
    client, stub = ses
    with transaction(db):
        db.execute("INSERT INTO suppressions VALUES ('hard@x.org', 'bounce', 'ses-event', '2026-11-01')")
    stub.add_client_error("put_suppressed_destination", service_error_code="TooManyRequestsException", http_status_code=429)
    stub.add_response("put_suppressed_destination", {}, {"EmailAddress": "hard@x.org", "Reason": "BOUNCE"})
    assert ses_suppression.push(db, client, now=clock()) == 0
    assert ses_suppression.push(db, client, now=clock()) == 1


def test_a_dry_run_and_smtp_never_call_ses(settings, db, clock, ses):
    client, _ = ses  # no response stubbed: any call would fail the test
    add_pending(db, "a@x.org")
    smtp = ScriptedTransport(name="smtp")
    smtp.client = client
    assert run(settings, db, smtp, clock).sent == 1
