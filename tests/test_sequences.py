"""Follow-up sequences: business-day waits, threading, stops, never twice per step, shared limit.

Days pass by moving the injected clock; nothing sleeps. The clock starts on Wednesday
2026-11-25 at 08:00 in Europe/Berlin (the tests' TIMEZONE).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings as hypothesis_settings, strategies as st

from email_automation import admin, applications, ledger, sequences
from email_automation.database import connect, ensure_campaign, init_db, iso, transaction, utc_now
from email_automation.errors import AmbiguousSendError, NotFoundError, TemplateRenderError
from email_automation.sequences import add_business_days, add_step, delivered_message_id

from .cli_helpers import EXAMPLE, cli
from .fakes import ScriptedTransport
from .imap_server import dovecot  # noqa: F401 - the session fixture
from .test_run_daily import add_recipients, run

FOLLOW_UP = "<p>Just following up, {{ first_name }}.</p>"


def days_later(clock, days):
    clock.current += timedelta(days=days)


def step_of(db, email):
    return tuple(db.execute("SELECT status, step, sequence_stopped FROM recipients WHERE email = ?", (email,)).fetchone())


@pytest.fixture
def sequence(settings, db, clock):
    """Campaign `default` with a follow-up two business days after step 1, and three recipients
    (all at example.com: without STOP_COMPANY_ON_REPLY a reply stops only its sender)."""
    add_step(db, "default", after_days=2, html=FOLLOW_UP, now=clock())
    add_recipients(db, 3)
    return settings.model_copy(update={"stop_company_on_reply": False})


def test_business_days_skip_weekends_and_holidays():
    friday = date(2026, 11, 27)
    assert add_business_days(friday, 1) == date(2026, 11, 30)  # Monday
    assert add_business_days(friday, 1, [date(2026, 11, 30)]) == date(2026, 12, 1)
    assert add_business_days(date(2026, 11, 28), 1) == date(2026, 11, 30)  # from a Saturday


def test_the_delivered_message_id_is_the_one_ses_builds():
    assert delivered_message_id("0100abc", "ses", "us-east-1") == "<0100abc@email.amazonses.com>"
    assert delivered_message_id("0100abc", "ses", "eu-west-1") == "<0100abc@eu-west-1.amazonses.com>"
    assert delivered_message_id("<x@example.com>", "smtp", None) == "<x@example.com>"
    assert delivered_message_id("dry-run-1", "dry_run", None) is None


def test_follow_up_waits_business_days_then_replies_in_the_thread(sequence, db, clock):
    transport = ScriptedTransport(name="ses")
    first = run(sequence, db, transport, clock)
    assert (first.sent, first.steps) == (3, {"1": {"sent": 3}})
    days_later(clock, 1)  # Thursday: one business day only
    assert run(sequence, db, transport, clock).sent == 0
    days_later(clock, 1)  # Friday: due
    second = run(sequence, db, transport, clock)
    assert second.steps == {"2": {"sent": 3}}
    step1 = {m["To"].addresses[0].addr_spec: m for m in transport.delivered[:3]}
    ids = dict(db.execute("SELECT r.email, l.message_id FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
                          " WHERE l.step = 1").fetchall())
    for message in transport.delivered[3:]:
        to = message["To"].addresses[0].addr_spec
        expected = f"<{ids[to]}@email.amazonses.com>"  # us-east-1, as SES delivered it
        assert message["In-Reply-To"] == expected and message["References"] == expected
        assert message["Subject"] == f"Re: {step1[to]['Subject']}"
        assert "Just following up" in message.get_body(("plain",)).get_content()
    assert step_of(db, "person0@example.com") == ("sent", 2, None)
    days_later(clock, 7)
    assert run(sequence, db, transport, clock).sent == 0  # no step 3: the sequence is over


def test_the_wait_skips_the_weekend_and_holidays(settings, db, clock):
    add_step(db, "default", after_days=3, html=FOLLOW_UP, now=clock())
    add_recipients(db, 1)
    settings = settings.model_copy(update={"holidays": "2026-11-30"})
    transport = ScriptedTransport()
    run(settings, db, transport, clock)  # Wednesday
    for _ in range(5):  # Thursday .. Monday (a holiday)
        days_later(clock, 1)
        assert run(settings, db, transport, clock).sent == 0
    days_later(clock, 1)  # Tuesday: Thu, Fri, Tue are the three business days
    assert run(settings, db, transport, clock).sent == 1


def test_slim_scheduled_follow_ups_give_the_same_steps_and_days_with_fewer_columns(sequence, db, clock):
    """The dashboard reads only what it counts and lists; the days due (memoised per day sent)
    are those of the full rows, across sends on different days and a retry due at once."""
    transport = ScriptedTransport()
    run(sequence.model_copy(update={"daily_limit": 1}), db, transport, clock)  # Wednesday: person0
    days_later(clock, 1)
    run(sequence.model_copy(update={"daily_limit": 2}), db, transport, clock)  # Thursday: person1
    run(sequence.model_copy(update={"daily_limit": 3}), db, transport, clock)  # person2
    db.execute("UPDATE recipients SET status = 'pending', step = 2 WHERE email = 'person1@example.com'")  # a retry
    settings = {"now": clock(), "tz": sequence.tz, "holidays": [date(2026, 11, 30)], "stop_company": False}
    full = sequences.scheduled_followups(db, **settings)
    slim = sequences.scheduled_followups(db, slim=True, **settings)
    assert [(d.row["email"], d.step, d.due) for d in full] == [
        ("person1@example.com", 2, clock().date()), ("person0@example.com", 2, date(2026, 11, 27)),
        ("person2@example.com", 2, date(2026, 12, 1))]
    assert [(d.row["id"], d.step, d.due) for d in slim] == [(d.row["id"], d.step, d.due) for d in full]
    assert set(slim[0].row.keys()) == {"id", "status", "sent_at", "email", "company", "timezone", "campaign_name",
                                       "next_step", "after_days"}


def test_due_follow_ups_go_before_new_contacts_within_the_daily_limit(sequence, db, clock):
    settings = sequence.model_copy(update={"daily_limit": 3})
    transport = ScriptedTransport()
    run(settings, db, transport, clock)
    add_recipients(db, 3, start=10)
    days_later(clock, 2)
    report = run(settings, db, transport, clock)
    assert report.steps == {"2": {"sent": 3}}
    assert transport.recipients[3:] == [f"person{i}@example.com" for i in range(3)]
    days_later(clock, 1)
    assert run(settings, db, transport, clock).steps == {"1": {"sent": 3}}


def test_a_reply_a_suppression_a_bounce_and_skip_stop_the_sequence_for_good(sequence, db, clock):
    transport = ScriptedTransport()
    run(sequence, db, transport, clock)
    add_recipients(db, 1, start=3)  # not mailed yet: its step 1 goes out
    applications.mark(db, "person0@example.com", "replied", now=clock())
    admin.suppress(db, "person1@example.com", reason="unsubscribed")
    admin.skip_recipient(db, "person2@example.com")
    days_later(clock, 2)
    report = run(sequence, db, transport, clock)
    assert transport.recipients[3:] == ["person3@example.com"]
    assert report.steps == {"1": {"sent": 1}}
    assert step_of(db, "person0@example.com")[:2] == ("sent", 1)
    assert "replied" in step_of(db, "person0@example.com")[2]
    assert step_of(db, "person1@example.com")[2] == "suppressed: unsubscribed"
    assert step_of(db, "person2@example.com")[2] == "skipped by cli"
    # Lifting the suppression says the sequence stays stopped (it said only "0 back in the queue").
    assert admin.unsuppress(db, "person1@example.com").message() == (
        "person1@example.com may be mailed again; 0 recipient(s) back in the queue; 1 follow-up sequence(s) the "
        "suppression stopped stay stopped (a stopped sequence never starts again).")


def test_a_reply_from_a_colleague_stops_the_sequence_with_stop_company_on_reply(sequence, db, clock):
    on = sequence.model_copy(update={"stop_company_on_reply": True})
    transport = ScriptedTransport()
    run(on, db, transport, clock)
    applications.mark(db, "person0@example.com", "replied", now=clock())
    days_later(clock, 2)
    assert run(on, db, transport, clock).sent == 0
    assert "STOP_COMPANY_ON_REPLY" in step_of(db, "person1@example.com")[2]


def test_a_paused_campaign_resumes_where_it_was(sequence, db, clock):
    transport = ScriptedTransport()
    run(sequence, db, transport, clock)
    admin.set_campaign_status(db, "default", "paused")
    days_later(clock, 2)
    assert run(sequence, db, transport, clock).sent == 0
    admin.set_campaign_status(db, "default", "active")
    days_later(clock, 5)
    assert run(sequence, db, transport, clock).steps == {"2": {"sent": 3}}


def test_an_unknown_step_one_holds_the_follow_up_until_resolved(sequence, db, clock):
    transport = ScriptedTransport({"person0@example.com": [AmbiguousSendError("timed out")]})
    run(sequence, db, transport, clock)
    days_later(clock, 2)
    assert run(sequence, db, transport, clock).steps == {"2": {"sent": 2}}
    assert step_of(db, "person0@example.com")[:2] == ("unknown", 1)
    admin.resolve_unknown(db, "person0@example.com", "sent", now=clock())  # Friday: the wait starts now
    days_later(clock, 3)
    assert run(sequence, db, transport, clock).sent == 0  # Monday
    days_later(clock, 1)
    assert run(sequence, db, transport, clock).steps == {"2": {"sent": 1}}


def test_step_list_counts_a_follow_up_of_unknown_outcome_apart_from_the_sent_ones(sequence, db, clock):
    transport = ScriptedTransport()
    run(sequence, db, transport, clock)
    days_later(clock, 2)
    transport.script["person0@example.com"] = [AmbiguousSendError("timed out")]
    run(sequence, db, transport, clock)
    assert [(s.number, s.sent, s.unknown) for s in sequences.list_steps(db, "default")] == [(2, 2, 1)]
    listed = cli("step", "list", "--db", str(sequence.db_path))
    assert listed.stdout.endswith("sent 2, unknown 1\n"), listed.stdout
    as_json = json.loads(cli("step", "list", "--json", "--db", str(sequence.db_path)).stdout)
    assert (as_json["steps"][0]["sent"], as_json["steps"][0]["unknown"]) == (2, 1)


def test_a_follow_up_settled_by_ses_waits_from_its_own_send_for_the_next_step(sequence, db, clock):
    """Step 2's outcome was unknown; SES's events settled it as sent, but the recipient kept step
    1's sent_at, so step 3 was due two business days after step 1, at once."""
    add_step(db, "default", after_days=3, html="<p>Last one</p>", now=clock())
    transport = ScriptedTransport()
    run(sequence, db, transport, clock)  # Wednesday 25th: step 1
    days_later(clock, 2)
    transport.script["person0@example.com"] = [AmbiguousSendError("timed out")]
    run(sequence, db, transport, clock)  # Friday 27th: step 2, person0's unknown
    attempt, attempted = db.execute("SELECT attempt_id, attempted_at FROM send_log l JOIN recipients r"
                                    " ON r.id = l.recipient_id WHERE r.email = 'person0@example.com' AND l.step = 2").fetchone()
    with transaction(db):
        db.execute("INSERT INTO ses_events (dedupe_key, kind, email, message_id, attempt_id, event_at, received_at)"
                   " VALUES ('k', 'DELIVERED', 'person0@example.com', 'ses-1', ?, ?, ?)", (attempt, attempted, attempted))
        ledger.settle_from_events(db, actor="ses-event", now=clock())
    assert step_of(db, "person0@example.com")[:2] == ("sent", 2)
    days_later(clock, 3)  # Monday: step 3's three business days after Friday are not over
    assert run(sequence, db, transport, clock).sent == 0
    days_later(clock, 2)  # Wednesday
    assert run(sequence, db, transport, clock).steps == {"3": {"sent": 3}}


