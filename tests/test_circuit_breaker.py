"""The circuit breaker: bounces and complaints from every source stop sending before SES would.

End to end through the CLI: SES events in SES's own JSON on a moto SQS queue (moto server on
127.0.0.1), real SES sends to the moto server, SMTP 5.1.1 refusals from the loopback aiosmtpd sink.
"""

from __future__ import annotations

import json
import random
import urllib.request
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from email_automation import admin, bounces, circuit_breaker
from email_automation.circuit_breaker import Counts, Thresholds, trip_reason
from email_automation.cli import app
from email_automation.database import connect, ensure_campaign, transaction
from email_automation.run_daily import run_daily
from tests.smtp_sink import SmtpSink

from .fakes import RecordingSleep, ScriptedTransport

runner = CliRunner()
EVENTS = Path(__file__).parent / "data" / "ses_events"
DEFAULTS = Thresholds(0.02, 3, 0.0005, 1, timedelta(days=7))


def cli(*args, env=None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def write_csv(path: Path, emails: list[str]) -> Path:
    path.write_text("email,first_name,company\n" + "".join(f"{e},Ann,Acme\n" for e in emails))
    return path


# --- the rule (pure) ----------------------------------------------------------------------------

@pytest.mark.parametrize("sends, bounced, complained, trips", [
    (10, 1, 0, None),  # one bounce among a new user's first ten sends: not yet
    (10, 3, 0, "bounce rate 30% (3 of 10 sends)"),  # but three do
    (200, 3, 0, None),  # 1.5%: under 2%
    (150, 3, 0, "bounce rate 2% (3 of 150 sends)"),  # exactly at the rate counts
    (1000, 0, 1, "complaint rate 0.1% (1 of 1000 sends)"),
    (3000, 0, 1, None),  # 0.033% is under 0.05%
])
def test_a_rate_trips_only_with_its_minimum_count(sends, bounced, complained, trips):
    counts = Counts(sends, tuple(f"b{i}@x.com" for i in range(bounced)), tuple(f"c{i}@x.com" for i in range(complained)))
    reason = trip_reason(counts, DEFAULTS, days=7)
    assert (reason is None) == (trips is None)
    if trips:
        assert reason.startswith(trips) and "over the last 7 day(s)" in reason


def test_the_reason_names_the_rate_the_window_and_the_addresses():
    counts = Counts(10, ("a@x.com", "b@x.com", "a@x.com", "c@x.com"), ())
    assert trip_reason(counts, DEFAULTS, days=7) == (
        "bounce rate 40% (4 of 10 sends) over the last 7 day(s) reached BOUNCE_PAUSE_RATE 2% (minimum 3): "
        "a@x.com, b@x.com, c@x.com")


# --- end to end: SES events on SQS, the next run sends nothing, resume lifts it ------------------

@pytest.fixture
def aws(moto_url, monkeypatch):
    """A fresh moto server (SES with a verified sender, SQS) and the environment of a real SES run."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10)
    boto3.client("sesv2", region_name="us-east-1", endpoint_url=moto_url).create_email_identity(EmailIdentity="example.com")
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_url)
    for name, value in {"AWS_ENDPOINT_URL": moto_url, "AWS_REGION": "us-east-1", "DRY_RUN": "false",
                        "TRANSPORT": "ses", "SENDER_EMAIL": "jane@example.com", "DELAY_SECONDS": "0",
                        "TIMEZONE": "UTC", "DAILY_LIMIT": "40"}.items():
        monkeypatch.setenv(name, value)
    return sqs, sqs.create_queue(QueueName="ses-events")["QueueUrl"]


def bounce_event(email: str, attempt_id: str, message_id: str) -> str:
    """AWS's sample Bounce event (tests/data/ses_events), for one of our sends, as SES publishes it."""
    record = json.loads((EVENTS / "event-bounce.json").read_text().replace("recipient@example.com", email))
    record["mail"]["messageId"] = message_id
    record["mail"]["tags"] = {"attempt_id": [attempt_id], "campaign": ["default"]}
    return json.dumps(record)


def test_bounces_from_ses_pause_all_sending_until_resume(aws, tmp_path):
    sqs, queue = aws
    db = str(tmp_path / "e2e.db")
    assert cli("init", "--db", db).exit_code == 0
    cli("import", str(write_csv(tmp_path / "r.csv", [f"p{i:02}@example.org" for i in range(20)])), "--db", db)
    first = cli("run", "--db", db, "--limit", "10", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["sent"] == 10
    sent = connect(db).execute("SELECT r.email, l.attempt_id, l.message_id FROM send_log l"
                               " JOIN recipients r ON r.id = l.recipient_id ORDER BY l.id LIMIT 3").fetchall()
    for email, attempt_id, message_id in sent:
        sqs.send_message(QueueUrl=queue, MessageBody=bounce_event(email, attempt_id, message_id))
    assert cli("events", "--db", db, "--queue-url", queue, "--wait", "0").exit_code == 0

    stopped = cli("run", "--db", db)

    assert stopped.exit_code == 3
    why = ("all sending paused by the circuit breaker since {}: bounce rate 30% (3 of 10 sends) over the last 7 "
           "day(s) reached BOUNCE_PAUSE_RATE 2% (minimum 3): p00@example.org, p01@example.org, p02@example.org. "
           "Once the cause is fixed: `email-automation resume --all`")
    paused_at = connect(db).execute("SELECT paused_at FROM sending_pauses").fetchone()[0]
    assert stopped.stderr.strip() == f"Error: run stopped: {why.format(paused_at)}"
    assert "Sent 0," in stopped.stdout
    assert connect(db).execute("SELECT count(*) FROM send_log").fetchone()[0] == 10
    assert f"Paused: {why.format(paused_at)}" in cli("status", "--db", db).stdout
    assert json.loads(cli("status", "--db", db, "--json").stdout)["paused"] == [why.format(paused_at)]

    assert cli("resume", "--all", "--db", db).stdout.strip() == "Sending resumed."
    again = cli("run", "--db", db, "--limit", "5", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["sent"] == 5  # the old bounces are not held against the next sends
    assert cli("resume", "--all", "--db", db).stdout.strip() == "Sending was not paused; nothing to resume."


def test_run_help_names_the_circuit_breaker_among_the_reasons_for_exit_3():
    help_text = " ".join(cli("run", "--help").stdout.split())
    assert "by the circuit breaker (a campaign or all sending paused)" in help_text


# --- SMTP 5.1.1 refusals count, suppress, and stop the run mid-way -------------------------------

def test_smtp_user_unknown_suppresses_and_three_stop_the_run_before_the_next_send(tmp_path, monkeypatch):
    gone = [f"gone{i}@example.org" for i in range(3)]
    with SmtpSink(rcpt_replies={e: "550 5.1.1 <{}>: Recipient address rejected: User unknown".format(e) for e in gone}) as sink:
        for name, value in sink.run_settings().items():
            monkeypatch.setenv(name, value)
        db = str(tmp_path / "smtp.db")
        cli("init", "--db", db)
        cli("import", str(write_csv(tmp_path / "r.csv", [*gone, "ok1@example.org", "ok2@example.org"])), "--db", db)
        result = cli("run", "--db", db)
        delivered = [rcpt for d in sink.deliveries for rcpt in d.rcpt_tos]

    assert result.exit_code == 3
    assert delivered == []  # the two good addresses wait: three of three sends bounced
    assert "bounce rate 100% (3 of 3 sends)" in result.stderr
    conn = connect(db)
    assert dict(conn.execute("SELECT email, reason FROM suppressions").fetchall()) == dict.fromkeys(gone, "bounce")
    assert conn.execute("SELECT count(*) FROM bounces WHERE source = 'smtp' AND kind = 'hard'").fetchone()[0] == 3
    assert dict(conn.execute("SELECT email, status FROM recipients WHERE email LIKE 'ok%'").fetchall()) == {
        "ok1@example.org": "pending", "ok2@example.org": "pending"}


@pytest.mark.parametrize("reply, gone", [
    ("5.1.1 User unknown", True),
    ("5.1.10 Recipient address has null MX", True),
    ("5.1.8 Bad sender's system address", False),  # the sender's fault, not the recipient's
    ("5.7.1 Message rejected as spam", False),  # content or policy: the address may be fine
    ("4.1.1 try later", False),
    ("User unknown", False),  # no RFC 3463 status: nothing to go by
])
def test_only_a_permanent_mailbox_status_is_a_bounce(reply, gone):
    assert bounces.mailbox_gone(bounces.enhanced_status(reply)) is gone


# --- per campaign --------------------------------------------------------------------------------

def add(db, campaign: str, emails: list[str], status: str = "pending", attempted_at: str = "2026-11-24T07:00:00.000000Z"):
    with transaction(db):
        cid = ensure_campaign(db, campaign)["id"]
        for email in emails:
            rid = db.execute("INSERT INTO recipients (campaign_id, email, status, created_at) VALUES (?, ?, ?, 'x')",
                             (cid, email, status)).lastrowid
            if status == "sent":
                db.execute("INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, transport)"
                           " VALUES (?, ?, '2026-11-24', ?, 'sent', 'ses')", (rid, f"att-{email}", attempted_at))


def test_one_campaigns_bounces_pause_it_alone_and_resume_restarts_its_count(settings, db, clock):
    add(db, "bad-list", [f"b{i}@x.org" for i in range(10)], "sent")
    add(db, "good-list", [f"g{i}@x.org" for i in range(200)], "sent")
    for i in range(3):
        bounces.record_bounce(db, f"b{i}@x.org", kind="hard", source="inbox", attempt_id=f"att-b{i}@x.org", now=clock())
    add(db, "bad-list", ["next-bad@x.org"])
    add(db, "good-list", ["next-good@x.org"])
    transport = ScriptedTransport()

    report = run_daily(settings, db, transport, now=clock, sleep=RecordingSleep(), rng=random.Random(1))

    assert transport.recipients == ["next-good@x.org"]  # 3 of 210 overall is under 2%
    assert report.fatal_error is None
    assert report.paused == [circuit_breaker.active_pause(db, "bad-list").line()]
    assert "campaign 'bad-list' paused by the circuit breaker" in report.paused[0]
    assert report.paused[0].endswith("`email-automation resume bad-list`")
    assert db.execute("SELECT status FROM campaigns WHERE name = 'bad-list'").fetchone()[0] == "paused"

    admin.set_campaign_status(db, "bad-list", "active", now=clock())
    again = run_daily(settings, db, transport, now=clock, sleep=RecordingSleep(), rng=random.Random(1))
    assert transport.recipients == ["next-good@x.org", "next-bad@x.org"]
    assert again.paused == []


def test_old_bounces_outside_the_window_do_not_count(settings, db, clock):
    add(db, "default", [f"b{i}@x.org" for i in range(3)], "sent", attempted_at="2026-11-01T07:00:00.000000Z")
    for i in range(3):
        bounces.record_bounce(db, f"b{i}@x.org", kind="hard", source="inbox", now=clock() - timedelta(days=8))
    add(db, "default", ["new@x.org"])
    transport = ScriptedTransport()
    run_daily(settings, db, transport, now=clock, sleep=RecordingSleep(), rng=random.Random(1))
    assert transport.recipients == ["new@x.org"]


def test_a_campaigns_window_is_counted_from_the_windows_sends_not_its_whole_history(db):
    """The planner walked every send of the campaign (1.2 s for a million, on each run --plan and
    dashboard view of the Campaigns tab) to count the last 7 days'."""
    from email_automation.database import utc_now

    ran: list[str] = []
    db.set_trace_callback(ran.append)  # the statement as it ran, its values in place
    circuit_breaker.window_counts(db, since=utc_now() - timedelta(days=7), campaign="default")
    db.set_trace_callback(None)
    [sql] = [s for s in ran if s.startswith(circuit_breaker.WINDOW_SENDS_SQL.split(" WHERE")[0])]
    plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
    assert plan[:2] == ["SEARCH l USING INDEX send_log_attempted (attempted_at>?)",
                        "SEARCH r USING INTEGER PRIMARY KEY (rowid=?)"]


def test_thresholds_come_from_the_settings(settings, db, clock):
    strict = settings.model_copy(update={"bounce_pause_min": 1})
    add(db, "default", ["b0@x.org"], "sent")
    bounces.record_bounce(db, "b0@x.org", kind="hard", source="inbox", now=clock())
    add(db, "default", ["new@x.org"])
    transport = ScriptedTransport()
    report = run_daily(strict, db, transport, now=clock, sleep=RecordingSleep(), rng=random.Random(1))
    assert transport.recipients == [] and "minimum 1" in report.fatal_error


def test_one_bounce_reported_by_ses_and_by_the_inbox_counts_once(settings, db, clock):
    """SES forwards bounces to the sender's mailbox by default (email feedback forwarding) while its
    events say the same: two reports of one send's bounce must not double the bounce rate."""
    add(db, "default", [f"b{i}@x.org" for i in range(10)], "sent")
    for i in range(2):  # two bounced sends: under the minimum of 3
        bounces.record_bounce(db, f"b{i}@x.org", kind="hard", source="ses-event", attempt_id=f"att-b{i}@x.org",
                              dedupe_key=f"ses:{i}", now=clock())
        bounces.record_bounce(db, f"b{i}@x.org", kind="hard", source="inbox", attempt_id=f"att-b{i}@x.org",
                              detail="5.1.1 user unknown", now=clock())
    add(db, "default", ["new@x.org"])
    transport = ScriptedTransport()
    report = run_daily(settings, db, transport, now=clock, sleep=RecordingSleep(), rng=random.Random(1))
    assert (transport.recipients, report.paused, report.fatal_error) == (["new@x.org"], [], None)


# --- bounce sources: the inbox watcher's entry point -----------------------------------------------

def test_three_soft_bounces_from_different_sends_suppress_as_soft_bounce(db, clock):
    add(db, "default", ["full@x.org"], "sent")
    for n, message_id in enumerate(["m1", "m2", "m2", "m3"]):  # m2 reported twice: one send
        result = bounces.record_bounce(db, "Full@X.org", kind="soft", source="inbox", message_id=message_id,
                                       detail=f"4.2.2 mailbox full ({n})", now=clock())
        assert result.suppressed == ("soft_bounce" if n == 3 else None)
    assert [tuple(r) for r in db.execute("SELECT reason, source FROM suppressions")] == [("soft_bounce", "inbox")]


def test_a_bounce_reported_twice_is_counted_once(db, clock):
    first = bounces.record_bounce(db, "a@x.org", source="inbox", dedupe_key="dsn:<abc@mx>", now=clock())
    second = bounces.record_bounce(db, "a@x.org", source="inbox", dedupe_key="dsn:<abc@mx>", now=clock())
    assert (first.recorded, first.suppressed, second.recorded) == (True, "bounce", False)
    assert db.execute("SELECT count(*) FROM bounces").fetchone()[0] == 1


# --- settings --------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, rate", [("2%", 0.02), ("0.02", 0.02), ("0.05%", 0.0005), ("100%", 1.0)])
def test_rates_are_given_as_percent_or_fraction(given, rate, monkeypatch):
    from email_automation.config import load_settings

    monkeypatch.setenv("BOUNCE_PAUSE_RATE", given)
    assert load_settings().bounce_pause_rate == pytest.approx(rate)


@pytest.mark.parametrize("given", ["5", "0", "abc", "-1%"])
def test_a_bad_rate_is_one_line_naming_the_setting(given, tmp_path):
    result = cli("status", "--db", str(tmp_path / "x.db"), env={"BOUNCE_PAUSE_RATE": given})
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"Error: invalid setting BOUNCE_PAUSE_RATE={given}: expected a rate such as "
                                     "2% or 0.02 (more than 0, at most 100%)")


def test_resume_without_a_campaign_or_all_says_what_to_give(tmp_path):
    cli("init", "--db", str(tmp_path / "x.db"))
    result = cli("resume", "--db", str(tmp_path / "x.db"))
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: name the campaign to resume, or pass --all to lift a pause of all sending"


# --- asked before every send, counted only when something changed ---------------------------------

@pytest.mark.parametrize(("seconds_per_send", "counts"), [(0, 2), (61, 2 * 20)])
def test_a_run_counts_the_weeks_sends_again_only_after_a_minute(settings, db, clock, seconds_per_send, counts):
    """Counting the window's sends before every message made a run of n messages O(n²) on a busy
    week; its own sends only lower the rates, while old sends leave the window as time passes."""
    add(db, "default", [f"old{i}@x.org" for i in range(50)], "sent")
    add(db, "default", [f"new{i}@x.org" for i in range(20)])
    settings = settings.model_copy(update={"max_new_per_company_per_day": 100})
    scans: list[str] = []
    db.set_trace_callback(lambda sql: scans.append(sql) if sql.startswith(circuit_breaker.WINDOW_SENDS_SQL.split(" WHERE")[0]) else None)

    report = run_daily(settings, db, ScriptedTransport(), now=clock, sleep=RecordingSleep(), rng=random.Random(1),
                       on_outcome=lambda outcome: clock.advance(seconds_per_send))

    assert report.sent == 20
    assert len(scans) == counts  # all sending, then the campaign


def test_bounces_stored_by_the_event_worker_during_a_run_pause_it_before_the_next_send(settings, db, clock):
    add(db, "default", [f"old{i}@x.org" for i in range(10)], "sent")
    add(db, "default", [f"new{i}@x.org" for i in range(5)])
    settings = settings.model_copy(update={"max_new_per_company_per_day": 100})
    worker = connect(settings.db_path)  # another process's connection, as `events` drains SES's queue

    def bounces_arrive(outcome) -> None:
        if outcome.email == "new0@x.org":
            for i in range(3):
                bounces.record_bounce(worker, f"old{i}@x.org", kind="hard", source="ses", attempt_id=f"att-old{i}@x.org",
                                      now=clock())

    transport = ScriptedTransport()
    report = run_daily(settings, db, transport, now=clock, sleep=RecordingSleep(), rng=random.Random(1),
                       on_outcome=bounces_arrive)

    assert transport.recipients == ["new0@x.org"]
    assert "paused by the circuit breaker" in report.fatal_error
