"""The daily run: limits, delays, dry runs, every error class, and never a second send."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import datetime, timezone

import pytest

from email_automation import admin
from email_automation.errors import (
    AmbiguousSendError,
    FatalSendError,
    PermanentSendError,
    TransientSendError,
)
from email_automation.locking import RunLockedError, run_lock
from email_automation.run_daily import TRANSIENT_RETRIES, run_daily
from email_automation.transports.dry_run import DryRunTransport

from .conftest import shared_connection
from .fakes import RecordingSleep, ScriptedTransport, trace_statements


def add_recipients(db, count, campaign_id=1, start=0):
    for i in range(start, start + count):
        db.execute(
            "INSERT INTO recipients (campaign_id, email, first_name, company, fields, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'x')",
            (campaign_id, f"person{i}@example.com", f"Person{i}", "Acme", json.dumps({"role": "CTO"})),
        )


def statuses(db):
    return dict(db.execute("SELECT email, status FROM recipients").fetchall())


def run(settings, db, transport, clock, **kwargs):
    sleep = kwargs.pop("sleep", RecordingSleep())
    return run_daily(settings, db, transport, now=clock, sleep=sleep, rng=random.Random(1), **kwargs)


def test_sends_pending_recipients_oldest_first_and_logs_each_message_id(settings, db, clock):
    add_recipients(db, 3)
    transport = ScriptedTransport()
    report = run(settings, db, transport, clock)
    assert report.sent == 3
    assert transport.recipients == ["person0@example.com", "person1@example.com", "person2@example.com"]
    logged = [tuple(r) for r in db.execute("SELECT status, message_id FROM send_log ORDER BY id")]
    assert [s for s, _ in logged] == ["sent"] * 3
    assert all(mid.startswith("msg-") for _, mid in logged)
    assert set(statuses(db).values()) == {"sent"}


def test_daily_limit_holds_across_runs_and_resets_after_midnight_in_timezone(settings, db, clock):
    settings = settings.model_copy(update={"daily_limit": 4})
    add_recipients(db, 10)
    transport = ScriptedTransport()
    assert run(settings, db, transport, clock, limit=3).sent == 3
    second = run(settings, db, transport, clock)
    assert (second.sent, second.remaining_today) == (1, 0)
    assert run(settings, db, transport, clock).sent == 0
    # 22:30 UTC is 23:30 in Berlin: still the same day there.
    clock.current = datetime(2026, 11, 25, 22, 30, tzinfo=timezone.utc)
    assert run(settings, db, transport, clock).sent == 0
    # 23:30 UTC is 00:30 the next day in Berlin: a new batch.
    clock.current = datetime(2026, 11, 25, 23, 30, tzinfo=timezone.utc)
    assert run(settings, db, transport, clock).sent == 4
    assert len(transport.delivered) == 8
    assert len(set(transport.recipients)) == 8


def test_unknown_and_interrupted_attempts_count_toward_the_limit(settings, db, clock):
    settings = settings.model_copy(update={"daily_limit": 2})
    add_recipients(db, 5)
    transport = ScriptedTransport({"person0@example.com": [AmbiguousSendError("read timeout")]})
    report = run(settings, db, transport, clock)
    assert (report.unknown, report.sent) == (1, 1)
    assert run(settings, db, transport, clock).sent == 0


def test_delay_between_sends_but_not_after_the_last(settings, db, clock):
    settings = settings.model_copy(update={"delay_seconds": 7.0, "delay_jitter_seconds": 3.0})
    add_recipients(db, 4)
    sleep = RecordingSleep()
    run(settings, db, ScriptedTransport(), clock, sleep=sleep)
    assert len(sleep.calls) == 3
    assert all(7.0 <= s <= 10.0 for s in sleep.calls)


def test_a_dry_run_does_not_wait_between_messages_but_a_real_run_does(settings, db, clock):
    settings = settings.model_copy(update={"delay_seconds": 60.0})
    add_recipients(db, 3)
    sleep = RecordingSleep()
    assert run(settings, db, DryRunTransport(settings), clock, sleep=sleep).previewed == 3
    assert sleep.calls == [], "nothing leaves the machine in a dry run: no delay is owed"
    assert run(settings, db, ScriptedTransport(), clock, sleep=sleep).sent == 3
    assert sleep.calls == [60.0, 60.0]


def test_a_dry_run_by_hand_with_a_long_delay_ends_at_once(settings, monkeypatch, tmp_path):
    # The README's by-hand steps, through the CLI: `import` then `run` in DRY_RUN.
    from pathlib import Path

    from typer.testing import CliRunner

    from email_automation.cli import app

    slept = []
    monkeypatch.setattr("time.sleep", slept.append)  # the CLI's real sleep; a 60 s wait would show here
    env = {"SENDER_EMAIL": "jane@example.com", "DELAY_SECONDS": "60", "DRY_RUN": "true", "TIMEZONE": "UTC"}
    db_path = str(tmp_path / "by-hand.db")
    example = Path(__file__).resolve().parents[1] / "examples" / "recipients.csv"
    runner = CliRunner()
    for args in (["init"], ["import", str(example)], ["run", "--json"]):
        result = runner.invoke(app, [*args, "--db", db_path], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["previewed"] >= 15
    assert [s for s in slept if s >= 1] == []  # no DELAY_SECONDS wait (another thread's short poll may show)


def test_dry_run_writes_the_outbox_sends_nothing_and_changes_no_status(settings, db, clock):
    add_recipients(db, 3)
    report = run(settings, db, DryRunTransport(settings), clock)
    assert report.dry_run and report.previewed == 3 and report.sent == 0
    assert set(statuses(db).values()) == {"pending"}
    assert [r[0] for r in db.execute("SELECT status FROM send_log")] == ["dry_run"] * 3
    assert len(list(settings.outbox_dir.glob("*/*.eml"))) == 3  # in the run's own folder
    assert report.remaining_today == settings.daily_limit, "dry runs do not count toward the limit"


def test_a_template_error_holds_back_its_campaign_before_any_send(settings, db, clock):
    add_recipients(db, 2)
    db.execute("UPDATE campaigns SET subject_template = 'Hello {{ nickname }}'")
    transport = ScriptedTransport()
    report = run(settings, db, transport, clock)
    [error] = report.template_errors
    assert "person0@example.com" in error and "nickname" in error
    assert transport.calls == []
    assert db.execute("SELECT count(*) FROM send_log").fetchone()[0] == 0
    assert set(statuses(db).values()) == {"pending"}


def test_transient_errors_are_retried_with_backoff_within_the_run(settings, db, clock):
    add_recipients(db, 1)
    transport = ScriptedTransport({"person0@example.com": [TransientSendError("throttled")] * 2})
    sleep = RecordingSleep()
    report = run(settings, db, transport, clock, sleep=sleep)
    assert report.sent == 1
    assert sleep.calls == [2, 4]
    assert transport.calls == ["person0@example.com"] * 3
    logged = db.execute("SELECT status, error FROM send_log").fetchone()
    assert tuple(logged) == ("sent", "sent after 2 refused tries (last: throttled)")


def test_transient_errors_that_persist_leave_the_recipient_pending_then_failed(settings, db, clock):
    settings = settings.model_copy(update={"max_attempts": 2})
    add_recipients(db, 1)
    transport = ScriptedTransport({"person0@example.com": [TransientSendError("421 try later", code="421")] * 8})
    sleep = RecordingSleep()
    first = run(settings, db, transport, clock, sleep=sleep)
    assert first.deferred == 1
    assert transport.calls == ["person0@example.com"] * (TRANSIENT_RETRIES + 1)
    assert sleep.calls == [2, 4, 8]
    row = db.execute("SELECT status, attempts, last_error FROM recipients").fetchone()
    assert tuple(row) == ("pending", 1, "421: 421 try later")
    run(settings, db, transport, clock)
    assert statuses(db) == {"person0@example.com": "failed"}


def test_permanent_error_fails_that_recipient_and_the_run_goes_on(settings, db, clock):
    add_recipients(db, 3)
    transport = ScriptedTransport({"person1@example.com": [PermanentSendError("550 no such user", code="550")]})
    report = run(settings, db, transport, clock)
    assert (report.sent, report.failed) == (2, 1)
    assert statuses(db)["person1@example.com"] == "failed"
    assert run(settings, db, transport, clock).sent == 0, "a failed recipient is not retried by itself"


def test_ambiguous_outcome_becomes_unknown_and_is_never_retried(settings, db, clock):
    add_recipients(db, 2)
    transport = ScriptedTransport({"person0@example.com": [AmbiguousSendError("read timeout")]})
    run(settings, db, transport, clock)
    clock.advance(86400)
    run(settings, db, transport, clock)
    assert transport.calls.count("person0@example.com") == 1
    assert statuses(db)["person0@example.com"] == "unknown"


def test_fatal_error_stops_the_run_and_leaves_the_rest_pending(settings, db, clock):
    add_recipients(db, 4)
    transport = ScriptedTransport({"person1@example.com": [FatalSendError("sender not verified")]})
    report = run(settings, db, transport, clock)
    assert report.fatal_error == "sender not verified"
    assert report.sent == 1
    assert transport.calls == ["person0@example.com", "person1@example.com"]
    assert [s for e, s in sorted(statuses(db).items())] == ["sent", "pending", "pending", "pending"]


def test_a_killed_runs_claims_become_unknown_at_the_next_start(settings, db, clock):
    add_recipients(db, 2)
    db.execute("UPDATE recipients SET status = 'sending' WHERE email = 'person0@example.com'")
    transport = ScriptedTransport()
    report = run(settings, db, transport, clock)
    assert report.recovered == 1
    assert transport.recipients == ["person1@example.com"]
    assert statuses(db)["person0@example.com"] == "unknown"


def test_a_second_concurrent_run_is_turned_away(settings, db, clock):
    add_recipients(db, 1)
    transport = ScriptedTransport()
    with run_lock(settings.db_path):
        with pytest.raises(RunLockedError, match="another run"):
            run(settings, db, transport, clock)
    assert transport.calls == []


def test_suppressed_and_already_contacted_addresses_are_skipped(settings, db, clock):
    add_recipients(db, 3)
    db.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) SELECT 'second', subject_template, html_template, 'x' FROM campaigns")
    admin.suppress(db, "person2@example.com", reason="complaint")
    transport = ScriptedTransport()
    run(settings, db, transport, clock)
    db.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (2, 'person0@example.com', 'x')")
    report = run(settings, db, transport, clock)
    assert report.skipped == 1
    assert transport.recipients == ["person0@example.com", "person1@example.com"]
    reason = db.execute("SELECT last_error FROM recipients WHERE campaign_id = 2").fetchone()[0]
    assert reason == "already contacted in campaign 'default'"


def test_an_address_pending_in_two_campaigns_is_mailed_once_in_one_run(settings, db, clock):
    settings = settings.model_copy(update={"delay_seconds": 1})
    add_recipients(db, 1)
    db.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) SELECT 'second', subject_template, html_template, 'x' FROM campaigns")
    db.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (2, 'person0@example.com', 'x')")
    add_recipients(db, 1, start=1)
    transport, sleep = ScriptedTransport(), RecordingSleep()
    report = run(settings, db, transport, clock, sleep=sleep)
    assert transport.calls == ["person0@example.com", "person1@example.com"]
    assert (report.sent, report.skipped) == (2, 1)
    reason = db.execute("SELECT status, last_error FROM recipients WHERE campaign_id = 2").fetchone()
    assert tuple(reason) == ("skipped", "already contacted in campaign 'default'")
    assert len(sleep.calls) == 1, "a skip owes no delay"


def test_a_campaign_paused_during_a_run_gets_no_further_message(settings, shared_db, clock):
    db = shared_db  # the transport below uses it from the send's worker thread
    add_recipients(db, 3)

    class PausingTransport(ScriptedTransport):
        def send(self, message, *, tags):
            message_id = super().send(message, tags=tags)
            admin.set_campaign_status(db, "default", "paused")  # e.g. from the dashboard, mid-run
            return message_id

    transport = PausingTransport()
    report = run(settings, db, transport, clock)
    assert transport.calls == ["person0@example.com"]
    assert (report.sent, report.deferred) == (1, 2)
    assert sorted(statuses(db).values()) == ["pending", "pending", "sent"]


def test_paused_campaigns_are_left_alone(settings, db, clock):
    add_recipients(db, 2)
    admin.set_campaign_status(db, "default", "paused")
    assert run(settings, db, ScriptedTransport(), clock).sent == 0
    admin.set_campaign_status(db, "default", "active")
    assert run(settings, db, ScriptedTransport(), clock).sent == 2


def test_recipient_data_reaches_the_html_escaped(settings, db, clock):
    db.execute("INSERT INTO recipients (campaign_id, email, first_name, company, created_at)"
               " VALUES (1, 'x@example.com', '<script>alert(1)</script>', 'A&B \"Co\"', 'x')")
    transport = ScriptedTransport()
    run(settings, db, transport, clock)
    html = transport.delivered[0].get_body(("html",)).get_content()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


def test_an_address_no_message_can_be_built_for_fails_without_blocking_the_run(settings, db, clock):
    add_recipients(db, 2)
    db.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (1, 'jörg@example.com', 'x')")
    transport = ScriptedTransport()
    report = run(settings, db, transport, clock)
    assert (report.sent, report.failed) == (2, 1)
    assert statuses(db)["jörg@example.com"] == "failed"
    assert db.execute("SELECT count(*) FROM send_log WHERE status = 'sending'").fetchone()[0] == 0


def test_repeated_time_outs_stop_the_run_instead_of_making_everyone_unknown(settings, db, clock):
    add_recipients(db, 6)
    script = {f"person{i}@example.com": [AmbiguousSendError("read timeout", code="ReadTimeoutError")] for i in range(6)}
    report = run(settings, db, ScriptedTransport(script), clock)
    assert report.unknown == 3
    assert report.fatal_error.startswith("3 messages in a row got no clear answer")
    assert sorted(statuses(db).values()) == ["pending"] * 3 + ["unknown"] * 3


def test_a_relay_down_for_days_stops_each_run_and_fails_no_recipient(settings, db, clock):
    # The real SMTP transport against a port nothing listens on, one run a day for longer than
    # MAX_ATTEMPTS: the relay is at fault, so every recipient stays in the queue, untouched.
    import socket

    from email_automation.transports.smtp import SmtpTransport

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings.model_copy(update={"max_attempts": 2, "dry_run": False, "transport": "smtp",
                                           "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False})
    add_recipients(db, 5)
    for _ in range(3):
        report = run(settings, db, SmtpTransport(settings), clock)
        assert (report.sent, report.failed, report.deferred) == (0, 0, 3)
        assert "3 messages in a row" in report.fatal_error
    assert set(statuses(db).values()) == {"pending"}
    assert db.execute("SELECT max(attempts) FROM recipients").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM send_log WHERE status = 'deferred'").fetchone()[0] == 9


def test_the_same_refusal_five_times_in_a_row_is_a_setup_problem(settings, db, clock):
    add_recipients(db, 8)
    script = {f"person{i}@example.com": [PermanentSendError("bad header", code="BadRequestException")] for i in range(8)}
    report = run(settings, db, ScriptedTransport(script), clock)
    assert report.failed == 5
    assert "5 messages in a row were refused with the same error" in report.fatal_error
    assert list(statuses(db).values()).count("pending") == 3


def test_different_refusals_do_not_stop_the_run(settings, db, clock):
    add_recipients(db, 8)
    script = {f"person{i}@example.com": [PermanentSendError("no such user", code="550" if i % 2 else "551")] for i in range(8)}
    report = run(settings, db, ScriptedTransport(script), clock)
    assert (report.failed, report.fatal_error) == (8, None)


def test_a_recording_failure_after_the_send_names_the_message_id(settings, db, clock, monkeypatch, caplog):
    import sqlite3

    from email_automation import ledger

    add_recipients(db, 1)

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ledger, "record_sent_many", broken)
    with pytest.raises(sqlite3.OperationalError):
        run(settings, db, ScriptedTransport(), clock)
    assert "person0@example.com was accepted as msg-1-" in caplog.text
    assert statuses(db) == {"person0@example.com": "sending"}


def test_the_lock_is_shared_by_a_path_through_a_symlink(settings, db, clock, tmp_path):
    link = tmp_path / "via-link.db"
    link.symlink_to(settings.db_path)
    with run_lock(link):
        with pytest.raises(RunLockedError):
            run(settings, db, ScriptedTransport(), clock)


class CappedTransport(ScriptedTransport):
    """A provider that reports its own remaining quota and rate, as SES's GetAccount does."""

    def __init__(self, capacity):
        super().__init__(name="ses")
        self.capacity = capacity

    def sending_capacity(self):
        if isinstance(self.capacity, Exception):
            raise self.capacity
        return self.capacity