def test_each_step_is_claimed_once(sequence, db, clock):
    transport = ScriptedTransport()
    run(sequence, db, transport, clock)
    days_later(clock, 2)
    run(sequence, db, transport, clock)
    assert run(sequence, db, transport, clock).sent == 0
    rid = db.execute("SELECT id FROM recipients WHERE email = 'person0@example.com'").fetchone()[0]
    again = ledger.claim(db, rid, now=clock(), tz=sequence.tz, daily_limit=100, subject="s", transport="smtp", step=2)
    assert again is None
    counted = db.execute("SELECT step, count(*) FROM send_log WHERE status = 'sent' GROUP BY step").fetchall()
    assert [tuple(r) for r in counted] == [(1, 3), (2, 3)]


def test_a_refused_follow_up_is_retried_as_that_step(sequence, db, clock):
    from email_automation.errors import TransientSendError

    transport = ScriptedTransport()
    run(sequence, db, transport, clock)
    days_later(clock, 2)
    transport.script["person0@example.com"] = [TransientSendError("busy")] * 4
    run(sequence, db, transport, clock)
    assert step_of(db, "person0@example.com")[:2] == ("pending", 2)
    days_later(clock, 1)
    assert run(sequence, db, transport, clock).steps == {"2": {"sent": 1}}
    assert step_of(db, "person0@example.com")[:2] == ("sent", 2)


def test_a_step_is_not_removed_once_sent_and_later_steps_move_up(settings, db, clock):
    add_step(db, "default", after_days=2, html=FOLLOW_UP, now=clock())
    add_step(db, "default", after_days=5, html="<p>Last one</p>", subject="One more thing", now=clock())
    sequences.remove_step(db, "default", 2)
    assert [(s.number, s.after_days, s.subject) for s in sequences.list_steps(db, "default")] == [(2, 5, "One more thing")]
    assert sequences.step_numbers(db, "default") == [2]
    add_recipients(db, 1)
    run(settings, db, ScriptedTransport(), clock)
    days_later(clock, 7)
    run(settings, db, ScriptedTransport(), clock)
    with pytest.raises(TemplateRenderError, match="already sent"):
        sequences.remove_step(db, "default", 2)
    with pytest.raises(NotFoundError):
        sequences.remove_step(db, "default", 3)


def test_removing_a_step_someone_waited_for_gives_them_the_next_after_its_own_wait(sequence, db, clock):
    add_step(db, "default", after_days=5, html="<p>Last one</p>", now=clock())
    transport = ScriptedTransport()
    run(sequence, db, transport, clock)  # Wednesday: step 1 to all three
    days_later(clock, 2)
    rid = db.execute("SELECT id FROM recipients WHERE email = 'person0@example.com'").fetchone()[0]
    claim = ledger.claim(db, rid, now=clock(), tz=sequence.tz, daily_limit=100, subject="s", transport="smtp", step=2)
    ledger.give_back(db, claim, now=clock())  # the run stopped before its turn: nothing left
    sequences.remove_step(db, "default", 2)  # step 3 (five business days) becomes step 2
    assert step_of(db, "person0@example.com")[:2] == ("sent", 1)
    assert run(sequence, db, transport, clock).sent == 0  # not at once: five business days after Wednesday
    days_later(clock, 5)
    assert run(sequence, db, transport, clock).steps == {"2": {"sent": 3}}


def test_removing_the_last_step_someone_waited_for_completes_their_sequence(sequence, db, clock):
    add_step(db, "default", after_days=2, html="<p>Last one</p>", now=clock())
    transport = ScriptedTransport()
    run(sequence, db, transport, clock)
    days_later(clock, 2)
    run(sequence, db, transport, clock)  # step 2 to all three
    days_later(clock, 2)
    rid = db.execute("SELECT id FROM recipients WHERE email = 'person0@example.com'").fetchone()[0]
    claim = ledger.claim(db, rid, now=clock(), tz=sequence.tz, daily_limit=100, subject="s", transport="smtp", step=3)
    ledger.give_back(db, claim, now=clock())  # the run stopped before its turn: nothing left
    assert step_of(db, "person0@example.com")[:2] == ("pending", 3)
    sequences.remove_step(db, "default", 3)
    assert step_of(db, "person0@example.com")[:2] == ("sent", 2)
    rows = sequences.sequence_rows(db, now=clock(), tz=sequence.tz)
    assert {r["next"] for r in rows} == {"sequence complete"}
    assert run(sequence, db, transport, clock).sent == 0


