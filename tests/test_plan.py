"""`run --plan` with SES: GetAccount's quota cuts the planned batch as the run would; read-only.

moto has no sesv2 GetAccount (in process it raises NotImplementedError): it stands for an
endpoint that cannot tell. The quotas themselves come from botocore's Stubber.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from botocore.stub import Stubber
from moto import mock_aws

from email_automation.database import connect
from email_automation.plan import plan_lines, plan_run, read_quota
from email_automation.transports import ses
from email_automation.transports.ses import SesTransport, make_ses_client

from .cli_helpers import cli
from .drip_http import DrippingHttp

SES_ENV = {"SENDER_EMAIL": "jane@example.com", "DRY_RUN": "false", "TRANSPORT": "ses", "AWS_REGION": "us-east-1",
           "DAILY_LIMIT": "20", "DELAY_SECONDS": "0", "TIMEZONE": "UTC"}


def account(max_day=100.0, sent=88.0, rate=1.0, enabled=True):
    return {"SendingEnabled": enabled, "EnforcementStatus": "HEALTHY" if enabled else "SHUTDOWN",
            "ProductionAccessEnabled": True,
            "SendQuota": {"Max24HourSend": max_day, "SentLast24Hours": sent, "MaxSendRate": rate}}


@pytest.fixture
def fifteen(tmp_path):
    """A database made by `init` + `import` with fifteen people at fifteen companies."""
    (tmp_path / "people.csv").write_text("email\n" + "".join(f"p{i}@c{i}.example.com\n" for i in range(15)))
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("import", "people.csv", "--db", "x.db").exit_code == 0
    return tmp_path / "x.db"


@pytest.fixture
def get_account(monkeypatch):
    """GetAccount answers for the SES client the command builds: append them before running it."""
    answers: list[dict] = []

    def make(settings, **kwargs):
        client = make_ses_client(settings, **kwargs)
        stub = Stubber(client)
        for answer in answers:
            stub.add_response("get_account", answer)
        stub.activate()
        return client

    monkeypatch.setattr(ses, "make_ses_client", make)
    return answers


def nothing_claimed(db_path) -> bool:
    conn = connect(db_path)
    return (conn.execute("SELECT count(*) FROM send_log").fetchone()[0] == 0
            and {r[0] for r in conn.execute("SELECT status FROM recipients")} == {"pending"})


def test_ses_quota_cuts_the_planned_batch(settings, db, clock):
    db.executemany("INSERT INTO recipients (campaign_id, email, created_at) VALUES (1, ?, 'x')",
                   [(f"p{i}@c{i}.example.com",) for i in range(15)])
    client = make_ses_client(settings)
    with Stubber(client) as stub:
        stub.add_response("get_account", account(max_day=100.0, sent=88.0, rate=1.0))
        quota = read_quota(SesTransport(settings, client))
    plan = plan_run(db, settings.model_copy(update={"daily_limit": 20}), now=clock(), quota=quota)
    assert [p.email for p in plan.send] == [f"p{i}@c{i}.example.com" for i in range(12)]
    assert plan_lines(plan)[:3] == [
        "The next real run would send 12 message(s) (20 of DAILY_LIMIT 20 left today).",
        "  SES allows 12 more in its 24-hour window: 3 of the 15 planned would wait.",
        "  SES sends at most 1 a second: the run waits 1 s between sends (DELAY_SECONDS 0).",
    ]


def test_run_plan_json_shows_the_ses_quota_and_claims_nothing(fifteen, get_account):
    get_account.append(account(max_day=50_000.0, sent=49_988.0, rate=14.0))
    result = cli("run", "--plan", "--json", "--db", "x.db", env=SES_ENV)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["send"]) == 12 and data["over_limit"] == 0
    assert data["ses_quota"] == {"remaining_24h": 12, "max_send_rate": 14.0, "problem": None, "would_wait": 3,
                                 "stops_run": False}
    assert nothing_claimed(fifteen)


def test_run_plan_says_when_ses_lets_the_account_send_nothing(fifteen, get_account):
    get_account.append(account(enabled=False))
    lines = cli("run", "--plan", "--db", "x.db", env=SES_ENV).stdout.splitlines()
    assert lines[:2] == [
        "The next real run would send 0 message(s) (20 of DAILY_LIMIT 20 left today).",
        "  SES says this account may not send (SendingEnabled=False, EnforcementStatus=SHUTDOWN): open the SES "
        "console's reputation dashboard and re-enable sending. The run would send nothing.",
    ]


def test_run_plan_without_get_account_says_so_in_one_line_and_shows_the_rest(fifteen):
    with mock_aws():
        result = cli("run", "--plan", "--db", "x.db", env={**SES_ENV, "DAILY_LIMIT": "10"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "The next real run would send 10 message(s) (10 of DAILY_LIMIT 10 left today).",
        "  SES account quota not read (NotImplementedError: The get_account action has not been implemented): "
        "the run asks again before it sends.",
        "  step 1: 10",
    ]
    assert lines[-1] == "  5 more wait for a later day (daily limit)."
    assert nothing_claimed(fifteen)


def test_run_plan_gives_up_on_get_account_at_the_send_timeout(fifteen):
    with DrippingHttp(part="body") as server:
        started = time.monotonic()
        result = cli("run", "--plan", "--json", "--db", "x.db",
                     env={**SES_ENV, "AWS_ENDPOINT_URL": server.url, "SEND_TIMEOUT_SECONDS": "0.5"})
        elapsed = time.monotonic() - started
    assert elapsed < 3, "GetAccount waited past SEND_TIMEOUT_SECONDS"
    data = json.loads(result.stdout)
    assert data["ses_quota"]["problem"] == "SES account quota not read (CallTimedOut: no complete answer from sesv2 within 0.5 s)"
    assert len(data["send"]) == 15


NGINX_404 = (b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1>"
             b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


@pytest.fixture
def web_server():
    """A web server where AWS_ENDPOINT_URL should have named SES: every request is a 404 page."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(NGINX_404)))
            self.end_headers()
            self.wfile.write(NGINX_404)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_an_html_error_page_from_the_endpoint_is_one_line_in_the_plan(fifteen, web_server):
    """botocore passes a 4xx's HTML body on as the error's message: it went into the plan and the
    run's log as a page of markup over nine lines."""
    lines = cli("run", "--plan", "--db", "x.db", env={**SES_ENV, "AWS_ENDPOINT_URL": web_server}).stdout.splitlines()
    # botocore names its retries in the message from some version on: the rest is the same line.
    assert lines[1].startswith("  SES account quota not read (ClientError: An error occurred (404) when calling the "
                               "GetAccount operation")
    assert lines[1].endswith(": 404 Not Found 404 Not Found nginx): the run asks again before it sends.")
    assert lines[2] == "  step 1: 15"