def test_a_run_stays_inside_the_providers_quota_and_rate(settings, db, clock):
    from email_automation.transports.ses import SendingCapacity

    add_recipients(db, 10)
    sleep = RecordingSleep()
    report = run(settings, db, CappedTransport(SendingCapacity(remaining_24h=3, min_interval=1.0)), clock, sleep=sleep)
    assert report.sent == 3
    assert sleep.calls == [1.0, 1.0], "DELAY_SECONDS=0 is raised to the account's 1 message/s"


def test_an_account_that_may_not_send_stops_the_run_before_any_claim(settings, db, clock):
    add_recipients(db, 2)
    transport = CappedTransport(FatalSendError("SES says this account may not send"))
    report = run(settings, db, transport, clock)
    assert report.fatal_error == "SES says this account may not send"
    assert transport.calls == []
    assert db.execute("SELECT count(*) FROM send_log").fetchone()[0] == 0
    assert set(statuses(db).values()) == {"pending"}


def test_a_killed_send_that_ses_already_reported_is_settled_as_sent_not_unknown(settings, db, clock):
    from email_automation.events import DeliveryEvent, EventKind, apply_events

    add_recipients(db, 1)
    db.execute("UPDATE recipients SET status = 'sending'")
    db.execute("INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, transport)"
               " VALUES (1, 'att-killed', '2026-11-25', 'x', 'sending', 'ses')")
    # The events drain before the run stored SES's Send event for that attempt.
    apply_events(db, [DeliveryEvent(EventKind.SENT, "person0@example.com", "ses-1", "att-killed", None, None, "k1")],
                 now=clock())
    transport = ScriptedTransport()
    report = run(settings, db, transport, clock)
    assert report.recovered == 1
    assert statuses(db) == {"person0@example.com": "sent"}
    assert transport.calls == []