def test_a_new_wait_moves_the_due_day_of_everyone_not_yet_sent_the_step(sequence, db, clock):
    """Step 2 waits 2 business days; it went out to the first three on Friday. Person3, mailed on
    Friday, would get it on Tuesday; after `step set 2 --after-days 4` (allowed although step 2
    was already sent) on Thursday."""
    from email_automation.step_content import set_step

    transport = ScriptedTransport()
    run(sequence, db, transport, clock)  # Wednesday: step 1 to person0..2
    days_later(clock, 2)
    add_recipients(db, 1, start=3)
    assert run(sequence, db, transport, clock).steps == {"1": {"sent": 1}, "2": {"sent": 3}}  # Friday

    def due_days():
        return [(d.row["email"], d.step, d.due) for d in sequences.scheduled_followups(db, now=clock(), tz=ZoneInfo("Europe/Berlin"))]

    assert due_days() == [("person3@example.com", 2, date(2026, 12, 1))]
    assert set_step(db, "default", 2, after_days=4, now=clock()) is False
    assert due_days() == [("person3@example.com", 2, date(2026, 12, 3))]
    assert [(s.number, s.after_days, s.html) for s in sequences.list_steps(db, "default")] == [(2, 4, FOLLOW_UP)]
    days_later(clock, 4)  # Tuesday: the old wait would be over
    assert run(sequence, db, transport, clock).sent == 0
    days_later(clock, 2)  # Thursday
    assert run(sequence, db, transport, clock).steps == {"2": {"sent": 1}}


@pytest.mark.parametrize("after_days", [0, 261])
def test_a_wait_out_of_range_is_refused_as_step_add_refuses_it(sequence, db, clock, after_days):
    from email_automation.step_content import set_step

    with pytest.raises(TemplateRenderError) as refused:
        set_step(db, "default", 2, after_days=after_days, now=clock())
    assert str(refused.value) == (f"campaign 'default': --after-days must be 1 to 260 business days (a year), "
                                  f"not {after_days}")
    with pytest.raises(TemplateRenderError) as by_add:
        add_step(db, "default", after_days=after_days, html=FOLLOW_UP, now=clock())
    assert str(by_add.value) == str(refused.value)
    assert [s.after_days for s in sequences.list_steps(db, "default")] == [2]


def test_a_wait_is_the_steps_not_one_templates(sequence, db, clock):
    from email_automation.step_content import set_step

    with pytest.raises(TemplateRenderError) as refused:
        set_step(db, "default", 2, template="bank", after_days=3, html=FOLLOW_UP, now=clock())
    assert str(refused.value) == ("campaign 'default', step 2: --after-days is the step's wait, the same for every "
                                  "template: give it without --template")
    assert [s.after_days for s in sequences.list_steps(db, "default")] == [2]


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli_db(tmp_path, monkeypatch):
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("import", str(EXAMPLE), "--db", "x.db").exit_code == 0
    (tmp_path / "f.html").write_text(FOLLOW_UP)
    return tmp_path / "x.db"


def test_step_set_changes_the_wait_alone_or_with_the_content(cli_db, tmp_path):
    assert cli("step", "add", "--after-days", "3", "--html", "f.html", "--db", "x.db").exit_code == 0
    changed = cli("step", "set", "2", "--after-days", "5", "--db", "x.db")
    assert changed.stdout == "Step 2 of campaign 'default' updated: 5 business day(s) after step 1.\n"
    assert cli("step", "list", "--db", "x.db").stdout.startswith("step 2: 5 business day(s) after step 1,")
    (tmp_path / "g.html").write_text("<p>Any news?</p>")
    both = cli("step", "set", "2", "--after-days", "7", "--html", "g.html", "--json", "--db", "x.db")
    assert json.loads(both.stdout) == {"campaign": "default", "step": 2, "template": None, "result": "updated",
                                       "after_days": 7, "notes": []}
    assert json.loads(cli("step", "set", "2", "--subject", "Hi", "--json", "--db", "x.db").stdout)["after_days"] is None
    assert [(s["after_days"], s["subject"]) for s in json.loads(cli("step", "list", "--json", "--db", "x.db").stdout)["steps"]] == [(7, "Hi")]
    over = cli("step", "set", "2", "--after-days", "261", "--db", "x.db")
    assert over.exit_code == 2 and "261 is not in the range 1<=x<=260" in over.stderr
    nothing = cli("step", "set", "2", "--db", "x.db")
    assert nothing.exit_code == 2 and nothing.stderr == (
        "Error: campaign 'default', step 2: nothing to set: give --after-days, --subject, --html and/or --text\n")


def test_step_add_list_remove_and_template_show(cli_db):
    added = cli("step", "add", "--after-days", "3", "--html", "f.html", "--db", "x.db")
    assert added.stdout == "Step 2 added to campaign 'default': 3 business day(s) after step 1.\n"
    listed = cli("step", "list", "--db", "x.db")
    assert listed.stdout == "step 2: 3 business day(s) after step 1, subject: Re: + the subject of step 1, sent 0\n"
    assert json.loads(cli("step", "list", "--json", "--db", "x.db").stdout)["steps"][0]["after_days"] == 3
    shown = cli("template", "show", "--db", "x.db").stdout
    assert "=== step 2: 3 business day(s) after step 1" in shown and FOLLOW_UP in shown
    assert cli("step", "remove", "2", "--db", "x.db").stdout == "Step 2 removed from campaign 'default'.\n"
    assert cli("step", "list", "--db", "x.db").stdout == "Campaign 'default' has no follow-up steps.\n"


@pytest.mark.parametrize("args, message", [
    (["step", "add", "--after-days", "2", "--html", "f.html", "-c", "nosuch"], "no campaign named 'nosuch'"),
    (["step", "remove", "1"], "step 1 is the campaign's own template"),
    (["step", "remove", "4"], "campaign 'default' has no step 4"),
    (["step", "add", "--after-days", "261", "--html", "f.html"], "261 is not in the range 1<=x<=260"),
], ids=["campaign", "step-1", "missing", "wait-over-a-year"])
def test_step_errors_are_one_line(cli_db, args, message):
    result = cli(*args, "--db", "x.db")
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_broken_step_template_is_refused_with_its_line(cli_db, tmp_path):
    (tmp_path / "bad.html").write_text("<p>{{ nosuch_column }}</p>")
    result = cli("step", "add", "--after-days", "2", "--html", "bad.html", "--db", "x.db")
    assert result.exit_code == 2 and "nosuch_column" in result.stderr
    assert connect(cli_db).execute("SELECT count(*) FROM campaign_steps").fetchone()[0] == 0


@pytest.mark.parametrize("html, problem", [("<p>{{ Nope }}</p>", "HTML body template line 1: unknown variable 'Nope'"),
                                           ("<p>{{ nope </p>", "HTML body template line 1: unexpected '/'"),
                                           (" ", "the HTML body template is empty")], ids=["unknown", "syntax", "empty"])
def test_a_broken_step_template_is_refused_naming_the_step(cli_db, tmp_path, html, problem):
    """The README: such an error names the step and template (here step 3: step 2 exists)."""
    (tmp_path / "f.html").write_text(FOLLOW_UP)
    assert cli("step", "add", "--after-days", "2", "--html", "f.html", "--db", "x.db").exit_code == 0
    (tmp_path / "bad.html").write_text(html)
    result = cli("step", "add", "--after-days", "5", "--html", "bad.html", "--db", "x.db")
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: campaign 'default', step 3: {problem}")
    assert connect(cli_db).execute("SELECT count(*) FROM campaign_steps").fetchone()[0] == 1