def test_a_dry_run_plan_asks_ses_nothing(fifteen, get_account):
    result = cli("run", "--plan", "--json", "--db", "x.db", env={**SES_ENV, "DRY_RUN": "true"})
    assert json.loads(result.stdout)["ses_quota"] is None  # the Stubber has no answer: a call would fail


def test_run_plan_says_replies_still_in_the_inbox_are_not_counted_yet(fifteen):
    """The plan listed a follow-up to someone whose reply sat unread in the inbox, as the one the
    next run would send; that run reads the inbox first and sends nothing to them."""
    env = {**SES_ENV, "TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1"}
    assert not any("inbox" in line for line in cli("run", "--plan", "--db", "x.db", env=env).stdout.splitlines())
    imap = {**env, "IMAP_HOST": "127.0.0.1", "IMAP_USERNAME": "jane", "IMAP_PASSWORD": "pw"}
    assert cli("run", "--plan", "--db", "x.db", env=imap).stdout.splitlines()[1] == (
        "  The real run first reads the inbox (never read yet): a reply that came in since stops its sender's "
        "messages. `email-automation inbox` reads it now.")
    conn = connect(fifteen)
    conn.execute("INSERT INTO inbox_state (mailbox, uidvalidity, last_uid, read_at)"
                 " VALUES ('jane@127.0.0.1:993/INBOX', 1, 7, '2026-11-30T08:05:00.000000Z')")
    conn.commit()
    assert cli("run", "--plan", "--db", "x.db", env=imap).stdout.splitlines()[1] == (
        "  The real run first reads the inbox (last read 2026-11-30 08:05): a reply that came in since stops its "
        "sender's messages. `email-automation inbox` reads it now.")


