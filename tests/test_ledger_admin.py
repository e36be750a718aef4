"""The claimed-before-send state machine and the hand-made decisions over it."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from email_automation import admin, ledger
from email_automation.errors import AmbiguousSendError, EmailAutomationError, FatalSendError, NotFoundError, PermanentSendError, TransientSendError

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


def test_resolve_pending_is_refused_when_a_stored_ses_event_proves_the_send_went_out(db):
    # The run died after SES accepted; the Send event was stored while the attempt was still
    # `sending`, and recovery made it `unknown` only afterwards. Sending again would be a duplicate.
    rid = add(db, "a@example.com")
    c = claim(db, rid)
    db.execute("INSERT INTO ses_events (dedupe_key, kind, email, attempt_id, received_at)"
               " VALUES ('k1', 'SENT', 'a@example.com', ?, 'x')", (c.attempt_id,))
    ledger.recover_interrupted(db, now=NOW)
    with pytest.raises(EmailAutomationError, match=r"^a@example.com: SES reported SENT for this send, so it went out"
                                                   r" and must not be sent again; resolve it as sent "):
        admin.resolve_unknown(db, "a@example.com", "pending")
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


def test_admin_actions_leave_an_audit_trail(db):
    add(db, "a@example.com")
    admin.set_campaign_status(db, "default", "paused", actor="dashboard")
    admin.skip_recipient(db, "a@example.com", actor="dashboard")
    rows = [tuple(r) for r in db.execute("SELECT actor, action, target FROM admin_log ORDER BY id")]
    assert rows == [("dashboard", "pause", "default"), ("dashboard", "skip", "a@example.com")]
    assert db.execute("SELECT status FROM campaigns").fetchone()[0] == "paused"
