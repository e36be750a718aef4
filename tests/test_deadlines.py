"""No network call outside the sends can hang either: doctor's SMTP and AWS checks, and the SQS
drain before a run, each end within their deadline against a server that drips its answer.

The servers drip for 10 s, each piece well within any socket timeout; the deadlines are 0.5 s and
the margins generous, so a loaded machine cannot make these fail, while without the deadlines
every test here would take the full 10 s.
"""

from __future__ import annotations

import logging
import re
import time

import pytest
from typer.testing import CliRunner

from email_automation import event_queue
from email_automation.cli import app
from tests.drip_http import DrippingHttp
from tests.smtp_sink import SmtpSink

DEADLINE, MARGIN = 0.5, 2.5
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/ses-events"


def doctor(tmp_path, **env):
    """`email-automation doctor` as a user runs it, with `env` on top of a ready database."""
    runner = CliRunner()
    env = {"SENDER_EMAIL": "jane@example.com", "SEND_TIMEOUT_SECONDS": str(DEADLINE), "DRY_RUN": "false", **env}
    db_path = str(tmp_path / "doctor.db")
    assert runner.invoke(app, ["init", "--db", db_path], env=env).exit_code == 0
    started = time.monotonic()
    result = runner.invoke(app, ["doctor", "--db", db_path], env=env, catch_exceptions=False)
    return result, time.monotonic() - started


def failed(output):
    """(check, detail) of each FAIL line doctor printed."""
    return [tuple(part.strip() for part in re.split(r"\s{2,}", line.strip(), maxsplit=2)[1:])
            for line in output.splitlines() if line.startswith("FAIL  ")]


@pytest.mark.parametrize("stage", ["greeting", "EHLO"])
def test_doctor_gives_up_on_an_smtp_server_that_drips_its_replies(tmp_path, stage):
    with SmtpSink(drip_at=stage, drip_every=0.1, drip_for=10.0) as sink:
        result, elapsed = doctor(tmp_path, TRANSPORT="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port),
                                 SMTP_STARTTLS="false")
    assert elapsed < DEADLINE + MARGIN
    assert result.exit_code == 1
    assert ("SMTP login", f"127.0.0.1:{sink.port} did not complete the login exchange within "
            "SEND_TIMEOUT_SECONDS (0.5 s)") in failed(result.stdout)
    assert "raise SEND_TIMEOUT_SECONDS for a slow one" in result.stdout


def test_doctor_gives_up_on_an_aws_endpoint_that_drips_its_answers(tmp_path):
    with DrippingHttp(part="body") as server:
        result, elapsed = doctor(tmp_path, TRANSPORT="ses", AWS_REGION="us-east-1", AWS_ENDPOINT_URL=server.url,
                                 SES_EVENTS_QUEUE_URL=QUEUE_URL)
    assert elapsed < 3 * DEADLINE + MARGIN  # identity, account, queue: one deadline each
    assert result.exit_code == 1
    failures = failed(result.stdout)
    unreachable = "cannot reach SES in us-east-1: no complete answer from sesv2 within 0.5 s"
    assert ("SES sender identity", unreachable) in failures
    assert ("SES account", unreachable) in failures
    assert ("SES events queue", "cannot reach SQS: no complete answer from sqs within 0.5 s") in failures


def test_a_run_does_not_wait_on_an_events_queue_that_drips(settings, db, clock, monkeypatch, caplog):
    monkeypatch.setattr(event_queue, "CALL_SECONDS", DEADLINE)
    settings = settings.model_copy(update={"ses_events_queue_url": QUEUE_URL})
    with DrippingHttp(part="headers") as server, caplog.at_level(logging.WARNING):
        client = event_queue.make_sqs_client(settings, queue_url=QUEUE_URL, endpoint_url=server.url)
        started = time.monotonic()
        assert event_queue.drain_before_run(settings, db, now=clock, client=client, wait_seconds=0) is None
        assert time.monotonic() - started < DEADLINE + MARGIN
    assert (f"events: SES events not read ({QUEUE_URL}: cannot reach SQS: no complete answer from sqs within "
            "0.5 s); the run goes on without them") in caplog.messages


def test_a_real_ses_run_does_not_wait_on_a_suppression_list_read_that_drips(settings, db, clock, caplog):
    """SES_SUPPRESSION_CHECK reads SES's list before the first claim: that call has a deadline too."""
    from email_automation import run_gates
    from email_automation.transports.ses import SesTransport, make_ses_client

    settings = settings.model_copy(update={"ses_suppression_check": True, "send_timeout_seconds": DEADLINE,
                                           "aws_region": "us-east-1"})
    with DrippingHttp(part="body") as server, caplog.at_level(logging.WARNING):
        transport = SesTransport(settings, client=make_ses_client(settings, endpoint_url=server.url))
        started = time.monotonic()
        gate = run_gates.SesGate.for_run(settings, db, transport, now=clock)
        assert time.monotonic() - started < DEADLINE + MARGIN
    assert gate.suppression is not None and not gate.suppression.synced
    assert any("SES suppression list not read" in m and "within 0.5 s" in m for m in caplog.messages), caplog.messages