def test_a_follow_up_reaches_an_smtp_server_as_a_reply_and_run_json_counts_steps(tmp_path, monkeypatch):
    """End to end through the CLI and a loopback SMTP server; the days in between pass by dating
    step 1's sends ten days back."""
    from .smtp_sink import SmtpSink

    for name, value in {"SENDER_EMAIL": "jane@example.com", "DELAY_SECONDS": "0", "TIMEZONE": "UTC",
                        "TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_STARTTLS": "false",
                        "STOP_COMPANY_ON_REPLY": "false"}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "people.csv").write_text("email,first_name\nada@example.com,Ada\nbob@example.org,Bob\n")
    (tmp_path / "f.html").write_text(FOLLOW_UP)
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("import", "people.csv", "--db", "x.db").exit_code == 0
    assert cli("step", "add", "--after-days", "2", "--html", "f.html", "--db", "x.db").exit_code == 0
    with SmtpSink() as sink:
        monkeypatch.setenv("SMTP_PORT", str(sink.port))
        first = json.loads(cli("run", "--send", "--json", "--db", "x.db").stdout)
        assert first["steps"] == {"1": {"sent": 2}}
        cli("mark", "bob@example.org", "replied", "--db", "x.db")
        conn = connect(tmp_path / "x.db")
        conn.execute("UPDATE recipients SET sent_at = ?", (iso(utc_now() - timedelta(days=10)),))
        conn.close()
        status = json.loads(cli("status", "--json", "--db", "x.db").stdout)
        # Bob's reply stops his step 2 at once, before a run records it: counted as the rows show it.
        assert status["steps"] == {"default": {"1": {"sent": 2, "unknown": 0, "due": 0, "stopped": 0, "replied": 0},
                                               "2": {"sent": 0, "unknown": 0, "due": 1, "stopped": 1, "replied": 0}}}
        second = json.loads(cli("run", "--send", "--json", "--db", "x.db").stdout)
        assert second["steps"] == {"2": {"sent": 1}}
        assert json.loads(cli("run", "--send", "--json", "--db", "x.db").stdout)["steps"] == {}
        messages = [d.message for d in sink.deliveries]
    assert [m["To"].addresses[0].addr_spec for m in messages] == ["ada@example.com", "bob@example.org",
                                                                  "ada@example.com"]
    assert messages[2]["In-Reply-To"] == messages[0]["Message-ID"] == messages[2]["References"]
    assert messages[2]["Subject"] == "Re: " + messages[0]["Subject"]
    shown = cli("status", "--db", "x.db").stdout
    assert "Steps in default: step 1 sent 2; step 2 sent 1, stopped before it 1." in shown


def test_the_plan_says_who_waits_for_a_reply_an_unknown_step_a_window_or_a_suppression(sequence, db, clock):
    from email_automation.plan import plan_run

    transport = ScriptedTransport({"person1@example.com": [AmbiguousSendError("timed out")]})
    run(sequence, db, transport, clock)  # Wednesday
    add_recipients(db, 2, start=5)
    db.execute("UPDATE recipients SET timezone = 'America/Los_Angeles' WHERE email = 'person5@example.com'")
    db.execute("INSERT INTO suppressions (email, reason, source, created_at) VALUES ('person6@example.com',"
               " 'manual', 'test', 'x')")  # not yet swept to `skipped` by a run
    office = sequence.model_copy(update={"send_days": "mon-fri", "send_hours": "08:00-17:00"})
    plan = plan_run(db, office, now=clock())
    assert plan.send == []
    assert [(h.email, h.step, h.reason) for h in plan.held] == [
        ("person0@example.com", 2, "waiting for a reply until 2026-11-27"),
        ("person2@example.com", 2, "waiting for a reply until 2026-11-27"),
        ("person1@example.com", 2, "step 1 is unknown: settle it with `email-automation resolve`"),
        ("person6@example.com", 1, "suppressed: manual"),
        ("person5@example.com", 1, "outside the send window (23:00 is outside SEND_HOURS in America/Los_Angeles)"),
    ]
    assert db.execute("SELECT count(*) FROM send_log").fetchone()[0] == 3  # the plan claimed nothing


def test_the_plan_names_the_follow_ups_a_reply_or_a_suppression_stops_as_the_run_records_them(sequence, db, clock):
    """They were left out of the plan without a word: a colleague's reply with STOP_COMPANY_ON_REPLY
    made a whole company's follow-ups vanish from it."""
    from email_automation.plan import plan_run

    on = sequence.model_copy(update={"stop_company_on_reply": True})
    db.execute("UPDATE recipients SET company = 'Acme' WHERE email IN ('person0@example.com', 'person1@example.com')")
    run(on, db, ScriptedTransport(), clock)  # step 1 to all three
    applications.mark(db, "person0@example.com", "replied", now=clock())
    admin.suppress(db, "person2@example.com", reason="unsubscribed")
    days_later(clock, 2)
    planned = {(h.email, h.step): h.reason for h in plan_run(db, on, now=clock()).held}
    assert planned == {
        ("person0@example.com", 2): "stopped by a reply: application status is 'replied'",
        ("person1@example.com", 2): "stopped by a reply: person0@example.com at the same company (Acme) has "
                                    "application status 'replied' (STOP_COMPANY_ON_REPLY)",
        ("person2@example.com", 2): "suppressed: unsubscribed"}
    assert run(on, db, ScriptedTransport(), clock).sent == 0
    assert {email: step_of(db, email)[2] for email, _ in planned} == {email: why for (email, _), why in planned.items()}


def test_a_follow_up_to_an_address_that_bounced_and_was_unsuppressed_is_held_in_the_plan_as_the_run_stops_it(
        sequence, db, clock):
    """The plan said `send person0 (step 2)`; the run then stopped it as bounced."""
    from email_automation import bounces
    from email_automation.plan import plan_run

    run(sequence, db, ScriptedTransport(), clock)
    bounces.record_bounce(db, "person0@example.com", kind="hard", source="inbox", now=clock())
    admin.unsuppress(db, "person0@example.com")
    days_later(clock, 2)
    plan = plan_run(db, sequence, now=clock())
    assert [(h.email, h.step, h.reason) for h in plan.held] == [("person0@example.com", 2, "bounced")]
    assert "person0@example.com" not in [p.email for p in plan.send]
    transport = ScriptedTransport()
    run(sequence, db, transport, clock)
    assert sorted(transport.recipients) == sorted(p.email for p in plan.send)
    assert step_of(db, "person0@example.com")[2] == "bounced"


def test_a_reply_read_from_the_real_imap_server_stops_that_follow_up(sequence, db, clock, dovecot):  # noqa: F811
    from email_automation import inbox
    from email_automation.config import load_settings

    box = dovecot.mailbox()
    settings = load_settings(**{**sequence.model_dump(), **box.settings()})
    transport = ScriptedTransport(name="ses")
    run(settings, db, transport, clock)
    inbox.read_inbox(settings, db, now=clock)  # the first read marks where the folder ends
    sent = db.execute("SELECT message_id FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
                      " WHERE r.email = 'person1@example.com'").fetchone()[0]
    box.append(f"From: Person1 <person1@example.com>\r\nTo: jane@example.com\r\nSubject: Re: hello\r\n"
               f"Message-ID: <answer-1@example.com>\r\nIn-Reply-To: <{sent}@email.amazonses.com>\r\n"
               f"Date: Wed, 25 Nov 2026 12:00:00 +0000\r\n\r\nHappy to talk, call me.\r\n".encode())
    clock.current += timedelta(hours=5)
    assert inbox.read_inbox(settings, db, now=clock).as_dict()["replies"] == 1
    days_later(clock, 2)
    report = run(settings, db, transport, clock)
    assert report.steps == {"2": {"sent": 2}}
    assert "person1@example.com" not in transport.recipients[3:]
    assert "replied" in step_of(db, "person1@example.com")[2]
    summary = sequences.step_summary(db, now=clock(), tz=settings.tz, stop_company=False)
    assert summary["default"] == {"1": {"sent": 3, "unknown": 0, "due": 0, "stopped": 0, "replied": 1},  # step 1 earned it
                                  "2": {"sent": 2, "unknown": 0, "due": 0, "stopped": 1, "replied": 0}}


