"""`doctor`: every check against real local stand-ins (moto server, aiosmtpd), plus SES answers
moto cannot give (pending identity, sandbox, paused account) from botocore's Stubber."""

from __future__ import annotations

import os
import textwrap
import urllib.request

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from aiosmtpd.smtp import AuthResult
from typer.testing import CliRunner

from email_automation import doctor
from email_automation.cli import app
from email_automation.doctor import FAIL, OK, WARN, Check
from email_automation.transports.ses import make_ses_client
from tests.smtp_sink import SmtpSink

runner = CliRunner()


@pytest.fixture
def ses(moto_url):
    """A fresh moto SES behind the loopback server; returns a client on it."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10)
    return boto3.client("sesv2", region_name="us-east-1", endpoint_url=moto_url)


@pytest.fixture
def live(settings, db):
    """Settings of a real (not dry) run with an initialised database, one send a second."""
    return settings.model_copy(update={"delay_seconds": 1.0})


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


# --- SES through the moto server ---------------------------------------------------------------


def test_a_verified_sender_passes_and_missing_get_account_is_only_a_warning(live, ses):
    ses.create_email_identity(EmailIdentity="jane@example.com")
    checks = by_name(doctor.run_checks(live, ses_client=ses))
    assert checks["SES sender identity"] == Check("SES sender identity", OK, "jane@example.com is verified in us-east-1")
    # moto has no GetAccount: the server answers a bare HTTP 404.
    assert checks["SES account"].status == WARN
    assert "unavailable (skipped)" in checks["SES account"].detail
    assert checks["AWS credentials"].status == OK
    assert checks["database"] == Check("database", OK, f"{live.db_path} is writable")
    assert all(c.status != doctor.FAIL for c in checks.values())


def test_a_verified_domain_covers_the_address(live, ses):
    ses.create_email_identity(EmailIdentity="example.com")
    check = doctor.check_identity(live, ses)
    assert (check.status, check.detail) == (OK, "example.com is verified in us-east-1")


def test_an_unverified_sender_fails_with_a_hint(live, ses):
    ses.create_email_identity(EmailIdentity="someone@else.example")
    check = doctor.check_identity(live, ses)
    assert check.status == FAIL
    assert check.detail == ("jane@example.com is not verified in us-east-1 "
                            "(jane@example.com: not an identity; example.com: not an identity)")
    assert check.hint.startswith("verify the domain example.com (with DKIM")


def test_the_command_exits_1_on_an_unverified_sender(live, ses, moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    env = {"DRY_RUN": "false", "SENDER_EMAIL": "jane@example.com", "AWS_REGION": "us-east-1"}
    result = runner.invoke(app, ["doctor", "--db", str(live.db_path)], env=env, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    failing = [i for i, line in enumerate(lines) if line.startswith("FAIL  SES sender identity")]
    assert failing, result.stdout
    assert lines[failing[0] + 1].lstrip().startswith("fix: verify the domain example.com")
    # No GetAccount in moto; no UNSUBSCRIBE_URL; no DMARC; a new sender without WARMUP_SCHEDULE.
    assert lines[-1] == "1 check(s) failed, 4 warning(s)."


def test_the_command_passes_once_the_sender_is_verified(live, ses, moto_url, monkeypatch, dns_zone):
    ses.create_email_identity(EmailIdentity="jane@example.com")
    dns_zone.txt["_dmarc.example.com"] = ["v=DMARC1; p=none"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    env = {"DRY_RUN": "false", "SENDER_EMAIL": "jane@example.com", "AWS_REGION": "us-east-1",
           "REPLY_TO": "replies@example.com", "UNSUBSCRIBE_URL": "https://example.com/u?e={email}",
           "WARMUP_SCHEDULE": "20,40,60"}
    result = runner.invoke(app, ["doctor", "--db", str(live.db_path)], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout == textwrap.dedent(f"""\
        OK    configuration        TRANSPORT=ses, DRY_RUN=false, DAILY_LIMIT=80; SENDER_EMAIL=jane@example.com
        OK    unsubscribe          one-click (RFC 8058) to example.com, and mailto: replies@example.com; the endpoint must unsubscribe on a POST, without a login
        OK    database             {live.db_path} is writable
        OK    warm-up              warm-up day 1 of 3 (WARMUP_SCHEDULE): at most 20 today instead of DAILY_LIMIT 80
        OK    AWS credentials      found (env); on EC2 prefer an instance role to keys on disk
        OK    SES sender identity  jane@example.com is verified in us-east-1
        WARN  SES account          account status unavailable (skipped): this endpoint has no GetAccount
        WARN  DKIM                 DKIM of example.com is NOT_STARTED, signing off
                                   fix: SES console > Identities > example.com > Authentication: publish the three DKIM CNAME records
        WARN  MAIL FROM            no custom MAIL FROM domain: SPF passes for amazonses.com, not for example.com, so DMARC rests on DKIM alone
                                   fix: SES console > Identities > example.com > Custom MAIL FROM domain (e.g. bounce.example.com), then its MX and SPF records
        OK    DMARC                _dmarc.example.com: v=DMARC1; p=none
        No failures, 3 warning(s).
        """)


def test_in_process_moto_raises_not_implemented_which_is_also_a_warning(live):
    with mock_aws():
        check = doctor.check_account(live, boto3.client("sesv2", region_name="us-east-1"))
    assert check.status == WARN and "unavailable (skipped)" in check.detail


# --- SES answers moto cannot give --------------------------------------------------------------


@pytest.fixture
def stubbed(live):
    client = make_ses_client(live)
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def account(production=True, enabled=True, max_day=50_000.0, rate=14.0, sent=12.0, enforcement="HEALTHY"):
    return {"ProductionAccessEnabled": production, "SendingEnabled": enabled, "EnforcementStatus": enforcement,
            "SendQuota": {"Max24HourSend": max_day, "MaxSendRate": rate, "SentLast24Hours": sent}}


def test_a_pending_identity_is_not_verified(live, stubbed):
    client, stub = stubbed
    pending = {"IdentityType": "EMAIL_ADDRESS", "VerifiedForSendingStatus": False, "VerificationStatus": "PENDING"}
    stub.add_response("get_email_identity", pending, {"EmailIdentity": "jane@example.com"})
    stub.add_client_error("get_email_identity", "NotFoundException", http_status_code=404,
                          expected_params={"EmailIdentity": "example.com"})
    check = doctor.check_identity(live, client)
    assert check.status == FAIL
    assert "(jane@example.com: PENDING; example.com: not an identity)" in check.detail


def test_verified_for_sending_alone_is_enough(live, stubbed):
    client, stub = stubbed
    stub.add_response("get_email_identity", {"VerifiedForSendingStatus": True}, {"EmailIdentity": "jane@example.com"})
    assert doctor.check_identity(live, client).status == OK


def test_a_denied_identity_lookup_names_the_permission(live, stubbed):
    client, stub = stubbed
    stub.add_client_error("get_email_identity", "AccessDeniedException", "not authorized", http_status_code=403)
    check = doctor.check_identity(live, client)
    assert (check.status, check.detail) == (FAIL, "ses:GetEmailIdentity denied: not authorized")
    assert "deploy/iam-policy.json" in check.hint


def test_production_account_with_room_is_ok(live, stubbed):
    client, stub = stubbed
    stub.add_response("get_account", account())
    check = doctor.check_account(live, client)
    assert check == Check("SES account", OK, "production access, sending enabled, "
                          "quota 50000/24h (12 sent in the last 24h), 14/s")


def test_the_sandbox_and_a_limit_above_quota_are_warnings(live, stubbed):
    client, stub = stubbed
    stub.add_response("get_account", account(production=False, max_day=50.0, rate=1.0))
    check = doctor.check_account(live.model_copy(update={"delay_seconds": 0.5}), client)
    assert check.status == WARN
    assert check.detail == ("in the SES sandbox: only verified recipients, 200/24h, 1/s; "
                            "DAILY_LIMIT 80 is above the quota 50/24h; DELAY_SECONDS 0.5 is faster than 1/s; "
                            "quota 50/24h (12 sent in the last 24h), 1/s")
    assert "request production access" in check.hint and "DAILY_LIMIT to at most 50" in check.hint


def test_disabled_sending_fails(live, stubbed):
    client, stub = stubbed
    stub.add_response("get_account", account(enabled=False, enforcement="SHUTDOWN"))
    assert doctor.check_account(live, client).status == FAIL


# --- credentials, configuration, database ------------------------------------------------------


def test_no_credentials_fails_and_skips_the_ses_calls(live, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookup off EC2
    checks = doctor.check_ses(live, client=object())  # any SES call on this would raise
    assert [(c.name, c.status) for c in checks] == [("AWS credentials", FAIL)]
    assert "instance role" in checks[0].hint


def test_no_region_anywhere_fails_with_the_variable_to_set(live, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    checks = doctor.check_ses(live.model_copy(update={"aws_region": ""}))
    assert [(c.name, c.status) for c in checks] == [("AWS credentials", OK), ("AWS region", FAIL)]
    assert checks[1].detail.startswith("no AWS region configured: set AWS_REGION")


def test_dry_run_turns_transport_failures_into_warnings(settings, db, ses):
    checks = doctor.run_checks(settings.model_copy(update={"dry_run": True}), ses_client=ses)
    identity = by_name(checks)["SES sender identity"]
    assert identity.status == WARN and identity.detail.endswith("(DRY_RUN is on, so runs do not need this yet)")
    assert all(c.status != doctor.FAIL for c in checks)


def test_configuration_errors_and_missing_sender(settings, monkeypatch):
    monkeypatch.setenv("DAILY_LIMIT", "abc")
    _, checks = doctor.diagnose()
    assert checks == [Check("configuration", FAIL, "invalid setting DAILY_LIMIT=abc: expected a whole number from 0 to 100000",
                            "fix the variable in env.sh (or .env) and run doctor again")]
    [sender] = doctor.check_settings(settings.model_copy(update={"sender_email": ""}))
    assert sender.status == FAIL and sender.detail.endswith("SENDER_EMAIL is not set")
    # Dry runs and previews build the From header too, so a missing sender fails them as well.
    [sender] = doctor.check_settings(settings.model_copy(update={"sender_email": "", "dry_run": True}))
    assert sender.status == FAIL and sender.detail.endswith("SENDER_EMAIL is not set")
    [sender] = doctor.check_settings(settings.model_copy(update={"sender_email": "jane@localhost", "dry_run": True}))
    assert sender.status == WARN


def test_the_command_fails_a_sender_email_that_run_refuses(tmp_path):
    # `run` and `preview` stop on it, dry runs too: doctor must not pass it as a warning.
    result = runner.invoke(app, ["doctor", "--db", str(tmp_path / "x.db")], env={"SENDER_EMAIL": "bad"},
                           catch_exceptions=False)
    assert result.exit_code == 1
    assert " ".join(result.stdout.splitlines()[0].split()) == (
        "FAIL configuration TRANSPORT=ses, DRY_RUN=true, DAILY_LIMIT=80; invalid setting SENDER_EMAIL=bad: is not an email address")


def test_the_command_fails_a_reply_to_that_run_refuses(tmp_path):
    result = runner.invoke(app, ["doctor", "--db", str(tmp_path / "x.db")],
                           env={"SENDER_EMAIL": "jane@example.com", "REPLY_TO": "x"}, catch_exceptions=False)
    assert result.exit_code == 1
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "FAIL reply-to invalid setting REPLY_TO=x: is not an email address" in lines


def test_a_sender_name_that_run_refuses_fails(settings):
    # Settings built in code skip load_settings' validation; the doctor still judges them.
    checks = by_name(doctor.check_settings(settings.model_copy(update={"sender_name": "Jane\rBcc: x", "dry_run": True})))
    assert (checks["sender name"].status, checks["sender name"].detail) == (
        FAIL, "invalid setting SENDER_NAME=Jane\\rBcc: x: has a control character U+000D at position 5")


@pytest.mark.parametrize("kind", ["database file", "folder"])
def test_a_log_file_that_run_refuses_fails(settings, db, tmp_path, kind):
    log_file = settings.db_path if kind == "database file" else tmp_path
    check = doctor.check_log_file(log_file)
    assert (check.status, check.detail) == (FAIL, f"invalid setting LOG_FILE={log_file}: it is a {kind}; name "
                                            + ("another file" if kind == "database file" else "a file in it"))


def test_no_database_yet_is_a_warning_with_the_command_to_run(tmp_path):
    check = doctor.check_database(tmp_path / "new.db")
    assert check == Check("database", WARN, f"{tmp_path / 'new.db'}: no database yet (its folder is writable)",
                          "run `email-automation init` in this folder")
    assert not (tmp_path / "new.db").exists()  # the check never creates it


def test_a_database_that_is_not_sqlite_fails(tmp_path):
    (tmp_path / "junk.db").write_text("this is not a database " * 100)
    check = doctor.check_database(tmp_path / "junk.db")
    assert check.status == FAIL and "cannot write" in check.detail


def test_a_database_held_locked_fails(db, settings, monkeypatch):
    monkeypatch.setattr(doctor, "LOCK_WAIT_SECONDS", 0.05)
    db.execute("BEGIN IMMEDIATE")  # another program holding the write lock
    try:
        check = doctor.check_database(settings.db_path)
    finally:
        db.execute("ROLLBACK")
    assert (check.status, check.detail) == (FAIL, f"{settings.db_path}: cannot write: database is locked")
    assert doctor.check_database(settings.db_path).status == OK


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_fails(db, settings, tmp_path):
    tmp_path.chmod(0o555)
    try:
        assert doctor.check_database(settings.db_path).status == FAIL
    finally:
        tmp_path.chmod(0o755)


# --- SMTP login against aiosmtpd ---------------------------------------------------------------


class AuthSink(SmtpSink):
    """SmtpSink whose refused logins are answered with 535.

    aiosmtpd's AuthResult(success=False) defaults to handled=True, meaning "the reply was already
    sent": nothing is sent and the client waits for its time-out instead of getting 535.
    """

    def _authenticate(self, *args):
        return AuthResult(success=super()._authenticate(*args).success, handled=False)



@pytest.fixture
def smtp_settings(settings):
    def make(port: int, password: str = "s3cret", starttls: bool = False):
        return settings.model_copy(update={
            "transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": starttls,
            "smtp_username": "jane", "smtp_password": type(settings.smtp_password)(password),
            "send_timeout_seconds": 5,
        })
    return make


def test_smtp_login_ok_and_refused(smtp_settings):
    with AuthSink(auth={"jane": "s3cret"}) as sink:
        good = doctor.check_smtp(smtp_settings(sink.port))
        bad = doctor.check_smtp(smtp_settings(sink.port, password="wrong"))
    assert good == Check("SMTP login", OK, f"logged in to 127.0.0.1:{sink.port} as jane")
    assert bad.status == FAIL
    assert bad.detail.startswith(f"127.0.0.1:{sink.port} refused the login of jane: 535")
    assert bad.hint.startswith("check SMTP_USERNAME and SMTP_PASSWORD")
    assert sink.auth_failures >= 1 and sink.deliveries == []


def test_smtp_without_starttls_on_offer_fails(smtp_settings):
    with AuthSink(auth={"jane": "s3cret"}) as sink:
        check = doctor.check_smtp(smtp_settings(sink.port, starttls=True))
    assert (check.status, check.detail) == (FAIL, f"127.0.0.1:{sink.port} does not offer STARTTLS")


def test_smtp_nothing_listening_fails(smtp_settings):
    with SmtpSink() as sink:
        port = sink.port  # free again once the sink stops
    check = doctor.check_smtp(smtp_settings(port))
    assert check.status == FAIL and check.detail.startswith(f"cannot connect to 127.0.0.1:{port}")


def test_run_checks_uses_smtp_when_transport_is_smtp(smtp_settings, db):
    with AuthSink(auth={"jane": "s3cret"}) as sink:
        checks = doctor.run_checks(smtp_settings(sink.port, password="wrong"))
    assert [c.name for c in checks] == ["configuration", "unsubscribe", "database", "warm-up", "SMTP login", "DMARC", "SPF"]
    assert any(c.status == doctor.FAIL for c in checks)


# --- the SES events queue --------------------------------------------------------------------------

def test_events_queue_readable_with_a_configuration_set_is_ok(live, moto_url):
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_url)
    url = sqs.create_queue(QueueName="doctor-events")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    settings = live.model_copy(update={"ses_events_queue_url": url, "ses_configuration_set": "outreach"})
    assert doctor.check_events_queue(settings, client=sqs) == Check("SES events queue", OK, "readable, 1 event message(s) waiting")
    no_set = doctor.check_events_queue(settings.model_copy(update={"ses_configuration_set": ""}), client=sqs)
    assert no_set.status == WARN and "SES_CONFIGURATION_SET is empty" in no_set.detail


def test_a_missing_events_queue_fails_with_a_hint(live, moto_url):
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_url)
    settings = live.model_copy(update={"ses_events_queue_url": f"{moto_url}/123456789012/no-such-queue"})
    check = doctor.check_events_queue(settings, client=sqs)
    assert check.status == FAIL
    assert "NonExistentQueue" in check.detail or "QueueDoesNotExist" in check.detail


# --- unsubscribe --------------------------------------------------------------------------------


def test_no_unsubscribe_url_is_a_warning_naming_the_mailto_address(settings):
    check = doctor.check_unsubscribe(settings)
    assert check.status == WARN
    assert check.detail.startswith("no UNSUBSCRIBE_URL: only a mailto: unsubscribe to jane@example.com")
    assert "https://" in check.hint and "{email}" in check.hint


@pytest.mark.parametrize(("url", "detail"), [
    ("http://example.com/u?e={email}", "UNSUBSCRIBE_URL must be an https:// URL (one-click unsubscribe, RFC 8058, needs HTTPS)"),
    ("https://example.com/unsubscribe", "UNSUBSCRIBE_URL must contain {email}, so that each recipient gets their own link"),
])
def test_an_unusable_unsubscribe_url_fails(settings, url, detail):
    # Settings built in code skip load_settings' validation; the doctor still judges them.
    checks = by_name(doctor.run_checks(settings.model_copy(update={"unsubscribe_url": url, "transport": "smtp",
                                                                    "dry_run": True})))
    assert (checks["unsubscribe"].status, checks["unsubscribe"].detail) == (FAIL, detail)


def test_the_command_names_an_http_unsubscribe_url_and_exits_1(tmp_path):
    env = {"SENDER_EMAIL": "jane@example.com", "UNSUBSCRIBE_URL": "http://example.com/u?e={email}"}
    result = runner.invoke(app, ["doctor", "--db", str(tmp_path / "x.db")], env=env, catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == ("FAIL  configuration  invalid setting UNSUBSCRIBE_URL=http://example.com/u?e={email}: "
                                             "must be an https:// URL (one-click unsubscribe, RFC 8058, needs HTTPS)")