def test_run_plan_sends_nothing_while_the_circuit_breaker_pauses_all_sending(fifteen):
    """The plan said "would send 15" while the run it announced stopped at once with exit code 3."""
    conn = connect(fifteen)
    with conn:
        conn.execute("INSERT INTO sending_pauses (scope, reason, paused_at) VALUES ('*', 'complaint rate 50%',"
                     " '2026-11-25T07:00:00.000000Z')")
    conn.close()
    result = cli("run", "--plan", "--json", "--db", "x.db", env={**SES_ENV, "SES_SUPPRESSION_CHECK": "false"})
    data = json.loads(result.stdout)
    assert data["send"] == [] and data["per_step"] == {}
    assert data["stopped"].startswith("all sending paused by the circuit breaker since 2026-11-25T07:00:00")
    assert {h["reason"] for h in data["held"]} == {"circuit breaker: all sending paused"}
    assert len(data["held"]) == 15
    lines = cli("run", "--plan", "--db", "x.db", env={**SES_ENV, "DRY_RUN": "true"}).stdout.splitlines()
    assert lines[0].startswith("The next real run would send 0 message(s)")
    assert lines[1].endswith("`email-automation resume --all`. The run would send nothing.")


def test_the_plan_cuts_to_the_ses_quota_before_the_circuit_breaker_holds_a_campaign(settings, db, clock):
    """The run takes SES's quota of the batch first and its breaker check then holds campaign a's
    two: it sends nothing. The plan held them first and promised b0 and b1 in their place."""
    from email_automation.database import ensure_campaign
    from email_automation.plan import Quota

    a = ensure_campaign(db, "a")["id"]
    with db:
        db.executemany("INSERT INTO recipients (campaign_id, email, created_at) VALUES (?, ?, 'x')",
                       [(a, f"a{i}@a{i}.example.com") for i in range(2)] + [(1, f"b{i}@b{i}.example.com") for i in range(3)])
        db.execute("INSERT INTO sending_pauses (scope, reason, paused_at) VALUES ('a', 'bounce rate 9%',"
                   " '2026-11-25T07:00:00.000000Z')")
    plan = plan_run(db, settings, now=clock(), quota=Quota(remaining_24h=2))
    assert plan.send == []
    assert [h.email for h in plan.held][:2] == ["a0@a0.example.com", "a1@a1.example.com"]
    assert plan.quota.would_wait == 3


def test_run_plan_holds_everyone_when_the_rates_would_trip_at_the_first_send(settings, db, clock):
    """The run's check before each send opens the pause; the plan only says it would, and opens none."""
    from email_automation import bounces

    with db:
        db.executemany("INSERT INTO recipients (campaign_id, email, status, created_at) VALUES (1, ?, ?, 'x')",
                       [(f"s{i}@c{i}.example.com", "sent") for i in range(3)] + [("next@n.example.com", "pending")])
        db.executemany("INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, transport)"
                       " VALUES (?, ?, '2026-11-24', '2026-11-24T07:00:00.000000Z', 'sent', 'ses')",
                       [(i + 1, f"att-{i}") for i in range(3)])
    bounces.record_bounce(db, "s0@c0.example.com", kind="complaint", source="inbox", attempt_id="att-0", now=clock())
    plan = plan_run(db, settings, now=clock())
    assert plan.send == [] and plan.stopped.startswith("all sending would be paused by the circuit breaker at the "
                                                       "first send: complaint rate 33.33% (1 of 3 sends)")
    assert db.execute("SELECT count(*) FROM sending_pauses").fetchone()[0] == 0


def test_run_plan_limit_plans_the_batch_the_run_limit_sends(fifteen, monkeypatch):
    """`run --plan --limit 3` said "would send 15", the limit ignored."""
    from .smtp_sink import SmtpSink

    with SmtpSink() as sink:
        env = sink.run_settings(DAILY_LIMIT="10")
        planned = cli("run", "--plan", "--limit", "3", "--db", "x.db", env=env)
        assert planned.exit_code == 0 and nothing_claimed(fifteen)
        assert planned.stdout.splitlines() == [
            "The next real run would send 3 message(s) (--limit 3; 10 of DAILY_LIMIT 10 left today).",
            "  step 1: 3",
            *(f"  send p{i}@c{i}.example.com (default, step 1, c{i}.example.com)" for i in range(3)),
            "  7 more wait for a later run (--limit 3).",
            "  5 more wait for a later day (daily limit).",
        ]
        data = json.loads(cli("run", "--plan", "--limit", "3", "--json", "--db", "x.db", env=env).stdout)
        assert (data["limit"], len(data["send"]), data["over_run_limit"], data["over_limit"]) == (3, 3, 7, 5)
        assert cli("run", "--limit", "3", "--db", "x.db", env=env).exit_code == 0
    assert [d.rcpt_tos[0] for d in sink.deliveries] == [s["email"] for s in data["send"]]
    assert json.loads(cli("run", "--plan", "--json", "--db", "x.db", env=env).stdout)["limit"] is None