def test_a_broken_template_holds_back_only_its_campaign_and_the_others_fill_the_batch(settings, db, clock):
    settings = settings.model_copy(update={"daily_limit": 2})
    db.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at)"
               " VALUES ('autumn', 'Hi {{ first_name }}', '<p>Hi</p>', 'x')")
    add_recipients(db, 2)  # the oldest: campaign 'default', whose template now reads a missing column
    add_recipients(db, 2, campaign_id=2, start=2)
    db.execute("UPDATE campaigns SET html_template = '<p>{{ nickname }}</p>' WHERE name = 'default'")
    transport = ScriptedTransport()
    report = run(settings, db, transport, clock)
    assert transport.recipients == ["person2@example.com", "person3@example.com"]
    assert report.sent == 2
    assert report.template_errors == [
        "campaign 'default': cannot render the HTML body for person0@example.com: 'nickname' is undefined "
        "(add that column to the CSV, or change the template)"]
    assert statuses(db)["person0@example.com"] == statuses(db)["person1@example.com"] == "pending"


def test_no_sleep_at_all_when_the_delay_is_zero(settings, db, clock):
    add_recipients(db, 4)
    sleep = RecordingSleep()
    assert run(settings, db, ScriptedTransport(), clock, sleep=sleep).sent == 4
    assert sleep.calls == [], "DELAY_SECONDS=0 waits for nothing, not even sleep(0)"