def test_the_dashboard_shows_each_recipients_step_next_due_date_and_application(sequence, db, clock):
    from streamlit.testing.v1 import AppTest

    from email_automation import dashboard
    from email_automation.dashboard_data import Reports

    transport = ScriptedTransport({"person2@example.com": [AmbiguousSendError("timed out")]})
    run(sequence, db, transport, clock)
    applications.mark(db, "person1@example.com", "interview", now=clock())
    sequences.stop_finished(db, now=clock(), stop_company=False)
    at = AppTest.from_function(dashboard.render, args=(Reports(sequence.db_path, sequence, now=clock),),
                               default_timeout=30)
    at.session_state[dashboard.TAB_KEY] = "Recipients"
    at.run()
    assert not at.exception, at.exception
    frame = next(f.value for f in at.dataframe if "next" in f.value.columns)
    assert frame.to_dict("records") == [
        {"email": "person0@example.com", "campaign": "default", "step": 1, "status": "sent",
         "next": "step 2 due 2026-11-27", "application": "none"},
        {"email": "person1@example.com", "campaign": "default", "step": 1, "status": "sent",
         "next": "stopped: stopped by a reply: application status is 'interview'", "application": "interview"},
        {"email": "person2@example.com", "campaign": "default", "step": 1, "status": "unknown",
         "next": "held: step 1 is unknown", "application": "none"},
    ]


needs_faketime = pytest.mark.skipif(shutil.which("faketime") is None,
                                    reason="faketime is not installed (apt-get install faketime)")


def faketime_env(tmp_path, sink, **settings: str) -> dict[str, str]:
    """A real SMTP run to `sink` on weekdays 08:00-17:00; TZ=UTC, so faketime's moments are UTC."""
    return {**os.environ, **sink.run_settings(DB_PATH=str(tmp_path / "x.db"), SEND_DAYS="mon-fri",
                                              SEND_HOURS="08:00-17:00", TZ="UTC", **settings)}


def run_at(env: dict[str, str], utc: str) -> str:
    """`email-automation run` in a process whose clock says `utc`; its last line."""
    result = subprocess.run(["faketime", utc, sys.executable, "-m", "email_automation", "run"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


@needs_faketime
def test_the_cli_under_faketime_waits_over_the_weekend_for_a_follow_up(tmp_path):
    """Real `run` processes with a faked clock: Friday step 1, Saturday outside the window,
    Monday the follow-up (one business day after Friday)."""
    from .smtp_sink import SmtpSink

    (tmp_path / "people.csv").write_text("email,first_name\nada@example.com,Ada\n")
    (tmp_path / "f.html").write_text(FOLLOW_UP)
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("import", "people.csv", "--db", "x.db").exit_code == 0
    assert cli("step", "add", "--after-days", "1", "--html", "f.html", "--db", "x.db").exit_code == 0
    with SmtpSink() as sink:
        env = faketime_env(tmp_path, sink, TIMEZONE="America/New_York")  # New York is UTC-5
        assert run_at(env, "2026-11-27 12:00:00").startswith(  # Friday 07:00 in New York: too early
            "Nothing sent: outside the send window (07:00 is outside SEND_HOURS).")
        assert run_at(env, "2026-11-27 14:00:00").startswith("Sent 1,")  # Friday 09:00
        assert run_at(env, "2026-11-28 15:00:00").startswith(
            "Nothing sent: outside the send window (sat is not one of SEND_DAYS).")
        assert run_at(env, "2026-11-30 14:00:00").startswith("Sent 1,")  # Monday 09:00: step 2
    messages = [d.message for d in sink.deliveries]
    assert len(messages) == 2 and messages[1]["Subject"] == "Re: " + messages[0]["Subject"]
    assert messages[1]["In-Reply-To"] == messages[0]["Message-ID"]


@needs_faketime
@pytest.mark.parametrize("utc, last_line", [
    ("2026-10-23 06:30:00", "Sent 1,"),  # Friday 08:30 in Berlin, summer time (UTC+2)
    ("2026-10-26 06:30:00", "Nothing sent: outside the send window (07:30 is outside SEND_HOURS)."),  # CET, UTC+1
])
def test_the_cli_under_faketime_follows_the_dst_change(tmp_path, utc, last_line):
    from .smtp_sink import SmtpSink

    (tmp_path / "people.csv").write_text("email\nada@example.com\n")
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("import", "people.csv", "--db", "x.db").exit_code == 0
    with SmtpSink() as sink:
        assert run_at(faketime_env(tmp_path, sink, TIMEZONE="Europe/Berlin"), utc).startswith(last_line)


# --- per-segment versions of a step, and previewing a step ---------------------------------------

BANK_FOLLOW_UP = "<p>Any news from {{ company }}'s compliance team, {{ first_name }}?</p>"


@pytest.fixture
def segments(tmp_path, monkeypatch):
    """Campaign `default` with a named template `bank` (Bob's segment; Ada gets the campaign's
    own) and a follow-up step 2; the CLI sends through SMTP to a sink the test starts."""
    for name, value in {"SENDER_EMAIL": "jane@example.com", "DELAY_SECONDS": "0", "TIMEZONE": "UTC",
                        "TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_STARTTLS": "false",
                        "STOP_COMPANY_ON_REPLY": "false"}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "people.csv").write_text("email,first_name,company,template\nada@example.com,Ada,Acme,\n"
                                         "bob@example.org,Bob,Bank of X,bank\n")
    (tmp_path / "f.html").write_text(FOLLOW_UP)
    (tmp_path / "bank.html").write_text(BANK_FOLLOW_UP)
    (tmp_path / "bank1.html").write_text("<p>Dear {{ first_name }}, about {{ company }}.</p>")
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("template", "add", "bank", "--subject", "Risk role at {{ company }}", "--html", "bank1.html",
               "--db", "x.db").exit_code == 0
    assert cli("import", "people.csv", "--db", "x.db").exit_code == 0
    assert cli("step", "add", "--after-days", "2", "--html", "f.html", "--db", "x.db").exit_code == 0
    return tmp_path / "x.db"


def test_a_step_has_a_version_per_template_that_step_list_and_template_show_show(segments):
    result = cli("step", "set", "2", "--template", "bank", "--html", "bank.html", "--db", "x.db")
    assert result.stdout == "Step 2, template 'bank', of campaign 'default' added.\n"
    assert cli("step", "list", "--db", "x.db").stdout == (
        "step 2: 2 business day(s) after step 1, subject: Re: + the subject of step 1, sent 0, "
        "own version for template(s): bank\n")
    assert json.loads(cli("step", "list", "--json", "--db", "x.db").stdout)["steps"][0]["templates"] == ["bank"]
    shown = cli("template", "show", "bank", "--db", "x.db").stdout
    assert "=== step 2, template bank: subject: Re: + the subject of step 1 ===\n--- html ---\n" + BANK_FOLLOW_UP in shown
    own = cli("template", "show", "--db", "x.db").stdout
    assert FOLLOW_UP in own and BANK_FOLLOW_UP in own

    again = cli("step", "set", "2", "-t", "bank", "--subject", "Still keen on {{ company }}", "--db", "x.db")
    assert again.stdout == "Step 2, template 'bank', of campaign 'default' replaced.\n"
    assert "=== step 2, template bank: subject: Still keen on {{ company }} ===" in cli(
        "template", "show", "bank", "--db", "x.db").stdout
    removed = cli("step", "remove", "2", "--template", "bank", "--db", "x.db")
    assert removed.stdout == ("Step 2, template 'bank', removed from campaign 'default': "
                              "its recipients get the step's own version.\n")
    assert "own version" not in cli("step", "list", "--db", "x.db").stdout
    assert cli("step", "list", "--db", "x.db").exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["step", "set", "2", "-t", "bank", "--html", "bad.html"],
     "campaign 'default', step 2, template 'bank': HTML body template line 1 reads {{ salary }}, but bob@example.org"),
    (["step", "set", "2", "-t", "nosuch", "--html", "bank.html"], "campaign 'default' has no template 'nosuch' (it has: bank)"),
    (["step", "set", "2", "-t", "bank", "--subject", "Hi"], "a new version of the step needs its --html"),
    (["step", "set", "2", "-t", "bank", "--html", "huge.html"], "more than the limit of"),
    (["step", "set", "1", "--html", "bank.html"], "step 1 is the campaign's own template"),
    (["step", "set", "3", "--html", "bank.html"], "campaign 'default' has no step 3 (it has step 2)"),
    (["step", "remove", "2", "-t", "bank"], "step 2 has no version for template 'bank'"),
], ids=["unknown-variable", "unknown-template", "no-html", "too-big", "step-1", "no-step", "no-version"])
def test_a_step_version_is_checked_like_template_set_and_nothing_is_saved(segments, tmp_path, args, message):
    (tmp_path / "bad.html").write_text("<p>{{ salary }}</p>")
    (tmp_path / "huge.html").write_text("x" * 2_000_000)
    result = cli(*args, "--db", "x.db")
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    conn = connect(segments)
    assert conn.execute("SELECT count(*) FROM step_templates").fetchone()[0] == 0
    assert conn.execute("SELECT html_template FROM campaign_steps").fetchone()[0] == FOLLOW_UP


