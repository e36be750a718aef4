"""The optional run summary to REPORT_EMAIL: only after real runs, and never able to fail one."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from email_automation.errors import FatalSendError
from email_automation.run_daily import Outcome, RunReport
from email_automation.summary_report import send_summary
from tests.fakes import ScriptedTransport

NOW = datetime(2026, 11, 25, 7, 5, tzinfo=timezone.utc)


@pytest.fixture
def report() -> RunReport:
    outcomes = [
        Outcome(NOW, "ada@example.com", "sent", "msg-1"),
        Outcome(NOW, "bob@example.com", "failed", error="MessageRejected: Address blacklisted."),
        Outcome(NOW, "cy@example.com", "unknown", error="ReadTimeoutError: no answer from SES"),
    ]
    return RunReport(sent=1, failed=1, unknown=1, skipped=2, remaining_today=77, outcomes=outcomes)


@pytest.fixture
def reporting(settings):
    return settings.model_copy(update={"report_email": "me@example.org"})


def test_a_real_run_mails_counts_and_what_needs_a_decision(reporting, report):
    transport = ScriptedTransport()
    message_id = send_summary(reporting, report, transport, now=NOW)
    [message] = transport.delivered
    assert message_id.startswith("msg-1-")  # the transport's id is returned
    assert message["To"] == "me@example.org"
    assert message["From"] == "Jane Sender <jane@example.com>"
    assert message["Subject"] == ("email-automation 2026-11-25: sent 1, failed 1, unknown 1, 77 left today"
                                  " - NEEDS ATTENTION")
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    for expected in ("Sent:      1", "Failed:    1", "Unknown:   1", "Remaining today: 77",
                     "  bob@example.com  (MessageRejected: Address blacklisted.)",
                     "`email-automation resolve EMAIL --sent` or `--pending`:\n  cy@example.com"):
        assert expected in body
    assert "ada@example.com" not in body  # successes are counted, not listed


def test_a_quiet_day_has_a_plain_subject(reporting):
    transport = ScriptedTransport()
    send_summary(reporting, RunReport(sent=80, remaining_today=0), transport, now=NOW)
    assert transport.delivered[0]["Subject"] == "email-automation 2026-11-25: sent 80, failed 0, unknown 0, 0 left today"


def test_a_stopped_run_says_why(reporting):
    transport = ScriptedTransport()
    send_summary(reporting, RunReport(fatal_error="SENDER_EMAIL x is not verified"), transport, now=NOW)
    assert "The run stopped early: SENDER_EMAIL x is not verified" in transport.delivered[0].get_content()


def test_never_for_a_dry_run_or_without_report_email(reporting, settings, report):
    transport = ScriptedTransport()
    dry = RunReport(dry_run=True, previewed=5)
    assert send_summary(reporting, dry, transport, now=NOW) is None
    assert send_summary(settings, report, transport, now=NOW) is None  # REPORT_EMAIL unset
    assert transport.calls == []


@pytest.mark.parametrize("problem", [FatalSendError("sending is paused"), RuntimeError("socket closed")])
def test_a_failed_summary_is_logged_and_never_raised(reporting, report, problem, caplog):
    transport = ScriptedTransport({"me@example.org": [problem]})
    with caplog.at_level(logging.WARNING, logger="email_automation"):
        assert send_summary(reporting, report, transport, now=NOW) is None
    assert transport.calls == ["me@example.org"]
    assert caplog.messages == [f"run summary to me@example.org not sent: {problem}"]


def test_a_circuit_breaker_pause_is_in_the_summary_and_its_subject(reporting):
    paused = "campaign 'autumn' paused by the circuit breaker since 2026-11-25T07:00:00.000000Z: bounce rate 30% ..."
    transport = ScriptedTransport()
    send_summary(reporting, RunReport(sent=2, remaining_today=78, paused=[paused]), transport, now=NOW)
    [message] = transport.delivered
    assert message["Subject"].endswith(" - NEEDS ATTENTION")
    assert f"Paused by the circuit breaker (bounce or complaint rate too high):\n  {paused}\n" in message.get_content()


def test_a_campaign_held_back_by_a_template_error_is_in_the_summary_and_its_subject(reporting):
    """The run exited 2 with an Error: line per held-back campaign; the mail said 'sent 0' and nothing else."""
    problem = ("campaign 'banks': recipient ada@example.com: HTML body template line 3: 'role' is undefined "
               "(no such variable or CSV column)")
    transport = ScriptedTransport()
    send_summary(reporting, RunReport(sent=0, remaining_today=80, template_errors=[problem]), transport, now=NOW)
    [message] = transport.delivered
    assert message["Subject"].endswith(" - NEEDS ATTENTION")
    assert f"Held back by a template error (their recipients stay pending; fix the template with " \
           f"`email-automation template set`):\n  {problem}\n" in message.get_content()


def test_a_run_outside_the_send_window_mails_only_what_needs_attention(reporting):
    """With an hourly cron most runs find the window closed: no summary for those that did
    nothing; one that found something (a send left by a killed run) says the window was closed."""
    transport = ScriptedTransport()
    window = "outside the send window (sat is not one of SEND_DAYS): nothing sent now"
    assert send_summary(reporting, RunReport(remaining_today=80, window=window), transport, now=NOW) is None
    assert transport.delivered == []
    send_summary(reporting, RunReport(remaining_today=80, window=window, recovered=1), transport, now=NOW)
    assert "\nNothing sent: outside the send window (sat is not one of SEND_DAYS).\n" in transport.delivered[0].get_content()
