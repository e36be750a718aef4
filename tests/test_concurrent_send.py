"""SEND_CONCURRENCY: several sends in flight, one durable claim each, the daily limit exact, the rate kept."""

from __future__ import annotations

import json
import logging
import sqlite3
import random
import re
import threading
import time
from datetime import timedelta
from functools import partial

import pytest
from typer.testing import CliRunner

from email_automation import concurrent_send, ledger
from email_automation.cli import app
from email_automation.concurrent_send import ConcurrentSender, RateLimiter
from email_automation.database import connect, init_db
from email_automation.errors import FatalSendError, TransientSendError
from email_automation.politeness import Caps
from email_automation.run_daily import run_daily

from .fakes import RecordingSleep, ScriptedTransport, trace_statements
from .smtp_sink import SmtpSink
from .test_run_daily import add_recipients, statuses

WAIT = 10  # seconds a barrier waits before the test fails (never reached when the code is right)


class Shared:
    """What the workers' transports have in common: the sends seen, and how many were in flight."""

    def __init__(self, settings, *, meet: int = 0, script=None) -> None:
        self.lock = threading.Lock()
        self.in_flight = self.most = 0
        self.claimed_first: list[bool] = []
        self.barrier = threading.Barrier(meet, timeout=WAIT) if meet else None
        self.settings, self.script = settings, script or {}
        self.made: list[Worker] = []

    def factory(self):
        worker = Worker(self)
        self.made.append(worker)
        return worker


class Worker(ScriptedTransport):
    """A transport of one worker thread; checks, from its own connection, that the claim was committed."""

    def __init__(self, shared: Shared) -> None:
        super().__init__(shared.script)
        self.shared = shared
        self.other = connect(shared.settings.db_path, readonly=True)

    def send(self, message, *, tags):
        shared = self.shared
        row = self.other.execute("SELECT status FROM send_log WHERE attempt_id = ?", (tags["attempt_id"],)).fetchone()
        with shared.lock:
            shared.claimed_first.append(row is not None and row[0] == "sending")
            shared.in_flight += 1
            shared.most = max(shared.most, shared.in_flight)
        try:
            if shared.barrier is not None:
                shared.barrier.wait()  # returns only once `meet` sends are in flight together
            with shared.lock:
                return super().send(message, tags=tags)
        finally:
            with shared.lock:
                shared.in_flight -= 1

    def close(self) -> None:
        super().close()
        self.other.close()


def run(settings, db, shared: Shared, clock, **kwargs):
    first = shared.factory()
    sleep = kwargs.pop("sleep", RecordingSleep())
    return run_daily(settings, db, first, now=clock, sleep=sleep, rng=random.Random(1),
                     transport_factory=shared.factory, **kwargs)


def delivered(shared: Shared) -> list[str]:
    return [to for worker in shared.made for to in worker.recipients]


def after_claims(db, count: int) -> threading.Event:
    """Set once the run has started its `count`th claim (so the group holding it is claimed next)."""
    started, claims = threading.Event(), set()  # the trace repeats a statement for each trigger it starts

    def trace(sql: str) -> None:
        if sql.startswith("INSERT INTO send_log"):
            claims.add(sql)
            if len(claims) >= count:
                started.set()

    db.set_trace_callback(trace)
    return started


def not_sent(report) -> dict[str, str]:
    """The run's messages whose claim was undone before their send started, and why."""
    return {o.email: o.error for o in report.outcomes if (o.error or "").startswith("not sent")}


def only_the_sends_in_flight_went_out(db, shared: Shared, report, failed: str, status: str,
                                      in_flight: set[str]) -> dict[str, str]:
    """After a run stopped by `failed`'s outcome (`status`): only sends already in flight went out
    and were recorded, and the three claimed behind them were undone; returns why each undone one
    was not sent."""
    logged = dict(db.execute("SELECT r.email, l.status FROM send_log l JOIN recipients r ON r.id = l.recipient_id"))
    assert logged.pop(failed) == status
    assert set(logged.values()) <= {"sent"} and set(logged) <= in_flight, "only the sends in flight went out"
    assert sorted(delivered(shared)) == sorted(logged)
    undone = not_sent(report)
    assert undone.keys() >= {"person3@example.com", "person4@example.com", "person5@example.com"}
    assert {email for email, state in statuses(db).items() if state != "pending"} - {failed} == set(logged)
    return undone


def test_sends_run_together_each_claimed_durably_before_it_leaves(settings, db, clock):
    settings = settings.model_copy(update={"send_concurrency": 4})
    add_recipients(db, 8)
    shared = Shared(settings, meet=4)  # the 4 sends of a round must all be in flight at once
    report = run(settings, db, shared, clock)
    assert report.sent == 8 and shared.most == 4
    assert shared.claimed_first == [True] * 8, "every message was claimed and committed before it left"
    assert sorted(delivered(shared)) == sorted(f"person{i}@example.com" for i in range(8))
    assert set(statuses(db).values()) == {"sent"}
    assert all(worker.closed for worker in shared.made[1:]), "the run closes the transports it made"