class _Watching(ScriptedTransport):
    """Looks at the database, from another connection, at the moment each message leaves."""

    def __init__(self, settings, db, on_send=None):
        super().__init__()
        self.db, self.on_send, self.seen = db, on_send, []
        self.other = shared_connection(settings.db_path, readonly=True)

    def send(self, message, *, tags):
        status = self.other.execute("SELECT status FROM send_log WHERE attempt_id = ?", (tags["attempt_id"],)).fetchone()
        self.seen.append((status[0] if status else None, self.db.execute("PRAGMA synchronous").fetchone()[0]))
        if self.on_send:
            self.on_send(len(self.seen))
        return super().send(message, tags=tags)


def test_each_claim_is_committed_with_a_full_sync_before_its_message_leaves(settings, shared_db, clock):
    db = shared_db  # the transport below uses it from the send's worker thread
    add_recipients(db, 3)
    transport = _Watching(settings, db)
    assert run(settings, db, transport, clock).sent == 3
    # Seen from another connection: committed. synchronous=FULL (2): flushed to disk by the commit.
    assert transport.seen == [("sending", 2)] * 3
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2, "outcomes are recorded lazily, then FULL again"


def test_a_recipient_that_no_longer_renders_stops_the_run_before_its_claim(settings, shared_db, clock):
    """Messages are checked before the first send and built again at their turn; data changed in
    between (a re-import, say) cannot send a half-rendered message."""
    db = shared_db  # the transport below uses it from the send's worker thread
    add_recipients(db, 3)
    db.execute("UPDATE campaigns SET subject_template = 'For the {{ role }}'")

    def drop_the_column(sent):
        db.execute("UPDATE recipients SET fields = '{}'")

    transport = _Watching(settings, db, on_send=drop_the_column)
    report = run(settings, db, transport, clock)
    assert report.sent == 1 and "role" in report.fatal_error
    assert [s for s, in db.execute("SELECT status FROM send_log")] == ["sent"], "nothing else was claimed"
    assert sorted(statuses(db).values()) == ["pending", "pending", "sent"]