def test_run_plan_without_sender_email_stops_as_the_run_does(fifteen):
    """`run --plan` said "would send 15" while `run` exited 2: SENDER_EMAIL is not set."""
    for env in ({}, {"DRY_RUN": "false", "TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1"}, {"REPLY_TO": "nobody"}):
        if "REPLY_TO" in env:
            env = {**env, "SENDER_EMAIL": "jane@example.com"}
        run = cli("run", "--db", "x.db", env=env)
        planned = cli("run", "--plan", "--db", "x.db", env=env)
        assert (planned.exit_code, planned.stdout, planned.stderr) == (2, "", run.stderr)
        assert run.exit_code == 2 and run.stderr.startswith("Error: ") and len(run.stderr.splitlines()) == 1
    assert cli("run", "--plan", "--db", "x.db").stderr == (
        "Error: SENDER_EMAIL is not set: set it to the verified address you send from\n")
    assert json.loads(cli("run", "--plan", "--json", "--db", "x.db").stdout) == {
        "error": "SENDER_EMAIL is not set: set it to the verified address you send from"}
    assert nothing_claimed(fifteen)


MARKED = [("sarah.klein@example.com", "interview"), ("priya.nair@example.com", "replied"),
          ("emma.dubois@example.com", "rejected")]
SARAHS = ("stopped by a reply: sarah.klein@example.com at the same domain (example.com) has application status "
          "'interview' (STOP_COMPANY_ON_REPLY)")


@pytest.fixture
def marked(settings, db, clock):
    """The example CSV in campaign 'spring', three people at example.com marked by hand: the run
    mails the six at example.org and skips the fourteen at example.com (STOP_COMPANY_ON_REPLY)."""
    from email_automation import applications
    from email_automation.import_csv import import_csv

    from .cli_helpers import EXAMPLE

    import_csv(db, EXAMPLE, campaign="spring")
    for address, status in MARKED:
        applications.mark(db, address, status, now=clock(), campaign="spring")
    return {"DB_PATH": str(settings.db_path), "SENDER_EMAIL": "jane@example.com"}


def test_run_plan_names_everyone_a_reply_stops_in_the_words_of_the_run_that_skips_them(settings, db, clock, marked):
    """They were left out of the plan without a word: 6 to send, nobody held, 14 not mentioned."""
    import random

    from email_automation.run_daily import run_daily

    from .fakes import RecordingSleep, ScriptedTransport

    data = json.loads(cli("run", "--plan", "--json", env=marked).stdout)
    held = {h["email"]: h["reason"] for h in data["held"]}
    assert len(data["send"]) == 6 and len(held) == 14
    assert held["priya.nair@example.com"] == "stopped by a reply: application status is 'replied'"
    assert held["james.okafor@example.com"] == SARAHS
    lines = cli("run", "--plan", env=marked).stdout.splitlines()
    assert f"  held james.okafor@example.com (spring, step 1): {SARAHS}" in lines
    assert sum(line.startswith("  held ") for line in lines) == 14

    transport = ScriptedTransport()
    report = run_daily(settings, db, transport, now=clock, sleep=RecordingSleep(), rng=random.Random(1))
    assert transport.recipients == [p["email"] for p in data["send"]] and report.skipped == 14
    assert dict(db.execute("SELECT email, last_error FROM recipients WHERE status = 'skipped'").fetchall()) == held


def test_run_plan_holds_an_address_mailed_in_another_campaign(settings, db, clock):
    db.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at)"
               " SELECT 'second', subject_template, html_template, 'x' FROM campaigns")
    db.execute("INSERT INTO recipients (campaign_id, email, status, sent_at, created_at)"
               " VALUES (1, 'ann@acme.example', 'sent', '2026-11-20T09:00:00.000000Z', 'x')")
    db.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (2, 'ann@acme.example', 'x')")
    lines = cli("run", "--plan", "--db", str(settings.db_path), env={"SENDER_EMAIL": "jane@example.com"}).stdout
    assert "  held ann@acme.example (second, step 1): already contacted in campaign 'default'" in lines.splitlines()