def test_claims_go_in_groups_of_send_concurrency_each_one_durable_commit(settings, db, clock):
    """One fsync per SEND_CONCURRENCY messages; the next group is claimed while one is in flight,
    so a killed run leaves at most twice SEND_CONCURRENCY recipients claimed without an outcome."""
    settings = settings.model_copy(update={"send_concurrency": 4})
    add_recipients(db, 10)
    statements = trace_statements(db)
    claimed_at_once: list[int] = []

    class Counting(Worker):
        def send(self, message, *, tags):
            claimed_at_once.append(self.other.execute(
                "SELECT count(*) FROM recipients WHERE status = 'sending'").fetchone()[0])
            return super().send(message, tags=tags)

    shared = Shared(settings)
    shared.factory = lambda: shared.made.append(Counting(shared)) or shared.made[-1]
    assert run(settings, db, shared, clock).sent == 10
    claims_per_commit: list[int] = []
    counts_per_commit: list[int] = []  # the day's attempts, counted for the daily limit
    for sql in statements:
        if sql.startswith("BEGIN"):
            claims_per_commit.append(0)
            counts_per_commit.append(0)
        elif sql.startswith("INSERT INTO send_log"):
            claims_per_commit[-1] += 1
        elif sql.startswith("SELECT count(*) FROM send_log WHERE batch_date"):
            counts_per_commit[-1] += 1
    assert [n for n in claims_per_commit if n] == [4, 4, 2], "whole groups, whatever the timing of the sends"
    assert shared.claimed_first == [True] * 10
    assert max(claimed_at_once) <= 8
    assert all(counts == 1 for claims, counts in zip(claims_per_commit, counts_per_commit) if claims), \
        "a group counts the day's attempts once; each claim adds its own"


def test_the_daily_limit_is_exact_and_nobody_is_mailed_twice(settings, db, clock):
    settings = settings.model_copy(update={"send_concurrency": 8, "daily_limit": 7})
    add_recipients(db, 30)
    shared = Shared(settings)
    assert run(settings, db, shared, clock).sent == 7
    assert run(settings, db, shared, clock).sent == 0, "the day's limit is used up"
    sent = delivered(shared)
    assert len(sent) == len(set(sent)) == 7
    assert db.execute("SELECT count(*) FROM send_log").fetchone()[0] == 7
    clock.advance(24 * 3600)
    assert run(settings, db, shared, clock).sent == 7
    assert len(set(delivered(shared))) == 14


def test_a_delay_keeps_one_send_at_a_time(settings, db, clock):
    settings = settings.model_copy(update={"send_concurrency": 4, "delay_seconds": 2})
    add_recipients(db, 4)
    shared, sleep = Shared(settings), RecordingSleep()
    assert run(settings, db, shared, clock, sleep=sleep).sent == 4
    assert shared.most == 1 and len(shared.made) == 1
    assert sleep.calls == [2, 2, 2]


class TickingSleep(RecordingSleep):
    """A sleep that moves the test clock instead of waiting."""

    def __init__(self, clock) -> None:
        super().__init__()
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        self.clock.advance(seconds)


def test_sends_start_no_faster_than_max_send_rate(settings, db, clock):
    settings = settings.model_copy(update={"send_concurrency": 4, "max_send_rate": 4})
    add_recipients(db, 9)
    started = clock()
    shared, sleep = Shared(settings), TickingSleep(clock)
    assert run(settings, db, shared, clock, sleep=sleep).sent == 9
    assert clock() - started == timedelta(seconds=2), "9 starts at 4 a second: 8 gaps of 0.25 s"
    attempted = [r[0] for r in db.execute("SELECT attempted_at FROM send_log ORDER BY id")]
    assert len(set(attempted)) == 9, "no two claims at the same moment"


def test_the_providers_send_rate_bounds_concurrent_sends(settings, db, clock):
    from email_automation.transports.ses import SendingCapacity

    settings = settings.model_copy(update={"send_concurrency": 4, "max_send_rate": 100})
    add_recipients(db, 5)
    shared, sleep = Shared(settings), TickingSleep(clock)

    class Capped(Worker):
        def sending_capacity(self):
            return SendingCapacity(remaining_24h=None, min_interval=0.5)  # SES: MaxSendRate 2

    first = Capped(shared)
    shared.made.append(first)
    report = run_daily(settings, db, first, now=clock, sleep=sleep, rng=random.Random(1),
                       transport_factory=shared.factory)
    assert report.sent == 5
    assert sleep.calls == [0.5] * 4, "SES's 2 a second, not our 100"


def test_a_fatal_error_stops_claiming_and_the_sends_in_flight_are_recorded(settings, db, clock):
    settings = settings.model_copy(update={"send_concurrency": 3})
    add_recipients(db, 10)
    script = {"person1@example.com": [FatalSendError("the account is paused", code="AccountSendingPaused")]}
    shared = Shared(settings, script=script)
    told = threading.Event()  # the run has seen the fatal outcome
    second_group = after_claims(db, 6)

    class SlowerThanTheFatalOne(Worker):
        def send(self, message, *, tags):  # the fatal answer comes once 3 more claims wait for a place
            assert (second_group if "person1@" in message.to else told).wait(WAIT)
            return super().send(message, tags=tags)

    shared.factory = lambda: shared.made.append(SlowerThanTheFatalOne(shared)) or shared.made[-1]
    report = run(settings, db, shared, clock, on_outcome=lambda outcome: outcome.status == "fatal" and told.set())
    db.set_trace_callback(None)
    assert report.fatal_error == "AccountSendingPaused: the account is paused"
    # The fatal attempt is deferred and given back: its recipient is pending too.
    undone = only_the_sends_in_flight_went_out(db, shared, report, "person1@example.com", "deferred",
                                               {"person0@example.com", "person2@example.com"})
    assert set(undone.values()) == {"not sent: the run stopped before its turn"}
    assert report.deferred == 1 + len(undone)