def test_a_recipient_edited_during_the_run_gets_the_message_of_their_new_data(settings, shared_db, clock):
    """The content checked before the first send is used again only while the recipient is unchanged."""
    db = shared_db  # the transport below uses it from the send's worker thread
    add_recipients(db, 3)

    def rename(sent):
        db.execute("UPDATE recipients SET first_name = 'Renamed' WHERE email = 'person2@example.com'")

    transport = _Watching(settings, db, on_send=rename)
    assert run(settings, db, transport, clock).sent == 3
    bodies = {to: message.get_body(("plain",)).get_content() for to, message in
              zip(transport.recipients, transport.delivered)}
    assert "Renamed" in bodies["person2@example.com"] and "Renamed" not in bodies["person1@example.com"]


def test_each_message_costs_a_bounded_number_of_sql_statements(settings, db, clock):
    """Every statement costs CPU a run of thousands pays per message: the claim (the daily limit,
    the recipient, the suppression list, other campaigns, replies, the campaign's people at the
    company), the send and its record, and the breaker's one look for news. The per-day company
    count is skipped while the day's sends are below MAX_NEW_PER_COMPANY_PER_DAY, and the claim's
    checks read the recipient once."""
    settings = settings.model_copy(update={"daily_limit": 100, "max_new_per_company_per_day": 100,
                                           "max_contacts_per_company": 100})
    add_recipients(db, 40)
    statements = trace_statements(db)
    try:
        assert run(settings, db, ScriptedTransport(), clock).sent == 40
    finally:
        db.set_trace_callback(None)
    assert len(statements) / 40 < 21, len(statements) / 40