def test_a_step_that_fails_at_send_time_is_named_in_the_run(segments, tmp_path, monkeypatch):
    """A step whose template compiles but cannot render for a recipient: the run's line names the
    campaign, the step and the segment's version. `{{ campaign }}` in a step is the campaign's name
    (it was "default step 2", the name the step's template was compiled under)."""
    from .smtp_sink import SmtpSink

    (tmp_path / "f.html").write_text("<p>From {{ campaign }}.</p>")
    assert cli("step", "set", "2", "--html", "f.html", "--db", "x.db").exit_code == 0
    assert cli("step", "set", "2", "-t", "bank", "--html", "bank.html", "--db", "x.db").exit_code == 0
    with SmtpSink() as sink:
        monkeypatch.setenv("SMTP_PORT", str(sink.port))
        assert cli("run", "--send", "--db", "x.db").exit_code == 0
        conn = connect(segments)
        conn.execute("UPDATE recipients SET sent_at = ?", (iso(utc_now() - timedelta(days=10)),))
        # as if stored before `step set` rendered a version for its first recipient
        conn.execute("UPDATE step_templates SET html_template = '<p>{{ (first_name|length) // 0 }}</p>'")
        conn.close()
        second = cli("run", "--send", "--db", "x.db")
    assert (" ERROR follow-ups of campaign 'default' held back: campaign 'default', step 2, template 'bank': cannot "
            "render the HTML body for bob@example.org: ZeroDivisionError: integer division or modulo by zero\n"
            ) in second.stdout
    assert "<p>From default.</p>" in cli("preview", "--step", "2", "ada@example.com", "--db", "x.db").stdout


def test_step_two_reaches_each_segment_with_its_own_body_in_the_thread(segments, tmp_path, monkeypatch):
    """End to end through the CLI and a loopback SMTP server: Bob (template bank) gets the bank
    version of step 2, Ada the step's default, both as replies to their step 1."""
    from .smtp_sink import SmtpSink

    assert cli("step", "set", "2", "--template", "bank", "--html", "bank.html", "--db", "x.db").exit_code == 0
    with SmtpSink() as sink:
        monkeypatch.setenv("SMTP_PORT", str(sink.port))
        assert cli("run", "--send", "--db", "x.db").exit_code == 0
        conn = connect(segments)
        conn.execute("UPDATE recipients SET sent_at = ?", (iso(utc_now() - timedelta(days=10)),))
        conn.close()
        assert json.loads(cli("run", "--send", "--json", "--db", "x.db").stdout)["steps"] == {"2": {"sent": 2}}
        messages = {(d.message["To"].addresses[0].addr_spec, n): d.message
                    for n, d in enumerate(sink.deliveries)}
    first = {to: m for (to, n), m in messages.items() if n < 2}
    second = {to: m for (to, n), m in messages.items() if n >= 2}
    bob, ada = second["bob@example.org"], second["ada@example.com"]
    assert "Any news from Bank of X's compliance team, Bob?" in bob.get_body(("html",)).get_content()
    assert "Just following up, Ada." in ada.get_body(("html",)).get_content()
    assert bob["Subject"] == "Re: Risk role at Bank of X"
    assert bob["In-Reply-To"] == first["bob@example.org"]["Message-ID"] == bob["References"]
    assert ada["In-Reply-To"] == first["ada@example.com"]["Message-ID"]


def test_preview_of_a_step_renders_it_as_the_recipient_would_get_it(segments, monkeypatch):
    from .smtp_sink import SmtpSink

    assert cli("step", "set", "2", "--template", "bank", "--html", "bank.html", "--db", "x.db").exit_code == 0
    before = cli("preview", "--step", "2", "bob@example.org", "--db", "x.db")
    assert before.exit_code == 0
    assert before.stdout.startswith("From: jane@example.com\nTo: Bob <bob@example.org>\nSubject: Re: Risk role at Bank of X\n\n"
                                     "--- text ---\n")
    assert "Any news from Bank of X's compliance team, Bob?" in before.stdout and "In-Reply-To" not in before.stdout
    with SmtpSink() as sink:
        monkeypatch.setenv("SMTP_PORT", str(sink.port))
        assert cli("run", "--send", "--db", "x.db").exit_code == 0
        sent = {d.message["To"].addresses[0].addr_spec: d.message for d in sink.deliveries}
    conn = connect(segments)
    conn.execute("UPDATE send_log SET subject = 'Risk role at the bank' WHERE recipient_id = 2")  # as it went out
    conn.close()
    after = cli("preview", "--step", "2", "--email", "bob@example.org", "--db", "x.db").stdout
    message_id = sent["bob@example.org"]["Message-ID"]
    assert after.startswith(f"From: jane@example.com\nTo: Bob <bob@example.org>\nSubject: Re: Risk role at the bank\n"
                            f"In-Reply-To: {message_id}\nReferences: {message_id}\n\n")
    default = cli("preview", "--step", "2", "ada@example.com", "--db", "x.db").stdout
    assert "Just following up, Ada." in default


@pytest.mark.parametrize("step, message", [("3", "campaign 'default' has no step 3 (it has steps 1 to 2)"),
                                           ("0", "campaign 'default' has no step 0")])
def test_preview_of_a_missing_step_is_one_line(segments, step, message):
    result = cli("preview", "--step", step, "--db", "x.db")
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_removing_a_named_template_removes_its_versions_of_the_steps(segments):
    assert cli("step", "set", "2", "--template", "bank", "--html", "bank.html", "--db", "x.db").exit_code == 0
    conn = connect(segments)
    conn.execute("UPDATE recipients SET status = 'sent'")  # nobody waits for the template any more
    conn.close()
    assert cli("template", "remove", "bank", "--db", "x.db").exit_code == 0
    assert "own version" not in cli("step", "list", "--db", "x.db").stdout
    assert connect(segments).execute("SELECT count(*) FROM step_templates").fetchone()[0] == 0


