"""The claimed-before-send state machine and the hand-made decisions over it."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from email_automation import admin, database, ledger
from email_automation.errors import AmbiguousSendError, FatalSendError, NotFoundError, PermanentSendError, TransientSendError

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)


def add(db, email, campaign_id=1):
    return db.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (?, ?, 'x')",
                      (campaign_id, email)).lastrowid


def status_of(db, rid):
    return db.execute("SELECT status FROM recipients WHERE id = ?", (rid,)).fetchone()[0]


def claim(db, rid, limit=10, now=NOW):
    return ledger.claim(db, rid, now=now, tz=BERLIN, daily_limit=limit, subject="Hi", transport="smtp")


def test_batch_date_follows_the_users_time_zone_not_utc():
    late_evening_utc = datetime(2026, 11, 25, 23, 30, tzinfo=timezone.utc)
    assert ledger.batch_date(late_evening_utc, BERLIN) == "2026-11-26"
    assert ledger.batch_date(late_evening_utc, ZoneInfo("UTC")) == "2026-11-25"


def test_a_claim_is_committed_before_sending_and_counts_toward_the_limit(db):
    rid = add(db, "a@example.com")
    c = claim(db, rid)
    assert status_of(db, rid) == "sending"
    assert ledger.counted_today(db, "2026-11-25") == 1
    assert claim(db, rid) is None, "a recipient can be claimed once"
    ledger.record_sent(db, c, "ses-id-1", now=NOW)
    row = db.execute("SELECT status, message_id FROM send_log WHERE id = ?", (c.log_id,)).fetchone()
    assert tuple(row) == ("sent", "ses-id-1")
    assert status_of(db, rid) == "sent"


def test_the_limit_is_checked_inside_the_claim(db):
    first, second = add(db, "a@example.com"), add(db, "b@example.com")
    assert claim(db, first, limit=1) is not None
    assert claim(db, second, limit=1) is None
    assert status_of(db, second) == "pending"


def test_the_claim_skips_an_address_suppressed_or_mailed_elsewhere_since_the_batch_was_picked(db):
    db.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) VALUES ('b', 's', 'h', 'x')")
    suppressed, first, second = add(db, "s@example.com"), add(db, "a@example.com"), add(db, "a@example.com", 2)
    db.execute("INSERT INTO suppressions (email, reason, source, created_at) VALUES ('s@example.com', 'complaint', 'sns', 'x')")
    assert claim(db, suppressed) is None
    assert claim(db, first) is not None
    assert claim(db, second) is None, "one address is never claimed in two campaigns"
    rows = dict(db.execute("SELECT id, last_error FROM recipients WHERE status = 'skipped'").fetchall())
    assert rows == {suppressed: "suppressed: complaint", second: "already contacted in campaign 'default'"}
    assert ledger.counted_today(db, "2026-11-25") == 1


def test_no_claim_in_a_paused_campaign(db):
    rid = add(db, "a@example.com")
    admin.set_campaign_status(db, "default", "paused")
    assert claim(db, rid) is None
    assert status_of(db, rid) == "pending"


@pytest.mark.parametrize(
    ("error", "recipient_status", "log_status"),
    [
        (AmbiguousSendError("read timeout"), "unknown", "unknown"),
        (PermanentSendError("mailbox does not exist", code="550"), "failed", "failed"),
        (TransientSendError("throttled"), "pending", "deferred"),
        (FatalSendError("sender not verified"), "pending", "deferred"),
    ],
)
def test_each_error_class_leaves_the_recipient_where_it_belongs(db, error, recipient_status, log_status):
    rid = add(db, "a@example.com")
    c = claim(db, rid)
    assert ledger.record_failure(db, c, error, now=NOW, max_attempts=3) == recipient_status
    assert status_of(db, rid) == recipient_status
    assert db.execute("SELECT status FROM send_log WHERE id = ?", (c.log_id,)).fetchone()[0] == log_status


def test_transient_failures_give_up_after_max_attempts_but_fatal_ones_do_not_count(db):
    rid = add(db, "a@example.com")
    for _ in range(3):
        ledger.record_failure(db, claim(db, rid), FatalSendError("paused"), now=NOW, max_attempts=2)
    assert status_of(db, rid) == "pending"
    ledger.record_failure(db, claim(db, rid), TransientSendError("busy"), now=NOW, max_attempts=2)
    assert status_of(db, rid) == "pending"
    ledger.record_failure(db, claim(db, rid), TransientSendError("busy"), now=NOW, max_attempts=2)
    assert status_of(db, rid) == "failed"


def test_a_refusal_before_the_recipient_was_named_does_not_count_toward_max_attempts(db):
    # The relay unreachable for days (or the account throttled) is not the recipient's fault.
    rid = add(db, "a@example.com")
    for _ in range(4):
        ledger.record_failure(db, claim(db, rid), TransientSendError("connection never opened", before_recipient=True),
                              now=NOW, max_attempts=2)
    assert status_of(db, rid) == "pending"
    assert db.execute("SELECT attempts FROM recipients WHERE id = ?", (rid,)).fetchone()[0] == 0
    ledger.record_failure(db, claim(db, rid), TransientSendError("450 mailbox busy"), now=NOW, max_attempts=2)
    ledger.record_failure(db, claim(db, rid), TransientSendError("450 mailbox busy"), now=NOW, max_attempts=2)
    assert status_of(db, rid) == "failed", "a refusal of the recipient itself still counts"


def test_an_attempt_whose_earlier_try_named_the_recipient_counts_though_its_last_did_not(db):
    # RCPT refused for now, then the relay refusing the next connection: the recipient's refusal
    # must not be hidden by the last one, or the attempts would never add up.
    rid = add(db, "a@example.com")
    for _ in range(2):
        ledger.record_failure(db, claim(db, rid), TransientSendError("421 closing", before_recipient=True),
                              now=NOW, max_attempts=2, earlier=[TransientSendError("450 mailbox busy")])
    assert status_of(db, rid) == "failed"


def test_recovery_turns_interrupted_sends_into_unknown_never_pending(db):
    rid = add(db, "a@example.com")
    claim(db, rid)
    assert ledger.recover_interrupted(db, now=NOW) == 1
    assert status_of(db, rid) == "unknown"
    assert db.execute("SELECT status FROM send_log").fetchone()[0] == "unknown"
    assert ledger.counted_today(db, "2026-11-25") == 1, "an unknown attempt may have gone out"


def test_dry_run_attempts_are_logged_but_change_nothing(db):
    rid = add(db, "a@example.com")
    ledger.log_dry_run(db, rid, now=NOW, tz=BERLIN, subject="Hi", message_id="dry-run-1", transport="dry_run")
    assert status_of(db, rid) == "pending"
    assert ledger.counted_today(db, "2026-11-25") == 0


def test_resolve_unknown_as_sent_or_pending(db):
    a, b = add(db, "a@example.com"), add(db, "b@example.com")
    for rid in (a, b):
        claim(db, rid)
    ledger.recover_interrupted(db, now=NOW)
    assert admin.resolve_unknown(db, " A@Example.com ", "sent") == 1
    assert admin.resolve_unknown(db, "b@example.com", "pending") == 1
    assert (status_of(db, a), status_of(db, b)) == ("sent", "pending")
    assert ledger.counted_today(db, "2026-11-25") == 1, "only the one that went out still counts"
    with pytest.raises(NotFoundError, match="no recipient in unknown state"):
        admin.resolve_unknown(db, "a@example.com", "sent")


def test_resolve_pending_is_refused_when_a_stored_ses_event_proves_the_send_went_out(settings, db):
    # The run died after SES accepted; the Send event was stored while the attempt was still
    # `sending`, and recovery made it `unknown` only afterwards. Sending again would be a duplicate.
    rid = add(db, "a@example.com")
    c = claim(db, rid)
    db.execute("INSERT INTO ses_events (dedupe_key, kind, email, attempt_id, received_at)"
               " VALUES ('k1', 'SENT', 'a@example.com', ?, 'x')", (c.attempt_id,))
    ledger.recover_interrupted(db, now=NOW)
    refused = _cli("resolve", "a@example.com", "--pending", "--db", str(settings.db_path))
    reason = ("a@example.com: SES reported SENT for this send, so it went out and must not be sent again; "
              "resolve it as sent (`email-automation resolve a@example.com --sent`)")
    assert (refused.exit_code, refused.stderr, refused.stdout) == (2, f"Error: {reason}\n", ""), \
        "the user's request is what is refused: bad input, exit 2"
    as_json = _cli("resolve", "a@example.com", "--pending", "--json", "--db", str(settings.db_path))
    assert (as_json.exit_code, json.loads(as_json.stdout)) == (2, {"error": reason})
    assert status_of(db, rid) == "unknown"
    assert admin.resolve_unknown(db, "a@example.com", "sent") == 1


def test_suppress_skips_pending_copies_and_retry_failed_leaves_them_alone(db):
    rid = add(db, "bounced@example.com")
    ledger.record_failure(db, claim(db, rid), PermanentSendError("bounce"), now=NOW, max_attempts=3)
    other = add(db, "other@example.com")
    ledger.record_failure(db, claim(db, other), PermanentSendError("rejected"), now=NOW, max_attempts=3)
    admin.suppress(db, "Bounced@example.com", reason="bounce")
    assert admin.retry_failed(db) == 1
    assert (status_of(db, rid), status_of(db, other)) == ("failed", "pending")
    admin.unsuppress(db, "bounced@example.com")
    with pytest.raises(NotFoundError):
        admin.unsuppress(db, "bounced@example.com")


def test_unsuppress_requeues_only_what_the_suppression_skipped_and_nobody_maybe_mailed(db):
    """Never twice comes first: a recipient skipped for another reason, one with an attempt that may
    have reached the address, or whose address was mailed in another campaign, stays skipped."""
    db.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) VALUES ('b', 's', 'h', 'x')")
    waiting, by_hand = add(db, "a@example.com"), add(db, "a@example.com", 2)
    admin.skip_recipient(db, "a@example.com", campaign="b")
    mailed = add(db, "m@example.com")
    ledger.record_sent(db, claim(db, mailed), "id-1", now=NOW)
    db.execute("UPDATE recipients SET status = 'pending', step = 2 WHERE id = ?", (mailed,))  # its follow-up waits
    elsewhere, sent_elsewhere = add(db, "e@example.com"), add(db, "e@example.com", 2)
    db.execute("UPDATE recipients SET status = 'sent' WHERE id = ?", (sent_elsewhere,))
    for address in ("a@example.com", "m@example.com", "e@example.com"):
        assert admin.suppress(db, address, reason="complaint").skipped == 1
    assert admin.unsuppress(db, "A@example.com") == admin.Unsuppressed("a@example.com", 1)
    assert (status_of(db, waiting), status_of(db, by_hand)) == ("pending", "skipped")
    assert db.execute("SELECT last_error FROM recipients WHERE id = ?", (waiting,)).fetchone()[0] is None
    assert admin.unsuppress(db, "m@example.com").requeued == 0
    assert admin.unsuppress(db, "e@example.com").requeued == 0
    assert (status_of(db, mailed), status_of(db, elsewhere)) == ("skipped", "skipped")


def test_admin_actions_leave_an_audit_trail(db):
    add(db, "a@example.com")
    admin.set_campaign_status(db, "default", "paused", actor="dashboard")
    admin.skip_recipient(db, "a@example.com", actor="dashboard")
    rows = [tuple(r) for r in db.execute("SELECT actor, action, target FROM admin_log ORDER BY id")]
    assert rows == [("dashboard", "pause", "default"), ("dashboard", "skip", "a@example.com")]
    assert db.execute("SELECT status FROM campaigns").fetchone()[0] == "paused"


# --- the suppression list keeps the first reason and date ---------------------------------------


def _cli(*args):
    from typer.testing import CliRunner

    from email_automation.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_second_suppress_keeps_the_first_reason_and_date_and_goes_to_the_history(settings, db):
    path = str(settings.db_path)
    first = _cli("suppress", "Ann@Example.com", "--reason", "unsubscribe", "--db", path)
    assert (first.exit_code, first.stdout) == (0, "ann@example.com suppressed (unsubscribe); 0 pending recipient(s) skipped.\n")
    since = db.execute("SELECT created_at FROM suppressions").fetchone()[0]
    again = _cli("suppress", "ann@example.com", "--db", path)
    assert again.exit_code == 0
    assert again.stdout == (f"ann@example.com was already suppressed on {since[:10]} (unsubscribe, from cli); that "
                            "reason and date are kept and this request is recorded in its history; "
                            "0 pending recipient(s) skipped.\n")
    assert tuple(db.execute("SELECT reason, created_at FROM suppressions").fetchone()) == ("unsubscribe", since)
    assert _cli("unsuppress", "ann@example.com", "--db", path).stdout == (
        "ann@example.com may be mailed again; 0 recipient(s) back in the queue.\n")
    history = [tuple(r) for r in db.execute("SELECT action, reason, source FROM suppression_history ORDER BY id")]
    assert history == [("suppress", "unsubscribe", "cli"), ("suppress", "manual", "cli"),
                       ("unsuppress", "was suppressed for: unsubscribe", "cli")]
    assert [tuple(r) for r in db.execute("SELECT action, detail FROM admin_log ORDER BY id")] == [
        ("suppress", "unsubscribe"), ("suppress", "manual"), ("unsuppress", "")], "every hand-made request is logged"


def test_a_bounce_reported_after_an_unsubscribe_keeps_the_unsubscribe(db):
    from email_automation.events import DeliveryEvent, EventKind, apply_events

    admin.suppress(db, "ann@example.com", reason="unsubscribe", now=NOW)
    pending = add(db, "ann@example.com")
    bounce = DeliveryEvent(EventKind.BOUNCED_PERMANENT, "ann@example.com", "m-1", None, None, "550 5.1.1", "k-1")
    apply_events(db, [bounce], now=datetime(2026, 11, 26, 7, 0, tzinfo=timezone.utc))
    assert tuple(db.execute("SELECT reason, source, created_at FROM suppressions").fetchone()) == (
        "unsubscribe", "cli", "2026-11-25T07:00:00.000000Z")
    assert [tuple(r) for r in db.execute("SELECT action, reason, source FROM suppression_history ORDER BY id")] == [
        ("suppress", "unsubscribe", "cli"), ("suppress", "bounce", "ses-event")]
    assert db.execute("SELECT last_error FROM recipients WHERE id = ?", (pending,)).fetchone()[0] == \
        "suppressed: unsubscribe"
    # The person's request is in the admin log; the later bounce suppressed nothing new, so it is not.
    assert [tuple(r) for r in db.execute("SELECT actor, action, target, detail FROM admin_log")] == [
        ("cli", "suppress", "ann@example.com", "unsubscribe")]


# --- a refused-for-now attempt is `deferred`, apart from `failed` -------------------------------


def test_a_temporary_refusal_is_deferred_everywhere_and_does_not_use_the_daily_limit(settings, db, clock):
    from email_automation.dashboard_data import Reports
    from email_automation.reports import status_summary
    from email_automation.run_daily import run_daily
    from tests.fakes import RecordingSleep, ScriptedTransport

    add(db, "grey@example.com"), add(db, "gone@example.com"), add(db, "ok@example.com")
    greylisted = TransientSendError("4.7.1 greylisted, try again later", code="451")
    transport = ScriptedTransport({"grey@example.com": [greylisted] * 4,
                                   "gone@example.com": [PermanentSendError("no such user", code="550")]})
    settings = settings.model_copy(update={"daily_limit": 5})
    report = run_daily(settings, db, transport, now=clock, sleep=RecordingSleep())
    # Only the message that went out uses the limit: neither refusal delivered anything.
    assert (report.sent, report.failed, report.deferred, report.remaining_today) == (1, 1, 1, 4)
    reports = Reports(settings.db_path, settings, now=clock)
    summary = reports.summary(reports.default_filter())
    status = status_summary(db, now=clock(), tz=settings.tz, daily_limit=5)
    assert summary.failed == status.campaigns[0].counts["failed"] == 1, "one meaning of failed"
    assert (summary.deferred, status.deferred_today, status.campaigns[0].counts["pending"]) == (1, 1, 1)
    assert status.as_dict()["remaining_today"] == reports.today().remaining == 4


# --- recording a send outlasts another writer ---------------------------------------------------


class _Writer:
    """A second connection holding the write lock (BEGIN IMMEDIATE), as a long import does."""

    def __init__(self, path) -> None:
        import sqlite3

        # Taken from the send's worker thread, released from the run's (which waits meanwhile).
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.holding = False

    def take(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.holding = True

    def release(self) -> None:
        self.conn.execute("COMMIT")
        self.holding = False


class _LockingTransport:
    """Accepts every message; right after accepting, another program starts a long write."""

    name = "smtp"

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer

    def send(self, message, *, tags):
        self.writer.take()
        return "accepted-1"

    def close(self) -> None:
        pass


def _sleep_on(clock, writer: _Writer | None = None, release_after: float | None = None):
    """A sleep that moves the test clock; it ends the other writer's transaction after `release_after` s."""
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)
        if writer is not None and writer.holding and release_after is not None and sum(slept) >= release_after:
            writer.release()

    sleep.slept = slept
    return sleep