def test_a_recipient_changed_after_the_check_gets_a_message_made_from_the_new_data(settings, db, clock):
    """The check's rendered content and headers are used again only while the recipient is unchanged."""
    add_recipients(db, 2)
    other = shared_connection(settings.db_path)  # used from the send's worker thread

    class Renaming(ScriptedTransport):
        def send(self, message, *, tags):
            if not self.delivered:  # person1 was checked; now, before its turn, the user renames them
                with other:
                    other.execute("UPDATE recipients SET first_name = 'Grace' WHERE email = 'person1@example.com'")
            return super().send(message, tags=tags)

    transport = Renaming()
    try:
        assert run(settings, db, transport, clock).sent == 2
    finally:
        other.close()
    first, second = transport.delivered
    assert str(first["To"]) == "Person0 <person0@example.com>"
    assert str(second["To"]) == "Grace <person1@example.com>", "headers made again from the new row"
    assert "Grace" in second.get_body(("plain",)).get_content()


def test_memory_does_not_grow_with_the_batch(settings, db, clock, monkeypatch):
    """Each message is built again just before its claim: the run keeps none of them, and of their
    checked content only what KEPT_RENDERS_CHARS allows (here about 20 messages' worth)."""
    import gc
    import tracemalloc

    from email_automation import run_daily as module

    monkeypatch.setattr(module, "KEPT_RENDERS_CHARS", 8_000)

    class Null:
        name = "smtp"

        def send(self, message, *, tags):
            return "id"

        def close(self):
            pass

    def peak(count, start):
        add_recipients(db, count, start=start)
        gc.collect()  # what earlier tests left for the collector is not this run's
        tracemalloc.start()
        try:
            assert run(settings.model_copy(update={"daily_limit": 10_000}), db, Null(), clock).sent == count
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(20, 0), peak(160, 20)
    # Keeping every built message costs 10 KiB each before it is sent (1.4 MiB more here, and
    # 100 KiB each once serialized); what is kept now (ids and outcomes) about 0.5 KiB.
    assert large - small < 2**19, (small, large)