def test_the_dashboard_splits_sends_and_replies_per_step(sequence, db, clock):
    from streamlit.testing.v1 import AppTest

    from email_automation import dashboard
    from email_automation.dashboard_data import Reports

    run(sequence, db, ScriptedTransport(name="ses"), clock)  # Wednesday: step 1 to all three
    wednesday = clock().date()
    days_later(clock, 2)
    run(sequence, db, ScriptedTransport(name="ses"), clock, limit=2)  # Friday: step 2 to person0 and person1
    log_id = dict(db.execute("SELECT r.email || ' ' || l.step, l.id FROM send_log l JOIN recipients r"
                             " ON r.id = l.recipient_id").fetchall())
    # person2 answered the first message, person1 the follow-up (as the inbox reader stores them).
    db.executemany("INSERT INTO inbox_messages (dedupe_key, mailbox, uidvalidity, uid, kind, recipient_id, send_log_id,"
                   " from_email, subject, dated_at, read_at) VALUES (?, 'INBOX', 1, ?, 'reply', ?, ?, ?, 'Re: hi', ?, ?)",
                   [(f"k{n}", n, n + 2, log_id[f"person{n + 1}@example.com {2 - n}"], f"person{n + 1}@example.com",
                     iso(clock()), iso(clock())) for n in (0, 1)])
    reports = Reports(sequence.db_path, sequence, now=clock)
    f = reports.default_filter()
    series, counts = dashboard.per_day_counts(reports.daily(f), f)
    assert series == ["sent: step 1 (first contact)", "sent: step 2 (follow-up)", "failed", "deferred"]
    assert counts[wednesday.isoformat()] == [3, 0, 0, 0]
    assert counts[clock().date().isoformat()] == [0, 2, 0, 0]
    at = AppTest.from_function(dashboard.render, args=(reports,), default_timeout=30).run()
    assert not at.exception, at.exception
    by_step = next(t.value for t in at.dataframe if list(t.value.columns) == ["step", "sent"])
    assert by_step.to_dict("records") == [{"step": "step 1 (first contact)", "sent": 3},
                                          {"step": "step 2 (follow-up)", "sent": 2}]
    at.session_state[dashboard.TAB_KEY] = "Replies"
    replies = next(t.value for t in at.run().dataframe if {"step", "reply rate"} <= set(t.value.columns))
    assert replies.to_dict("records") == [
        {"campaign": "default", "step": "step 1 (first contact)", "sent": 3, "replied": 1, "reply rate": "33.33%"},
        {"campaign": "default", "step": "step 2 (follow-up)", "sent": 2, "replied": 1, "reply rate": "50.00%"}]


@needs_faketime
def test_the_cli_under_faketime_counts_the_day_in_timezone_and_the_window_in_the_recipients_zone(tmp_path):
    """Recipients in Tokyo, the sender's day in New York: the Tokyo morning is still the New York
    evening, so the second run that night finds the day's limit used; after New York's midnight
    the next one goes."""
    from .smtp_sink import SmtpSink

    (tmp_path / "people.csv").write_text("email,timezone\nada@example.jp,Asia/Tokyo\nbob@example.jp,Asia/Tokyo\n")
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("import", "people.csv", "--db", "x.db").exit_code == 0
    with SmtpSink() as sink:
        env = faketime_env(tmp_path, sink, DAILY_LIMIT="1", TIMEZONE="America/New_York", MAX_NEW_PER_COMPANY_PER_DAY="5")
        assert run_at(env, "2026-11-30 22:30:00").startswith(  # Monday 17:30 in New York, Tuesday 07:30 in Tokyo
            "Nothing sent: outside the send window (07:30 is outside SEND_HOURS in Asia/Tokyo).")
        assert run_at(env, "2026-11-30 23:30:00").startswith("Sent 1,")  # Monday 18:30 in New York, Tuesday 08:30 in Tokyo
        sent_first = len(sink.deliveries)
        second = run_at(env, "2026-12-01 01:00:00")  # Monday 20:00 in New York (limit used), Tuesday 10:00 in Tokyo
        third = run_at(env, "2026-12-01 05:30:00")  # Tuesday 00:30 in New York: a new day; 14:30 in Tokyo
        total = len(sink.deliveries)
    assert (sent_first, total) == (1, 2), (second, third)
    assert second.startswith("Nothing sent: today's limit is used up (DAILY_LIMIT") and third.startswith("Sent 1,")


def test_the_dashboard_counts_and_lists_what_a_run_would_send_and_sees_an_action_at_once(sequence, db, clock):
    from email_automation.dashboard_data import Reports
    from email_automation.setting_values import SecretStr

    run(sequence, db, ScriptedTransport(), clock)
    days_later(clock, 5)
    reports = Reports(sequence.db_path, sequence.model_copy(update={"dashboard_password": SecretStr("pw")}), now=clock)
    assert {row["step"]: row["due"] for row in reports.step_counts()} == {1: 0, 2: 3}
    assert [row["next"].split(" due ")[0] for row in reports.sequences()] == ["step 2"] * 3
    reports.mark("person0@example.com", "replied")
    assert [row["next"] for row in reports.sequences()][0].startswith("stopped")
    assert {row["step"]: row["due"] for row in reports.step_counts()} == {1: 0, 2: 2}


# Zones whose local day does not simply follow UTC's: daylight saving at midnight (Asuncion, in
# 2023 the clocks went from 00:00 back to 23:00 of the day before), a half-hour change (Lord
# Howe), a skipped day (Apia, 30 December 2011), a quarter-hour offset (Kathmandu).
_ZONES = ["Europe/Berlin", "America/Asuncion", "Australia/Lord_Howe", "Pacific/Apia", "Asia/Kathmandu", "UTC"]
_AROUND = [datetime(2011, 12, 26, tzinfo=timezone.utc), datetime(2023, 3, 22, tzinfo=timezone.utc),
           datetime(2023, 9, 27, tzinfo=timezone.utc), datetime(2026, 10, 21, tzinfo=timezone.utc)]


@pytest.fixture(scope="module")
def counting_db(tmp_path_factory):
    """Campaign `default` (id 1, active) and `paused` (id 2)."""
    conn = init_db(tmp_path_factory.mktemp("counting") / "c.db")
    with transaction(conn):
        ensure_campaign(conn, "paused")
        conn.execute("UPDATE campaigns SET status = 'paused' WHERE name = 'paused'")
    yield conn
    conn.close()


_DAY = 24 * 60  # minutes
# Each person: sent that many minutes before now (within two weeks, or about a year for the
# longest wait), at that step, in that state, at that company and domain, in the paused campaign.
_PEOPLE = st.lists(st.tuples(
    st.integers(0, 14 * _DAY) | st.integers(355 * _DAY, 370 * _DAY), st.integers(1, 3),
    st.sampled_from(["sent", "pending", "replied", "suppressed"]), st.sampled_from(["Acme", " acme ", "Zeta", ""]),
    st.sampled_from(["example.com", "other.example", "gmail.com"]), st.booleans()), max_size=40)