def test_a_refused_send_waiting_to_retry_when_the_run_stops_tries_no_more(settings, db, clock, monkeypatch):
    """A fatal error stops the run while another send waits to retry a refusal: that refusal stands."""
    from email_automation import run_daily as module
    from email_automation.concurrent_send import StopFlag

    settings = settings.model_copy(update={"send_concurrency": 2})
    add_recipients(db, 2)
    refused = TransientSendError("421 4.7.0 try again later", code="421")
    paused = FatalSendError("the account is paused", code="AccountSendingPaused")
    shared = Shared(settings, script={"person0@example.com": [paused], "person1@example.com": [refused, refused]})
    events: list[StopFlag] = []  # the run's own: set once it stops
    monkeypatch.setattr(module, "StopFlag", lambda: events.append(StopFlag()) or events[-1])
    first_try = threading.Event()

    class Ordered(Worker):
        def send(self, message, *, tags):
            if "person0@" in message.to:
                assert first_try.wait(WAIT)  # the fatal refusal comes once person1 was refused
            else:
                first_try.set()
            return super().send(message, tags=tags)

    def sleep(seconds):  # person1's wait before its second try lasts until the run has stopped
        assert events[0].wait(WAIT)

    shared.factory = lambda: shared.made.append(Ordered(shared)) or shared.made[-1]
    report = run(settings, db, shared, clock, sleep=sleep)
    assert report.fatal_error
    tried = [to for worker in shared.made for to in worker.calls]
    assert sorted(tried) == ["person0@example.com", "person1@example.com"], "person1 tried once, not again"
    assert statuses(db) == {"person0@example.com": "pending", "person1@example.com": "pending"}


def test_ctrl_c_does_not_wait_out_a_refused_sends_pause_before_its_retry(settings, db, clock, monkeypatch):
    """With the real clock: the wait before a retry (here 30 s) ends when the run is interrupted."""
    import tenacity

    settings = settings.model_copy(update={"send_concurrency": 2})
    add_recipients(db, 2)
    refused = TransientSendError("421 4.7.0 try again later", code="421")
    shared = Shared(settings, script={"person1@example.com": [refused]})
    monkeypatch.setattr(tenacity, "wait_exponential", lambda **kwargs: tenacity.wait_fixed(30))
    refused_once = threading.Event()

    class Ordered(Worker):
        def send(self, message, *, tags):
            if "person0@" in message.to:
                assert refused_once.wait(WAIT)
            else:
                refused_once.set()  # refused just below, then waits 30 s to retry
            return super().send(message, tags=tags)

    def interrupt(outcome):
        raise KeyboardInterrupt

    shared.factory = lambda: shared.made.append(Ordered(shared)) or shared.made[-1]
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(settings, db, shared, clock, on_outcome=interrupt, sleep=time.sleep)
    assert time.monotonic() - started < 15, "the 30 s wait ended with the run"
    assert statuses(db)["person1@example.com"] == "pending", "its refusal stands: deferred, not unknown"


def test_an_interruption_while_recording_a_group_is_recorded_all_the_same(settings, db, clock, monkeypatch):
    """Ctrl-C (or SIGTERM) lands while the run's thread records sends it took from the pool: the
    group rolls back, and the run records those sends on its way out, once."""
    settings = settings.model_copy(update={"send_concurrency": 2})
    add_recipients(db, 4)
    real, calls = ledger.record_sent_many, []

    def interrupted_once(conn, sent, **kwargs):
        calls.append([claim.email for claim, _, _ in sent])
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(conn, sent, **kwargs)

    monkeypatch.setattr(ledger, "record_sent_many", interrupted_once)
    shared = Shared(settings)
    with pytest.raises(KeyboardInterrupt):
        run(settings, db, shared, clock)
    sent = delivered(shared)
    assert sent and set(calls[0]) <= set(sent)
    assert {email for email, status in statuses(db).items() if status == "sent"} == set(sent), \
        "every message that went out is recorded, the interrupted group too"
    assert "sending" not in statuses(db).values()
    assert sum(calls[1:], []).count(calls[0][0]) == 1, "recorded once on the way out"


