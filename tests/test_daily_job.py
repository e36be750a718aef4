"""`run_job`: the steps of `email-automation run` in their order, with a fake transport and clock."""

from __future__ import annotations

import pytest

from email_automation.daily_job import run_job
from email_automation.locking import RunLockedError, run_lock
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
