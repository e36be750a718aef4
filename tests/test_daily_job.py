"""`run_job`: the steps of `email-automation run` in their order, with a fake transport and clock."""

from __future__ import annotations

import pytest

from email_automation.daily_job import run_job
from email_automation.locking import RunLockedError, run_lock
from email_automation.run_daily import RunOptions
from tests.fakes import RecordingSleep, ScriptedTransport


def add_recipients(db, *emails):
    db.executemany("INSERT INTO recipients (campaign_id, email, created_at) VALUES (1, ?, 'x')", [(e,) for e in emails])


def test_sends_the_batch_then_mails_the_summary_and_closes_the_transport(settings, db, clock):
    settings = settings.model_copy(update={"report_email": "me@example.org"})
    add_recipients(db, "ada@example.com", "bob@example.com")
    transport = ScriptedTransport()
    report = run_job(settings, db, transport, now=clock, sleep=RecordingSleep())
    assert (report.sent, transport.recipients) == (2, ["ada@example.com", "bob@example.com", "me@example.org"])
    assert transport.closed


def test_the_transport_is_closed_when_another_run_holds_the_lock(settings, db, clock):
    add_recipients(db, "ada@example.com")
    transport = ScriptedTransport()
    with run_lock(settings.db_path), pytest.raises(RunLockedError):
        run_job(settings, db, transport, now=clock, sleep=RecordingSleep())
    assert transport.closed and transport.calls == []


def test_one_options_object_goes_straight_through_to_the_run(settings, db, clock):
    add_recipients(db, "ada@example.com", "bob@example.com")
    seen = []
    options = RunOptions(now=clock, sleep=RecordingSleep(), limit=1, on_outcome=seen.append)
    report = run_job(settings, db, ScriptedTransport(), options)
    assert (report.sent, [o.email for o in seen]) == (1, ["ada@example.com"])
    with pytest.raises(TypeError, match="not both"):
        run_job(settings, db, ScriptedTransport(), options, limit=2)