def test_recording_a_send_waits_minutes_for_another_writer(settings, db, clock, caplog):
    from email_automation.run_daily import run_daily

    db.execute("PRAGMA busy_timeout = 20")  # stands for the 30 s busy timeout, which the writer outlasts
    rid = add(db, "a@example.com")
    writer = _Writer(settings.db_path)
    sleep = _sleep_on(clock, writer, release_after=4 * 60)
    with caplog.at_level("WARNING", logger="email_automation"):
        report = run_daily(settings, db, _LockingTransport(writer), now=clock, sleep=sleep)
    assert (report.sent, report.unknown, status_of(db, rid)) == (1, 0, "sent")
    assert sum(sleep.slept) >= 4 * 60
    assert "still waiting to record that a@example.com was sent as accepted-1" in caplog.text


def test_recording_gives_up_after_the_bounded_wait_and_the_next_run_asks_a_person(settings, db, clock):
    import sqlite3

    from email_automation.run_daily import run_daily

    db.execute("PRAGMA busy_timeout = 20")
    rid = add(db, "a@example.com")
    writer = _Writer(settings.db_path)
    sleep = _sleep_on(clock)
    started = clock()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        run_daily(settings, db, _LockingTransport(writer), now=clock, sleep=sleep)
    waited = (clock() - started).total_seconds()
    assert database.RECORD_PATIENCE.total_seconds() <= waited <= database.RECORD_PATIENCE.total_seconds() + 10
    writer.release()
    assert status_of(db, rid) == "sending"  # never pending: the next run's recovery makes it unknown