def _interrupted_at_the_wait(monkeypatch, calls: int, before=lambda: None):
    """Ctrl-C (as SIGINT or SIGTERM does) lands while the run's thread waits for send number
    `calls` (counted from 1) to finish; `before` runs first, in that thread."""
    from email_automation.concurrent_send import ConcurrentSender

    real, waits = ConcurrentSender.done, []

    def done(self, *, block):
        if block:
            waits.append(1)
            if len(waits) == calls:
                before()
                raise KeyboardInterrupt
        return real(self, block=block)

    monkeypatch.setattr(ConcurrentSender, "done", done)


def test_one_at_a_time_an_interruption_waits_for_the_send_in_flight_and_records_it(settings, db, clock, monkeypatch,
                                                                                    caplog):
    """Before, the send in flight was cut (or abandoned) and its claim left `sending`: unknown after
    the next run, although it had gone out. Here it ends only once the run has said it waits for it."""
    add_recipients(db, 3)
    started, release = threading.Event(), threading.Event()

    class Slow(ScriptedTransport):
        def send(self, message, *, tags):
            if len(self.calls) == 1:  # person1's
                started.set()
                assert release.wait(30)
            return super().send(message, tags=tags)

    class ReleaseOnceWaited(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("waiting for the send in flight"):
                release.set()

    _interrupted_at_the_wait(monkeypatch, 2, lambda: started.wait(30))
    transport, handler = Slow(), ReleaseOnceWaited()
    logging.getLogger("email_automation").addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, logger="email_automation"), pytest.raises(KeyboardInterrupt):
            run(settings, db, transport, clock)
    finally:
        logging.getLogger("email_automation").removeHandler(handler)
    assert release.is_set(), "the run said it waits for the send"
    assert transport.recipients == ["person0@example.com", "person1@example.com"]
    assert statuses(db) == {"person0@example.com": "sent", "person1@example.com": "sent",
                            "person2@example.com": "pending"}, "the send in flight is recorded, not left unknown"
    assert "waiting for the send in flight to finish, to record it" in caplog.text