@hypothesis_settings(max_examples=150, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(zone=st.sampled_from(_ZONES), around=st.sampled_from(_AROUND), now_minutes=st.integers(0, 14 * _DAY),
       waits=st.lists(st.integers(1, 6) | st.just(sequences.MAX_WAIT_DAYS), min_size=1, max_size=3),
       holidays=st.sets(st.integers(-8, 0), max_size=4), people=_PEOPLE, stop_company=st.booleans())
@example(zone="Europe/Berlin", around=_AROUND[3], now_minutes=12 * 60, waits=[1], holidays={0},  # today a holiday
         people=[(26 * 60, 1, "sent", "Acme", "example.com", False)], stop_company=True)
@example(zone="Pacific/Apia", around=_AROUND[0], now_minutes=4 * _DAY + 12 * 60, waits=[1, 2], holidays=set(),
         people=[(minutes, 1, "sent", "", "example.com", False) for minutes in range(0, 4 * _DAY, 90)],
         stop_company=False)  # across the day Apia skipped
@example(zone="Europe/Berlin", around=_AROUND[0], now_minutes=0, waits=[260], holidays=set(),
         people=[(0, 1, "replied", "Acme", "example.com", False), (0, 3, "pending", "Acme", "example.com", False)],
         stop_company=True)  # stopped while waiting for a step the campaign no longer has
def test_the_follow_ups_counted_due_are_those_a_run_would_send(counting_db, zone, around, now_minutes, waits,
                                                               holidays, people, stop_company):
    """The dashboard and `status` count them in SQL, by instants; a run reads them one by one, by
    local days: the same follow-ups, whatever the zone does around midnight, and the same people
    left out (a reply from their company or domain, a suppressed address, a paused campaign)."""
    db, tz = counting_db, ZoneInfo(zone)
    now = around + timedelta(minutes=now_minutes)
    off = [now.astimezone(tz).date() + timedelta(days=d) for d in holidays]
    with transaction(db):
        for table in ("recipients", "campaign_steps", "suppressions"):
            db.execute(f"DELETE FROM {table}")
        for campaign in (1, 2):
            for number, after_days in enumerate(waits, start=2):
                db.execute("INSERT INTO campaign_steps (campaign_id, step, after_days, html_template, created_at)"
                           " VALUES (?, ?, ?, 'x', 'x')", (campaign, number, after_days))
        for i, (minutes_before, step, state, company, domain, paused) in enumerate(people):
            email = f"p{i}@{domain}"
            sent_at = iso(now - timedelta(minutes=minutes_before)) if state != "pending" else None
            db.execute("INSERT INTO recipients (campaign_id, email, company, status, step, sent_at,"
                       " application_status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'x')",
                       (2 if paused else 1, email, company, "pending" if state == "pending" else "sent", step, sent_at,
                        "replied" if state == "replied" else "none"))
            if state == "suppressed":
                db.execute("INSERT INTO suppressions (email, reason, source, created_at) VALUES (?, 'x', 'x', 'x')",
                           (email,))
    expected = Counter((d.row["campaign_name"], d.step)
                       for d in sequences.due_followups(db, now=now, tz=tz, holidays=off, stop_company=stop_company))
    assert sequences.due_counts(db, now=now, tz=tz, holidays=off, stop_company=stop_company) == expected
    # Each step's stopped count is the rows of the Follow-ups table that say stopped before it.
    rows = sequences.sequence_rows(db, now=now, tz=tz, holidays=off, stop_company=stop_company, limit=1000)
    shown = Counter((r["campaign"], str(r["step"] + (r["status"] != "pending")))
                    for r in rows if r["next"].startswith("stopped"))
    summary = sequences.step_summary(db, now=now, tz=tz, holidays=off, stop_company=stop_company)
    # A row waiting for a step the campaign no longer has (removed before anyone got it) has no
    # summary line to be counted in: compared for the steps that exist.
    shown = {key: n for key, n in shown.items() if key[1] in summary.get(key[0], {})}
    assert {(name, n): c["stopped"] for name, steps in summary.items() for n, c in steps.items()
            if c["stopped"]} == shown


@pytest.mark.parametrize("zone, wait", [("Europe/Berlin", 800_000),
                                        ("Asia/Tokyo", 528_536)])  # back to 2 January of year 1, local
def test_a_wait_older_than_the_calendar_counts_nothing_due_and_keeps_status_going(counting_db, zone, wait):
    """A database from before waits were capped may hold one that reaches back to year 1."""
    now, tz = datetime(2026, 12, 1, 12, tzinfo=timezone.utc), ZoneInfo(zone)
    with transaction(counting_db):
        counting_db.execute("DELETE FROM recipients")
        counting_db.execute("DELETE FROM campaign_steps")
        counting_db.execute("INSERT INTO campaign_steps (campaign_id, step, after_days, html_template, created_at)"
                            " VALUES (1, 2, ?, 'x', 'x')", (wait,))
        counting_db.executemany("INSERT INTO recipients (campaign_id, email, status, step, sent_at, created_at)"
                                " VALUES (1, ?, ?, ?, ?, 'x')", [("a@example.com", "sent", 1, "2020-01-01T00:00:00.000000Z"),
                                                                 ("b@example.com", "pending", 2, None)])
    assert sequences.due_counts(counting_db, now=now, tz=tz, stop_company=False) == {("default", 2): 1}  # the retry
    summary = sequences.step_summary(counting_db, now=now, tz=tz, stop_company=False)
    assert summary["default"]["2"]["due"] == 1


def _follow_ups_tables(settings, clock):
    """The dashboard's Recipients › Follow-ups tables (per step, per recipient) and its Sent by step."""
    from streamlit.testing.v1 import AppTest

    from email_automation import dashboard
    from email_automation.dashboard_data import Reports

    at = AppTest.from_function(dashboard.render, args=(Reports(settings.db_path, settings, now=clock),),
                               default_timeout=30).run()
    assert not at.exception, at.exception
    by_step = next(t.value for t in at.dataframe if list(t.value.columns) == ["step", "sent"])
    at.session_state[dashboard.TAB_KEY] = "Recipients"
    at.run()
    assert not at.exception, at.exception
    counts = next(t.value for t in at.dataframe if "due" in t.value.columns).to_dict("records")
    rows = next(t.value for t in at.dataframe if "next" in t.value.columns).to_dict("records")
    return by_step.to_dict("records"), counts, rows


def test_an_unknown_send_is_not_counted_sent_per_step_but_unknown(sequence, db, clock):
    """A send whose outcome is not known did not go out as far as anyone knows: step 1's "sent" is
    the dashboard's Sent (by step), and the unknown one is counted apart, in `status` too."""
    from email_automation.cli.sending import step_lines

    transport = ScriptedTransport({"person2@example.com": [AmbiguousSendError("timed out")]})
    run(sequence, db, transport, clock)
    summary = sequences.step_summary(db, now=clock(), tz=sequence.tz, stop_company=False)
    assert summary["default"]["1"] == {"sent": 2, "unknown": 1, "due": 0, "stopped": 0, "replied": 0}
    assert step_lines(summary) == ["Steps in default: step 1 sent 2, unknown 1; step 2 sent 0."]
    by_step, counts, rows = _follow_ups_tables(sequence, clock)
    assert by_step == [{"step": "step 1 (first contact)", "sent": 2}]
    assert [(c["step"], c["sent"], c["unknown"]) for c in counts] == [(1, 2, 1), (2, 0, 0)]
    assert rows[2]["next"] == "held: step 1 is unknown"
    admin.resolve_unknown(db, "person2@example.com", "sent", now=clock())
    assert sequences.step_summary(db, now=clock(), tz=sequence.tz, stop_company=False)["default"]["1"][
        "sent"] == 3


def test_each_stopped_row_gives_its_real_cause_and_the_step_counts_them_all(sequence, db, clock):
    """A reply stops its sender and, with STOP_COMPANY_ON_REPLY, their colleagues at once: each row
    says so (naming the colleague who answered) before any run records it, a skip and a suppression
    say theirs, and the step's stopped count is the rows that say stopped."""
    on = sequence.model_copy(update={"stop_company_on_reply": True})
    add_recipients(db, 2, start=3)  # person3, person4: Acme too
    db.execute("INSERT INTO recipients (campaign_id, email, first_name, company, created_at)"
               " VALUES (1, 'zoe@other.example', 'Zoe', 'Zeta', 'x'), (1, 'max@third.example', 'Max', 'Tri', 'x')")
    run(on, db, ScriptedTransport(), clock)
    applications.mark(db, "person0@example.com", "replied", now=clock())
    admin.skip_recipient(db, "zoe@other.example", actor="dashboard")
    admin.suppress(db, "person4@example.com", reason="unsubscribed")
    by_step, counts, rows = _follow_ups_tables(on, clock)
    colleague = ("stopped: stopped by a reply: person0@example.com at the same company (Acme) has application"
                 " status 'replied' (STOP_COMPANY_ON_REPLY)")
    assert {r["email"]: r["next"] for r in rows} == {
        "person0@example.com": "stopped: stopped by a reply: application status is 'replied'",
        "person1@example.com": colleague,
        "person2@example.com": colleague,
        "person3@example.com": colleague,
        "person4@example.com": "stopped: suppressed: unsubscribed",
        "zoe@other.example": "stopped: skipped by dashboard",
        "max@third.example": "step 2 due 2026-11-27",
    }
    stopped = sum(r["next"].startswith("stopped") for r in rows)
    assert [(c["step"], c["stopped"], c["due"]) for c in counts] == [(1, 0, 0), (2, stopped, 0)]
    assert sequences.step_summary(db, now=clock(), tz=on.tz, stop_company=True)["default"]["2"]["stopped"] == 6
    # A run records the same causes: nothing changes on the page.
    days_later(clock, 2)
    assert run(on, db, ScriptedTransport(), clock).steps == {"2": {"sent": 1}}
    after = sequences.sequence_rows(db, now=clock(), tz=on.tz, stop_company=True)
    assert [r["next"] for r in after] == [r["next"] for r in rows[:-1]] + ["sequence complete"]
    assert sequences.step_summary(db, now=clock(), tz=on.tz, stop_company=True)["default"]["2"] == {
        "sent": 1, "unknown": 0, "due": 0, "stopped": 6, "replied": 0}