def test_an_interruption_just_after_a_group_is_recorded_does_not_record_it_again(settings, db, clock, monkeypatch,
                                                                                 caplog):
    from email_automation import run_daily as module

    caplog.set_level(logging.INFO, logger="email_automation")
    settings = settings.model_copy(update={"send_concurrency": 2})
    add_recipients(db, 4)
    real, calls = module._record_together, []

    def then_interrupted(*args, **kwargs):
        outcomes = real(*args, **kwargs)
        if outcomes:
            calls.append(outcomes)
        if len(calls) == 1 and outcomes:  # written and committed; Ctrl-C before the run's thread moves on
            raise KeyboardInterrupt
        return outcomes

    monkeypatch.setattr(module, "_record_together", then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(settings, db, Shared(settings), clock)
    first = calls[0][0].email
    assert statuses(db)[first] == "sent"
    assert len(re.findall(rf"{re.escape(first)} sent ", caplog.text)) <= 1, "not recorded, nor told, twice"
    assert len(calls) == 1 or first not in [o.email for o in sum(calls[1:], [])]


def test_an_interruption_between_a_claim_and_its_hand_over_undoes_the_claims_not_handed_over(
        settings, db, clock, monkeypatch):
    settings = settings.model_copy(update={"send_concurrency": 4})
    add_recipients(db, 4)
    real, submitted = ConcurrentSender.submit, []

    def interrupted_at_the_second(self, key, send):
        if len(submitted) == 1:
            raise KeyboardInterrupt
        submitted.append(key[0].email)
        return real(self, key, send)

    monkeypatch.setattr(ConcurrentSender, "submit", interrupted_at_the_second)
    shared = Shared(settings)
    with pytest.raises(KeyboardInterrupt):
        run(settings, db, shared, clock)
    assert submitted == ["person0@example.com"]
    first = "sent" if delivered(shared) == ["person0@example.com"] else "pending"  # undone if no worker took it yet
    assert statuses(db) == {"person0@example.com": first, "person1@example.com": "sending",
                            "person2@example.com": "pending", "person3@example.com": "pending"}, \
        "the claim being handed over stays unknown (never sent twice); the ones after it are undone"


def test_an_interrupted_run_gives_back_the_claims_that_had_not_started(settings, db, clock, caplog):
    """Ctrl-C while claims wait for a place: they never leave and are pending again, not unknown;
    the send in flight is recorded as what it was."""
    from email_automation.errors import PermanentSendError

    settings = settings.model_copy(update={"send_concurrency": 2})
    add_recipients(db, 6)
    second_group, release = after_claims(db, 4), threading.Event()
    refused = PermanentSendError("550 5.7.1 rejected by policy", code="550", mailbox_status="5.7.1")
    shared = Shared(settings, script={"person0@example.com": [refused]})

    class Waiting(Worker):
        def send(self, message, *, tags):
            assert (second_group if "person0@" in message.to else release).wait(WAIT)
            return super().send(message, tags=tags)

    def interrupt(outcome):
        release.set()
        raise KeyboardInterrupt

    shared.factory = lambda: shared.made.append(Waiting(shared)) or shared.made[-1]
    with pytest.raises(KeyboardInterrupt):
        run(settings, db, shared, clock, on_outcome=interrupt)
    db.set_trace_callback(None)
    logged = dict(db.execute("SELECT r.email, l.status FROM send_log l JOIN recipients r ON r.id = l.recipient_id"))
    assert logged.pop("person0@example.com") == "failed"
    sent = delivered(shared)  # person1's send, if a worker had started it
    assert sent in ([], ["person1@example.com"])
    assert logged == {email: "sent" for email in sent}, "it went out: recorded, not left for the next run"
    assert {email for email, status in statuses(db).items() if status == "pending"} == {
        f"person{i}@example.com" for i in range(1 + len(sent), 6)}
    assert "person3@example.com was not sent (the run was interrupted before its turn); it stays pending" in caplog.text


def interrupted_with_a_send_in_flight(settings, db, clock, *, before_interrupting=lambda: None,
                                      sleep=None, script=None) -> Shared:
    """Ctrl-C at person0's outcome while person1's send is certainly in flight; it ends once the
    run's wind-down has said it waits for it."""
    settings = settings.model_copy(update={"send_concurrency": 2})
    add_recipients(db, 2)
    shared, started, release = Shared(settings, script=script), threading.Event(), threading.Event()

    class Slow(Worker):
        def send(self, message, *, tags):
            if "person1@" in message.to:
                started.set()
                assert release.wait(WAIT)
            else:
                assert started.wait(WAIT)
            return super().send(message, tags=tags)

    def interrupt(outcome):
        before_interrupting()
        raise KeyboardInterrupt

    class ReleaseOnceWaited(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("waiting for the send in flight"):
                release.set()

    shared.factory = lambda: shared.made.append(Slow(shared)) or shared.made[-1]
    handler = ReleaseOnceWaited()
    logging.getLogger("email_automation").addHandler(handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(settings, db, shared, clock, on_outcome=interrupt, sleep=sleep or RecordingSleep())
    finally:
        logging.getLogger("email_automation").removeHandler(handler)
    return shared


def test_a_send_in_flight_at_an_interruption_is_recorded(settings, db, clock, caplog):
    caplog.set_level(logging.INFO, logger="email_automation")
    shared = interrupted_with_a_send_in_flight(settings, db, clock)
    assert sorted(delivered(shared)) == ["person0@example.com", "person1@example.com"]
    assert statuses(db) == {"person0@example.com": "sent", "person1@example.com": "sent"}
    message_id, = db.execute("SELECT l.message_id FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
                             " WHERE r.email = 'person1@example.com' AND l.status = 'sent'").fetchone()
    assert f"person1@example.com sent {message_id}" in caplog.text, "the run log tells it too"
    assert "waiting for the send in flight to finish, to record it" in caplog.text


@pytest.mark.parametrize("concurrency", [1, 2])
def test_an_interruption_as_any_call_of_the_pool_returns_leaves_no_send_that_went_out_unrecorded(
        settings, clock, tmp_path, concurrency):
    """Ctrl-C or SIGTERM also lands just after a C call returns (CPython checks for signals there),
    and what the call returned is then lost. Raised as each C call made by the pool's code in the
    run's thread returns (taking a finished send from a queue among them), every message the
    transport accepted must still be recorded `sent`. Before: the finished send a queue's `get`
    had just handed over was lost, and its recipient left `sending` (a CI run's SIGTERM test
    found it once). A claim cut off before its hand-over stays `sending`, but it was never sent."""
    settings = settings.model_copy(update={"send_concurrency": concurrency})
    point = 0
    while True:
        settings = settings.model_copy(update={"db_path": tmp_path / f"point{point}.db"})
        db = init_db(settings.db_path)
        add_recipients(db, 4)
        shared = Shared(settings)
        interrupted = interrupted_as_a_call_returns(point, lambda: run(settings, db, shared, clock),
                                                    where=concurrent_send.__file__)
        logged = dict(db.execute("SELECT r.email, l.status FROM send_log l JOIN recipients r"
                                 " ON r.id = l.recipient_id"))
        went_out = delivered(shared)
        db.close()
        assert {email: logged.get(email) for email in went_out} == {email: "sent" for email in went_out}, \
            f"went out, not recorded, after an interruption as {interrupted} returned"
        assert set(logged.values()) <= {"sent", "sending"}
        if not interrupted:  # the run made fewer such calls than `point`: each one was tried
            break
        point += 1
    assert point > 10, "the pool's calls were reached"


def interrupted_as_a_call_returns(point: int, action, *, where: str) -> list[str]:
    """Run `action` with Ctrl-C raised as the C call made `point`-th (from 0) by code of the file
    `where` returns, with its result lost (as when a signal is handled there); that call's name,
    or [] when there were fewer calls. A profile function that raises ends profiling, and the
    calls are those of this thread only (https://docs.python.org/3/library/sys.html#sys.setprofile)."""
    import sys

    calls, interrupted = [0], []

    def profile(frame, event, arg):
        if event == "c_return" and frame.f_code.co_filename == where:
            calls[0] += 1
            if calls[0] == point + 1:
                interrupted.append(f"{frame.f_code.co_name}: {arg.__qualname__}")
                raise KeyboardInterrupt

    sys.setprofile(profile)
    try:
        action()
    except KeyboardInterrupt:
        pass
    finally:
        sys.setprofile(None)
    return interrupted


def test_a_send_in_flight_at_an_interruption_is_named_when_it_cannot_be_recorded(settings, db, clock, caplog):
    """Another writer holds the database: a second's wait, not BUSY_TIMEOUT_SECONDS (30), and the
    log says what went out."""
    other = connect(settings.db_path)

    def lock():
        other.execute("BEGIN IMMEDIATE")

    sleep, started = RecordingSleep(), time.monotonic()
    try:
        interrupted_with_a_send_in_flight(settings, db, clock, before_interrupting=lock, sleep=sleep)
    finally:
        other.rollback()
        other.close()
    assert time.monotonic() - started < 15, "an interrupted run does not wait out the other writer"
    assert statuses(db) == {"person0@example.com": "sent", "person1@example.com": "sending"}, \
        "the next run makes it unknown, never a resend"
    assert re.search(r"person1@example\.com was accepted as \S+ but recording it failed", caplog.text)
    assert sleep.calls == []
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000, "the usual patience afterwards"


def test_a_send_in_flight_that_fails_unexpectedly_at_an_interruption_is_named(settings, db, clock, caplog):
    interrupted_with_a_send_in_flight(settings, db, clock, script={"person1@example.com": [RuntimeError("boom")]})
    assert statuses(db)["person1@example.com"] == "sending", "the next run makes it unknown"
    assert ("the send to person1@example.com ended in an unexpected error (RuntimeError: boom); the next run "
            "marks it unknown") in caplog.text


def test_a_refused_send_waiting_to_retry_at_an_interruption_tries_no_more(settings, db, clock, monkeypatch):
    """The run is ending: the refusal stands (pending, deferred) rather than another try seconds later."""
    from email_automation import database

    settings = settings.model_copy(update={"send_concurrency": 2})
    add_recipients(db, 2)
    refused = TransientSendError("421 4.7.0 try again later", code="421")
    shared = Shared(settings, script={"person1@example.com": [refused, refused]})
    ending, first_wait = threading.Event(), threading.Event()
    real_impatient = database.impatient

    def impatient(conn):  # entered once the run has stopped retries
        ending.set()
        return real_impatient(conn)

    def sleep(seconds):  # person1's wait before its second try, until the run is ending
        first_wait.set()
        assert ending.wait(WAIT)

    def interrupt(outcome):
        assert first_wait.wait(WAIT)
        raise KeyboardInterrupt

    monkeypatch.setattr(database, "impatient", impatient)
    with pytest.raises(KeyboardInterrupt):
        run(settings, db, shared, clock, on_outcome=interrupt, sleep=sleep)
    tried = [to for worker in shared.made for to in worker.calls]
    assert sorted(tried) == ["person0@example.com", "person1@example.com"], "person1 tried once, not again"
    assert statuses(db)["person1@example.com"] == "pending"
    assert db.execute("SELECT l.status FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
                      " WHERE r.email = 'person1@example.com'").fetchone()[0] == "deferred"


def test_an_interruption_while_undoing_claims_still_undoes_the_rest(settings, db, clock):
    settings = settings.model_copy(update={"send_concurrency": 3})
    add_recipients(db, 12)
    script = {"person0@example.com": [FatalSendError("the account is paused", code="AccountSendingPaused")]}
    shared = Shared(settings, script=script)
    second_group, told = after_claims(db, 6), threading.Event()

    class Waiting(Worker):
        def send(self, message, *, tags):
            assert (second_group if "person0@" in message.to else told).wait(WAIT)
            return super().send(message, tags=tags)

    def on_outcome(outcome):
        if outcome.status == "fatal":
            told.set()
        if (outcome.error or "").startswith("not sent"):
            raise KeyboardInterrupt  # at the first claim undone

    shared.factory = lambda: shared.made.append(Waiting(shared)) or shared.made[-1]
    with pytest.raises(KeyboardInterrupt):
        run(settings, db, shared, clock, on_outcome=on_outcome)
    db.set_trace_callback(None)
    sent = set(delivered(shared))
    assert sent <= {"person1@example.com", "person2@example.com"}
    left = {email: status for email, status in statuses(db).items() if status not in ("pending", "sent")}
    assert left.keys() <= {"person0@example.com"} | sent, "every claim that never left was undone"
    assert {"person3@example.com", "person4@example.com", "person5@example.com"} <= {
        email for email, status in statuses(db).items() if status == "pending"}


@pytest.mark.parametrize("step", [1, 2])
def test_an_undone_claim_leaves_no_attempt_and_the_message_can_be_claimed_again(settings, db, clock, step):
    from email_automation.sequences import add_step

    add_recipients(db, 1)
    claim = partial(ledger.claim, db, 1, tz=settings.tz, daily_limit=10, subject="Hi", transport="smtp", step=step)
    if step == 2:  # the first message went out days ago; the follow-up is due
        ledger.record_sent(db, claim(now=clock(), step=1), "<first@example.com>", now=clock())
        add_step(db, "default", after_days=1, html="<p>Following up</p>", now=clock())
        clock.advance(2 * 86400)
    claimed = claim(now=clock())
    ledger.give_back(db, claimed, now=clock())
    assert [tuple(row) for row in db.execute("SELECT step, status FROM send_log")] == [(1, "sent")] * (step - 1)
    assert tuple(db.execute("SELECT status, step, attempts FROM recipients").fetchone()) == ("pending", step, 0)
    assert ledger.remaining_today(db, now=clock(), tz=settings.tz, daily_limit=10) == 10, "counted nowhere"
    assert isinstance(claim(now=clock()), ledger.Claim), "claimed again by the next run"


def test_a_waiting_send_can_be_taken_back_until_it_starts():
    release = threading.Event()
    pool: ConcurrentSender[str] = ConcurrentSender([ScriptedTransport()], queued=2)
    pool.submit("first", lambda transport: release.wait(WAIT) and "first")
    pool.submit("second", lambda transport: "second")
    pool.submit("third", lambda transport: "third")
    assert pool.room == 0
    assert pool.cancel_queued(lambda key: key != "third") == ["third"]
    assert pool.room == 1
    release.set()
    finished = []
    while pool.in_flight:
        dones = pool.done(block=True)
        pool.acknowledge(dones)
        finished += dones
    assert sorted(done.value for done in finished) == ["first", "second"]
    assert pool.close() == []


def test_after_a_failed_send_nothing_waiting_starts_until_the_caller_has_settled_it():
    pool: ConcurrentSender[str] = ConcurrentSender([ScriptedTransport()], queued=1)

    def refused(transport):
        raise FatalSendError("the account is paused")

    pool.submit("refused", refused)
    [failed] = pool.done(block=True)
    assert isinstance(failed.error, FatalSendError)
    pool.acknowledge([failed])
    pool.submit("next", lambda transport: "next")
    assert pool.cancel_queued() == ["next"], "held: it had not started"
    pool.submit("next", lambda transport: "next")
    pool.settle(1)
    assert [done.value for done in pool.done(block=True)] == ["next"]
    assert pool.close() == []


def test_rate_limiter_spaces_events():
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.wait()
    now[0] += 1.0  # idle for a while: no burst is saved up
    limiter.wait()
    limiter.wait()
    assert waits == pytest.approx([0.1, 0.1, 0.1])


def test_cli_run_sends_concurrently_through_smtp_once_each(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.csv").write_text("email,first_name\n" + "".join(f"p{i}@example.com,P{i}\n" for i in range(12)))
    with SmtpSink() as sink:
        env = {"DB_PATH": str(tmp_path / "c.db"), "DRY_RUN": "false", "TRANSPORT": "smtp",
               "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port), "SMTP_STARTTLS": "false",
               "SENDER_EMAIL": "me@example.com", "DELAY_SECONDS": "0", "SEND_CONCURRENCY": "3",
               "DAILY_LIMIT": "10", "TIMEZONE": "UTC"}
        runner = CliRunner()
        for step in (["init"], ["import", "r.csv"]):
            assert runner.invoke(app, step, env=env).exit_code == 0
        result = runner.invoke(app, ["run", "--json"], env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["sent"] == 10
        assert sink.connections == 3, "one connection per concurrent sender"
        counts = sink.counts()
    assert len(counts) == 10 and set(counts.values()) == {1}


def test_a_hard_bounce_trips_the_circuit_breaker_and_concurrent_claims_stop(settings, db, clock):
    from email_automation.errors import PermanentSendError

    settings = settings.model_copy(update={"send_concurrency": 3, "bounce_pause_min": 1})
    add_recipients(db, 30)
    gone = PermanentSendError("550 5.1.1 no such user", code="550", mailbox_status="5.1.1")
    shared = Shared(settings, script={"person0@example.com": [gone]})
    told = threading.Event()  # the run has recorded the bounce
    second_group = after_claims(db, 6)

    class SlowerThanTheBounce(Worker):
        def send(self, message, *, tags):  # the bounce comes once 3 more claims wait for a place
            assert (second_group if "person0@" in message.to else told).wait(WAIT)
            return super().send(message, tags=tags)

    shared.factory = lambda: shared.made.append(SlowerThanTheBounce(shared)) or shared.made[-1]
    report = run(settings, db, shared, clock, on_outcome=lambda outcome: outcome.status == "failed" and told.set())
    db.set_trace_callback(None)
    assert report.fatal_error and "minimum 1" in report.fatal_error
    # The breaker is asked before each claim, and again for the claims waiting behind the sends in flight.
    undone = only_the_sends_in_flight_went_out(db, shared, report, "person0@example.com", "failed",
                                               {"person1@example.com", "person2@example.com"})
    assert set(undone.values()) <= {"not sent: the circuit breaker held it back before its turn",
                                    "not sent: the run stopped before its turn"}
    assert db.execute("SELECT count(*) FROM suppressions WHERE email = 'person0@example.com'").fetchone()[0] == 1


def test_a_company_limit_holds_against_a_run_that_claimed_after_the_batch_was_picked(settings, db, clock):
    settings = settings.model_copy(update={"send_concurrency": 2, "max_new_per_company_per_day": 1})
    db.executemany("INSERT INTO recipients (campaign_id, email, company, created_at) VALUES (1, ?, ?, 'x')",
                   [("a1@acme.com", "Acme"), ("b1@beta.io", "Beta"), ("a2@acme.com", "ACME")])
    shared, other = Shared(settings), connect(settings.db_path)

    def factory():  # called once the batch [a1, b1] is picked: a run started without the lock claims a2 now
        assert isinstance(ledger.claim(other, 3, now=clock(), tz=settings.tz, daily_limit=10, subject="Hi",
                                       transport="smtp", companies=Caps.from_settings(settings)), ledger.Claim)
        return shared.factory()

    report = run_daily(settings, db, shared.factory(), now=clock, sleep=RecordingSleep(), rng=random.Random(1),
                       transport_factory=factory)
    other.close()
    assert delivered(shared) == ["b1@beta.io"]
    assert statuses(db) == {"a1@acme.com": "pending", "b1@beta.io": "sent", "a2@acme.com": "sending"}
    assert (report.sent, report.deferred) == (1, 1)
    assert [o.error for o in report.outcomes if o.email == "a1@acme.com"] == [
        "company limit: 1 first message(s) to acme today (MAX_NEW_PER_COMPANY_PER_DAY)"]


def _claimed(settings, db, clock, count: int):
    from email_automation.run_daily import _Planned

    add_recipients(db, count)
    planned = []
    for rid, email in db.execute("SELECT id, email FROM recipients ORDER BY id").fetchall():
        claim = ledger.claim(db, rid, now=clock(), tz=settings.tz, daily_limit=10, subject="Hi", transport="smtp")
        planned.append((_Planned(rid, email, "default"), claim))
    return planned


def test_sends_that_finish_together_are_recorded_in_one_commit(settings, db, clock):
    """A commit per group of outcomes instead of one per message; each outcome as recorded alone."""
    from email_automation.errors import PermanentSendError
    from email_automation.run_daily import _record_together

    (a, claim_a), (b, claim_b), (c, claim_c), (d, claim_d) = _claimed(settings, db, clock, 4)
    refused = PermanentSendError("550 5.7.1 rejected by policy", code="550", mailbox_status="5.7.1")
    throttled = [TransientSendError("421 slow down", code="421")]
    statements = trace_statements(db)
    outcomes = _record_together(settings, db, [(a, claim_a, "id-a", []), (b, claim_b, refused, []),
                                               (c, claim_c, "id-c", throttled), (d, claim_d, "id-d", throttled * 2)],
                                now=clock, sleep=RecordingSleep())
    assert [(o.email, o.status) for o in outcomes] == [
        ("person0@example.com", "sent"), ("person1@example.com", "failed"), ("person2@example.com", "sent"),
        ("person3@example.com", "sent")]
    assert sum(sql == "COMMIT" for sql in statements) == 1
    assert statuses(db) == {"person0@example.com": "sent", "person1@example.com": "failed",
                            "person2@example.com": "sent", "person3@example.com": "sent"}
    assert {row[0]: tuple(row[1:]) for row in db.execute("SELECT recipient_id, message_id, error FROM send_log")} == {
        1: ("id-a", None), 2: (None, "550: 550 5.7.1 rejected by policy"),
        3: ("id-c", "sent after 1 refused try (last: 421: 421 slow down)"),
        4: ("id-d", "sent after 2 refused tries (last: 421: 421 slow down)")}, "each note on its own row"


def test_sends_are_recorded_together_only_inside_a_transaction(settings, db, clock):
    """Its two statements must stand or fall together: outside a transaction it writes nothing."""
    [(a, claim_a)] = _claimed(settings, db, clock, 1)
    with pytest.raises(RuntimeError):
        ledger.record_sent_many(db, [(claim_a, "id-a", None)], now=clock())
    assert [status for status, in db.execute("SELECT status FROM send_log")] == ["sending"]


def test_outcomes_that_cannot_be_recorded_are_logged_as_sent(settings, db, clock, caplog):
    """The database refused the group: every message the provider accepted is named in the log."""
    from email_automation.run_daily import _record_together

    (a, claim_a), (b, claim_b) = _claimed(settings, db, clock, 2)
    db.execute("CREATE TRIGGER refuse BEFORE UPDATE ON send_log WHEN NEW.message_id = 'id-b'"
               " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    with pytest.raises(sqlite3.Error):
        _record_together(settings, db, [(a, claim_a, "id-a", []), (b, claim_b, "id-b", [])],
                         now=clock, sleep=RecordingSleep())
    logged = caplog.text
    assert "person0@example.com was accepted as id-a but recording it failed" in logged
    assert "person1@example.com was accepted as id-b but recording it failed" in logged
    assert set(statuses(db).values()) == {"sending"}, "the next run makes both unknown, never a resend"
    assert {status for status, in db.execute("SELECT status FROM send_log")} == {"sending"}, "nothing half-written"


def test_an_interruption_while_recording_names_every_accepted_message(settings, db, clock, caplog, monkeypatch):
    """Ctrl-C in the middle of a group of records rolls the group back: the log says what was sent."""
    from email_automation.run_daily import _record_together

    (a, claim_a), (b, claim_b) = _claimed(settings, db, clock, 2)
    real = ledger.record_sent_many

    def interrupted(conn, sent, **kwargs):
        real(conn, sent[:1], **kwargs)  # the first one written, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(ledger, "record_sent_many", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _record_together(settings, db, [(a, claim_a, "id-a", []), (b, claim_b, "id-b", [])],
                         now=clock, sleep=RecordingSleep())
    assert "person0@example.com was accepted as id-a but recording it failed" in caplog.text
    assert "person1@example.com was accepted as id-b but recording it failed" in caplog.text
    assert set(statuses(db).values()) == {"sending"}


def interrupted_at_call(point: int, action) -> list[str]:
    """Run `action` with Ctrl-C raised at the start of the Python function it calls `point`-th
    (from 0), where CPython checks for signals; the name of that function, or [] when `action`
    made fewer calls (then every point has been tried)."""
    import sys

    calls, interrupted = [0], []

    def tracer(frame, event, arg):
        if event == "call":
            calls[0] += 1
            if calls[0] == point + 1:
                interrupted.append(frame.f_code.co_name)
                raise KeyboardInterrupt
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        action()
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(previous)
    return interrupted


@pytest.mark.parametrize("method", ["submit", "settle", "cancel_queued", "close"])
def test_an_interruption_at_any_call_inside_the_callers_lock_never_leaves_it_held(method):
    """Ctrl-C or SIGTERM raises in the caller's thread at the start of any Python function it calls
    (CPython checks for signals there). Raised at each such call inside a method the caller uses,
    the lock must still be free, or the workers and `close` wait for it for ever (a run that never
    ends, holding the run lock). Before: Condition's own __exit__ was one of those calls. `close`
    is then called (again): it must end the workers, and every send counted in flight is either
    finished or handed back by it, none lost."""

    class Idle:
        name = "smtp"

    points = 0
    while True:
        pool = ConcurrentSender([Idle()], queued=1)
        if method != "submit":
            pool.submit("waiting", lambda transport: "sent")
        interrupted = interrupted_at_call(points, {
            "submit": lambda: pool.submit("key", lambda transport: "sent"), "settle": lambda: pool.settle(0),
            "close": pool.close, "cancel_queued": pool.cancel_queued}[method])
        returned: list = []
        closer = threading.Thread(target=lambda: returned.extend(pool.close()), daemon=True)
        closer.start()
        closer.join(WAIT)
        assert not closer.is_alive(), f"close() hangs after an interruption at {interrupted} in {method}"
        assert not any(thread.is_alive() for thread in pool._threads)
        dones = pool.done(block=False)
        pool.acknowledge(dones)
        finished = [done.key for done in dones]
        assert pool.in_flight == 0 and set(returned + finished) <= {"waiting", "key"}, (interrupted, returned, finished)
        if not interrupted:  # the method made fewer calls than `points`: each one was tried
            break
        points += 1
    assert points > 0 or method == "settle"


def test_a_stop_flag_set_again_after_an_interrupted_set_wakes_every_waiting_send():
    """The run sets its stop flag when it stops, and again as it winds down. A first `set` cut
    short by Ctrl-C (at each Python call it makes) must leave the second one able to finish, and
    wake every send waiting to retry at once, not at its timeout. threading.Event's `set` left its
    lock held when cut short at Condition.__exit__, and the second `set` waited for it for ever."""
    from email_automation.concurrent_send import StopFlag

    points = 0
    while True:
        flag = StopFlag()
        woken, waiting = [], threading.Semaphore(0)

        def wait():
            waiting.release()
            started = time.monotonic()
            woken.append((flag.wait(WAIT), time.monotonic() - started))

        waiters = [threading.Thread(target=wait, daemon=True) for _ in range(3)]
        for waiter in waiters:
            waiter.start()
        for _ in waiters:
            assert waiting.acquire(timeout=WAIT)
        interrupted = interrupted_at_call(points, flag.set)
        again = threading.Thread(target=flag.set, daemon=True)
        again.start()
        again.join(WAIT)
        assert not again.is_alive(), f"the second set() hangs after an interruption at {interrupted}"
        for waiter in waiters:
            waiter.join(WAIT)
        assert [result for result, _ in woken] == [True, True, True] and flag.is_set()
        assert all(seconds < WAIT / 2 for _, seconds in woken), f"a send woke only at its timeout: {woken}"
        if not interrupted:
            break
        points += 1
    assert points > 0


def test_an_interruption_just_after_a_group_of_claims_commits_gives_them_back(settings, db, clock, monkeypatch):
    """SIGTERM landed between the group's commit and the run noting what it had claimed: those
    recipients stayed `sending` (the next run made them `unknown`, a decision for nobody: nothing
    had left). Now they are noted as each is claimed, and given back on the way out."""
    from contextlib import contextmanager

    from email_automation import database

    settings = settings.model_copy(update={"send_concurrency": 2})
    add_recipients(db, 4)
    real_group = database.group

    @contextmanager
    def interrupted_after_commit(conn):
        with real_group(conn) as grouped:
            yield grouped
        raise KeyboardInterrupt  # the commit is done, the claims are durable

    monkeypatch.setattr(database, "group", interrupted_after_commit)
    shared = Shared(settings)
    with pytest.raises(KeyboardInterrupt):
        run(settings, db, shared, clock)
    assert delivered(shared) == []
    assert set(statuses(db).values()) == {"pending"}
    assert db.execute("SELECT count(*) FROM send_log").fetchone()[0] == 0