def test_an_interruption_after_a_send_finished_records_it_without_saying_it_waits(settings, db, clock, monkeypatch,
                                                                                   caplog):
    """Ctrl-C just as the run was handed a finished send, before it recorded it: nothing is left
    to wait for, so the wind-down records it and does not say it waits for a send in flight."""
    from email_automation.concurrent_send import ConcurrentSender

    add_recipients(db, 3)
    real = ConcurrentSender.done

    def done(self, *, block):
        finished = real(self, block=block)
        if block and finished:
            raise KeyboardInterrupt
        return finished

    monkeypatch.setattr(ConcurrentSender, "done", done)
    transport = ScriptedTransport()
    with caplog.at_level(logging.INFO, logger="email_automation"), pytest.raises(KeyboardInterrupt):
        run(settings, db, transport, clock)
    assert transport.recipients == ["person0@example.com"]
    assert statuses(db)["person0@example.com"] == "sent"
    assert "person0@example.com sent" in caplog.text
    assert "waiting for" not in caplog.text


def test_a_second_interruption_early_in_the_wind_down_still_closes_the_pool_and_records(settings, db, clock,
                                                                                        monkeypatch):
    """Ctrl-C twice: the second one lands as the run starts to wind down (here, as it takes back
    the queued sends). The send in flight is still waited for and recorded, and no worker thread
    goes on sending after the run."""
    from email_automation.concurrent_send import ConcurrentSender

    add_recipients(db, 3)
    started, release = threading.Event(), threading.Event()

    class Slow(ScriptedTransport):
        def send(self, message, *, tags):
            if len(self.calls) == 1:
                started.set()
                assert release.wait(30)
            return super().send(message, tags=tags)

    real_cancel, cancels = ConcurrentSender.cancel_queued, []

    def cancel_interrupted_once(self, *args, **kwargs):
        cancels.append(1)
        if len(cancels) == 1:
            release.set()
            raise KeyboardInterrupt  # the second Ctrl-C
        return real_cancel(self, *args, **kwargs)

    real_init, pools = ConcurrentSender.__init__, []

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        pools.append(self)

    monkeypatch.setattr(ConcurrentSender, "cancel_queued", cancel_interrupted_once)
    monkeypatch.setattr(ConcurrentSender, "__init__", init)
    _interrupted_at_the_wait(monkeypatch, 2, lambda: started.wait(30))
    transport = Slow()
    with pytest.raises(KeyboardInterrupt):
        run(settings, db, transport, clock)
    assert statuses(db) == {"person0@example.com": "sent", "person1@example.com": "sent",
                            "person2@example.com": "pending"}
    assert pools and not any(thread.is_alive() for pool in pools for thread in pool._threads), "the pool was closed"


def test_one_at_a_time_an_interruption_ends_a_refused_sends_wait_and_its_refusal_stands(settings, db, clock,
                                                                                        monkeypatch):
    """With the real clock: the wait before a retry (here 30 s) ends with the run, and the refused
    message is pending again (deferred), not `sending`."""
    import tenacity

    add_recipients(db, 2)
    monkeypatch.setattr(tenacity, "wait_exponential", lambda **kwargs: tenacity.wait_fixed(30))
    refused = threading.Event()

    class Refusing(ScriptedTransport):
        def send(self, message, *, tags):
            try:
                return super().send(message, tags=tags)
            finally:
                refused.set()  # the refusal raised above; its 30 s wait begins

    transport = Refusing(script={"person0@example.com": [TransientSendError("421 4.7.0 try later", code="421")]})
    _interrupted_at_the_wait(monkeypatch, 1, before=lambda: refused.wait(30))
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(settings, db, transport, clock, sleep=time.sleep)
    assert time.monotonic() - started < 15, "the 30 s wait ended with the run"
    assert transport.calls == ["person0@example.com"], "not tried again"
    assert statuses(db) == {"person0@example.com": "pending", "person1@example.com": "pending"}
    assert [status for status, in db.execute("SELECT status FROM send_log")] == ["deferred"]

