"""`email-automation doctor`: is this install ready to send? Each check says OK, WARN or FAIL and how to fix it.

Run it on the server after every change to env.sh, the IAM role or DNS: it makes no send and
writes nothing (the database write test is rolled back).
"""

from __future__ import annotations

import os
import smtplib
import sqlite3
import ssl
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from email_validator import EmailNotValidError, validate_email

from . import unsubscribe
from .config import Settings, load_settings
from .database import connect, folder_problem
from .errors import ConfigError
from .transports.aws import error_message, one_line

OK, WARN, FAIL = "OK", "WARN", "FAIL"

IAM_POLICY = "deploy/iam-policy.json"
SES_CONSOLE_HINT = "SES console > Configuration > Identities > Create identity"
# Codes meaning "this endpoint has no such operation": moto has no GetAccount (a bare HTTP 404).
_UNAVAILABLE = {"404", "501", "NotImplemented", "NotImplementedException", "UnknownOperationException",
                "InvalidAction"}
# How long the database check waits for a run's write transaction (each one is short).
LOCK_WAIT_SECONDS = 5.0
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: str
    detail: str
    hint: str = ""


def diagnose(**overrides: Any) -> tuple[Settings | None, list[Check]]:
    """Load the settings (a ConfigError becomes a FAIL) and run every check that then makes sense."""
    try:
        settings = load_settings(**overrides)
    except ConfigError as err:
        return None, [Check("configuration", FAIL, str(err), "fix the variable in env.sh (or .env) and run doctor again")]
    return settings, run_checks(settings)


def run_checks(
    settings: Settings,
    *,
    ses_client: Any = None,
    smtp_factory: Callable[..., smtplib.SMTP] | None = None,
    sqs_client: Any = None,
    resolver: Any = None,
) -> list[Check]:
    """Every check for `settings`; nothing is sent and nothing is written.

    With DRY_RUN on, a transport that is not ready is a WARN: dry runs do not use it.
    """
    checks = [*check_settings(settings), check_unsubscribe(settings), check_database(settings.db_path)]
    checks += [c for c in (check_warmup(settings),) if c is not None]
    if settings.log_file:
        checks.append(check_log_file(settings.log_file))
    if settings.transport == "ses":
        transport_checks = check_ses(settings, client=ses_client)
        if settings.ses_events_queue_url:
            transport_checks.append(check_events_queue(settings, client=sqs_client))
    else:
        transport_checks = [check_smtp(settings, smtp_factory=smtp_factory)]
    transport_checks += check_deliverability(settings, ses_client=ses_client, resolver=resolver)
    if settings.dry_run:
        transport_checks = [_as_dry_run(c) for c in transport_checks]
    if settings.imap_host:
        transport_checks.append(check_inbox(settings))
    return checks + transport_checks


def check_inbox(settings: Settings) -> Check:
    """Log in to IMAP_HOST and open IMAP_FOLDER read-only, as every run does before it sends."""
    from . import inbox

    try:
        return Check("inbox (IMAP)", OK, inbox.check(settings))
    except ConfigError as err:
        return Check("inbox (IMAP)", FAIL, str(err), "set IMAP_USERNAME and IMAP_PASSWORD in env.sh")
    except inbox.InboxError as err:
        return Check("inbox (IMAP)", FAIL, str(err),
                     "check IMAP_HOST, IMAP_PORT (993 with IMAP_SSL, 143 with IMAP_STARTTLS) and the password; "
                     "Gmail and Outlook need an app password with IMAP enabled")


def check_deliverability(settings: Settings, *, ses_client: Any = None, resolver: Any = None) -> list[Check]:
    """DKIM, MAIL FROM, DMARC and SPF of the sender's domain, and the SES contact list if one is set."""
    from .sender_auth import check_contact_list, check_sender_auth

    client = ses_client
    if settings.transport == "ses" and client is None:
        from .transports.ses import make_ses_client

        try:
            client = make_ses_client(settings)
        except ConfigError:
            return []  # the region check above says so
    if client is not None:
        client = _bounded(client, settings)
    checks = check_sender_auth(settings, client=client, resolver=resolver)
    if settings.transport == "ses" and settings.ses_contact_list and client is not None:
        checks.append(check_contact_list(settings, client))
    return checks


def _as_dry_run(check: Check) -> Check:
    if check.status != FAIL:
        return check
    return replace(check, status=WARN, detail=f"{check.detail} (DRY_RUN is on, so runs do not need this yet)")


# --- configuration -----------------------------------------------------------------------------


def check_settings(settings: Settings) -> list[Check]:
    """SENDER_EMAIL (required to send), SENDER_NAME, REPLY_TO, REPORT_EMAIL, and a summary of the mode.

    What `run` and `preview` refuse (dry runs too: they build every header) is a FAIL; an address
    that only email-validator doubts (`jane@localhost`) is a WARN while DRY_RUN is on.
    """
    from .messages import sender_problems

    mode = f"TRANSPORT={settings.transport}, DRY_RUN={str(settings.dry_run).lower()}, DAILY_LIMIT={settings.daily_limit}"
    hint = "set SENDER_EMAIL in env.sh to the address you send from (verified in SES)"
    refused = sender_problems(settings)
    problem = _address_problem(settings.sender_email)
    if not settings.sender_email:
        checks = [Check("configuration", FAIL, f"{mode}; SENDER_EMAIL {problem}", hint)]
    elif "SENDER_EMAIL" in refused:
        checks = [Check("configuration", FAIL, f"{mode}; {refused['SENDER_EMAIL']}", hint)]
    elif problem:
        checks = [Check("configuration", WARN if settings.dry_run else FAIL, f"{mode}; SENDER_EMAIL {problem}", hint)]
    else:
        checks = [Check("configuration", OK, f"{mode}; SENDER_EMAIL={settings.sender_email}")]
    if "SENDER_NAME" in refused:
        checks.append(Check("sender name", FAIL, refused["SENDER_NAME"],
                            "write SENDER_NAME on one line in env.sh, without control characters"))
    if "REPLY_TO" in refused:
        checks.append(Check("reply-to", FAIL, refused["REPLY_TO"], "set REPLY_TO to an email address, or leave it empty"))
    if settings.report_email:
        problem = _address_problem(settings.report_email)
        if problem:
            checks.append(Check("report email", WARN, f"REPORT_EMAIL {problem}; no run summary will be sent",
                                "set REPORT_EMAIL to your own address, or leave it empty"))
    return checks


def check_unsubscribe(settings: Settings) -> Check:
    """How recipients unsubscribe: RFC 8058 one-click to UNSUBSCRIBE_URL, and mailto: REPLY_TO or SENDER_EMAIL."""
    name = "unsubscribe"
    mailto = settings.reply_to or settings.sender_email or "(no SENDER_EMAIL)"
    problem = unsubscribe.url_problem(settings.unsubscribe_url)
    if problem:
        return Check(name, FAIL, f"UNSUBSCRIBE_URL {problem}",
                     "set UNSUBSCRIBE_URL to an https:// endpoint containing {email}, or leave it empty")
    if not settings.unsubscribe_url:
        return Check(name, WARN, f"no UNSUBSCRIBE_URL: only a mailto: unsubscribe to {mailto} and a "
                     "'Reply \"unsubscribe\"' line; Gmail and Yahoo require one-click unsubscribe "
                     "(RFC 8058) from bulk senders",
                     "set UNSUBSCRIBE_URL to an https:// endpoint containing {email} that unsubscribes on POST")
    host = urlsplit(settings.unsubscribe_url).hostname
    return Check(name, OK, f"one-click (RFC 8058) to {host}, and mailto: {mailto}; "
                 "the endpoint must unsubscribe on a POST, without a login")


def _address_problem(address: str) -> str | None:
    if not address:
        return "is not set"
    try:
        validate_email(address, check_deliverability=False, allow_smtputf8=False, test_environment=True)
    except EmailNotValidError as err:
        return f"{address!r} is not a valid address ({err})"
    return None


# --- local files -------------------------------------------------------------------------------


def check_database(db_path: Path) -> Check:
    """The database can take the write lock (BEGIN IMMEDIATE, rolled back), or can be created."""
    path = Path(db_path)
    folder = path.absolute().parent
    if path.is_dir():
        return Check("database", FAIL, folder_problem(path), "set DB_PATH (or --db) to the database file")
    if not path.exists():
        if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
            return Check("database", WARN, f"{path}: no database yet (its folder is writable)",
                         "run `email-automation init` in this folder")
        return Check("database", FAIL, f"{path}: no database, and {folder} is not a writable folder",
                     "create the folder, or set DB_PATH to a file in a folder this user can write")
    if not os.access(folder, os.W_OK | os.X_OK):
        # WAL mode creates DB-wal and DB-shm beside the database.
        return Check("database", FAIL, f"{folder}: folder not writable; SQLite needs it for {path.name}-wal",
                     f"chown the folder to the user that runs cron (`sudo chown -R $USER {folder}`)")
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=LOCK_WAIT_SECONDS,
                               isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as err:
        return Check("database", FAIL, f"{path}: cannot write: {err}",
                     "check the file's owner and permissions, and that no other program holds it locked")
    try:
        connect(path, readonly=True).close()
    except ConfigError as err:
        return Check("database", FAIL, str(err), "restore the database from a backup, or set DB_PATH to the right file")
    return Check("database", OK, f"{path} is writable")


def check_warmup(settings: Settings) -> Check | None:
    """A new sender (few sending days in the database) should ramp up: suggest WARMUP_SCHEDULE."""
    from .database import connect, utc_now
    from .ledger import batch_date
    from .warmup import DOCTOR_NEW_SENDER_DAYS, limit_for, sending_days_before, suggested_ramp

    if not Path(settings.db_path).is_file():
        return None
    try:
        conn = connect(settings.db_path, readonly=True)
        try:
            day = batch_date(utc_now(), settings.tz)
            days = sending_days_before(conn, day)
            today = limit_for(conn, settings.daily_limit, settings.warmup_schedule, day)
        finally:
            conn.close()
    except (sqlite3.Error, ConfigError):
        return None  # the database check says what is wrong
    if today.note:
        return Check("warm-up", OK, today.note)
    ramp = suggested_ramp(settings.daily_limit)
    if days >= DOCTOR_NEW_SENDER_DAYS or settings.warmup_schedule or not ramp:
        return None
    return Check("warm-up", WARN, f"{days} sending day(s) before today and DAILY_LIMIT={settings.daily_limit} from the "
                 "first day: a new domain sending its full volume at once looks like a spammer",
                 f"ramp up over the first days with WARMUP_SCHEDULE={ramp}")


def check_log_file(log_file: Path) -> Check:
    """LOG_FILE can be appended to; a folder or a database file there stops `run` before it starts."""
    from .user_files import is_database_file

    path = Path(log_file).expanduser()
    if is_database_file(path):
        return Check("log file", FAIL, f"invalid setting LOG_FILE={log_file}: it is a database file; name another file",
                     "set LOG_FILE to a new file, e.g. email-automation.log")
    if path.is_dir():
        return Check("log file", FAIL, f"invalid setting LOG_FILE={log_file}: it is a folder; name a file in it",
                     f"set LOG_FILE to a file, e.g. {path / 'email-automation.log'}")
    target = path if path.exists() else path.absolute().parent
    if os.access(target, os.W_OK):
        return Check("log file", OK, f"{path} is writable")
    return Check("log file", FAIL, f"{path}: cannot write it",
                 "set LOG_FILE to a path this user can write, or create its folder")


# --- Amazon SES --------------------------------------------------------------------------------


def check_ses(settings: Settings, *, client: Any = None) -> list[Check]:
    """Credentials, then (when they resolve) the sender identity and the account's status."""
    credentials = check_credentials(settings)
    if credentials.status == FAIL:
        return [credentials]
    if client is None:
        from .transports.ses import make_ses_client

        try:
            client = make_ses_client(settings)
        except ConfigError as err:
            return [credentials, Check("AWS region", FAIL, str(err), "set AWS_REGION in env.sh")]
    client = _bounded(client, settings)
    return [credentials, check_identity(settings, client), check_account(settings, client)]


def _bounded(client: Any, settings: Settings) -> Any:
    """Each AWS call within SEND_TIMEOUT_SECONDS: an endpoint that drips its answer cannot hang doctor."""
    from .transports.aws import BoundedClient

    return BoundedClient(client, settings.send_timeout_seconds)


def check_events_queue(settings: Settings, *, client: Any = None) -> Check:
    """SES_EVENTS_QUEUE_URL can be read, and events can reach it at all (a configuration set)."""
    from .event_queue import check_queue_url, make_sqs_client

    name = "SES events queue"
    try:
        url = check_queue_url(settings.ses_events_queue_url)
        client = _bounded(client or make_sqs_client(settings, queue_url=url), settings)
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    except ConfigError as err:
        hint = ("set AWS_REGION in env.sh" if "AWS_REGION" in str(err)
                else "set SES_EVENTS_QUEUE_URL to the queue's URL (README, 'Bounces and complaints')")
        return Check(name, FAIL, str(err), hint)
    except ClientError as err:
        if _code(err) in _DENIED:
            return _ses_call_failed(name, "sqs:GetQueueAttributes", err)
        return Check(name, FAIL, f"SQS error {_code(err)}: {error_message(err)}",
                     "check SES_EVENTS_QUEUE_URL (copy it from the SQS console) and AWS_REGION")
    except BotoCoreError as err:
        return Check(name, FAIL, f"cannot reach SQS: {one_line(err)}", "check the network and AWS_REGION")
    waiting = attributes.get("Attributes", {}).get("ApproximateNumberOfMessages", "?")
    if not settings.ses_configuration_set:
        return Check(name, WARN, f"readable ({waiting} waiting), but SES_CONFIGURATION_SET is empty: "
                     "SES publishes events only through a configuration set",
                     "set SES_CONFIGURATION_SET to the set whose event destination is the queue's topic")
    return Check(name, OK, f"readable, {waiting} event message(s) waiting")


def check_credentials(settings: Settings) -> Check:
    """boto3's chain (env, profile, instance role) finds credentials; says which source."""
    hint = ("on EC2, attach an IAM instance role with the policy in deploy/iam-policy.json; "
            "on a laptop, `aws configure` or AWS_PROFILE")
    try:
        creds = boto3.session.Session(region_name=settings.aws_region or None).get_credentials()
    except BotoCoreError as err:
        return Check("AWS credentials", FAIL, f"cannot load AWS credentials: {err}", hint)
    if creds is None:
        return Check("AWS credentials", FAIL, "no AWS credentials found", hint)
    method = getattr(creds, "method", "") or "unknown source"
    detail = f"found ({method})"
    if method in {"env", "shared-credentials-file"}:
        detail += "; on EC2 prefer an instance role to keys on disk"
    return Check("AWS credentials", OK, detail)


def check_identity(settings: Settings, client: Any) -> Check:
    """SENDER_EMAIL, or its domain, is a verified SES identity in this region."""
    address = settings.sender_email
    region = client.meta.region_name
    if not address:
        return Check("SES sender identity", FAIL, "SENDER_EMAIL is not set", "set SENDER_EMAIL in env.sh")
    domain = address.rpartition("@")[2]
    seen = []
    for identity in (address, domain):
        try:
            info = client.get_email_identity(EmailIdentity=identity)
        except ClientError as err:
            code = _code(err)
            if code == "NotFoundException":
                seen.append(f"{identity}: not an identity")
                continue
            return _ses_call_failed("SES sender identity", "ses:GetEmailIdentity", err)
        except BotoCoreError as err:
            return _unreachable("SES sender identity", region, err)
        # moto reports VerifiedForSendingStatus=false for a verified identity: accept either field.
        if info.get("VerifiedForSendingStatus") or info.get("VerificationStatus") == "SUCCESS":
            return Check("SES sender identity", OK, f"{identity} is verified in {region}")
        seen.append(f"{identity}: {info.get('VerificationStatus', 'not verified')}")
    return Check(
        "SES sender identity", FAIL,
        f"{address} is not verified in {region} ({'; '.join(seen)})",
        f"verify the domain {domain} (with DKIM, best for deliverability) or the address: "
        f"{SES_CONSOLE_HINT}, in region {region}; or set AWS_REGION to where it is verified",
    )


def check_account(settings: Settings, client: Any) -> Check:
    """Sandbox or production, sending enabled, and the quota against DAILY_LIMIT and DELAY_SECONDS."""
    name = "SES account"
    try:
        account = client.get_account()
    except NotImplementedError:
        return Check(name, WARN, "account status unavailable (skipped): this endpoint has no GetAccount")
    except ClientError as err:
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if _code(err) in _UNAVAILABLE or status in (404, 501):
            return Check(name, WARN, "account status unavailable (skipped): this endpoint has no GetAccount")
        if _code(err) in _DENIED:
            return Check(name, WARN, "may not read the account status (ses:GetAccount denied)",
                         f"allow ses:GetAccount ({IAM_POLICY}) so doctor can check the sandbox and quota")
        return _ses_call_failed(name, "ses:GetAccount", err)
    except BotoCoreError as err:
        return _unreachable(name, client.meta.region_name, err)
    return _judge_account(settings, account)


def _judge_account(settings: Settings, account: dict) -> Check:
    name = "SES account"
    quota = account.get("SendQuota", {})
    max_day = quota.get("Max24HourSend", 0)
    rate = quota.get("MaxSendRate", 0)
    used = quota.get("SentLast24Hours", 0)
    shown_day = "unlimited" if max_day == -1 else f"{max_day:g}/24h"
    detail = f"quota {shown_day} ({used:g} sent in the last 24h), {rate:g}/s"
    if not account.get("SendingEnabled", True) or account.get("EnforcementStatus") == "SHUTDOWN":
        return Check(name, FAIL, f"sending is disabled for this account ({account.get('EnforcementStatus', '?')}); {detail}",
                     "open the SES console's reputation dashboard and re-enable sending")
    problems, hints = [], []
    if not account.get("ProductionAccessEnabled", False):
        problems.append("in the SES sandbox: only verified recipients, 200/24h, 1/s")
        hints.append("request production access (docs/deploy-ec2.md, 'Leaving the SES sandbox')")
    if account.get("EnforcementStatus") == "PROBATION":
        problems.append("account on PROBATION (bounce or complaint rate too high)")
        hints.append("clean the list, suppress bounces, and lower DAILY_LIMIT")
    if max_day != -1 and settings.daily_limit > max_day:
        problems.append(f"DAILY_LIMIT {settings.daily_limit} is above the quota {max_day:g}/24h")
        hints.append(f"set DAILY_LIMIT to at most {max_day:g}")
    if rate and settings.delay_seconds < 1 / rate:
        problems.append(f"DELAY_SECONDS {settings.delay_seconds:g} is faster than {rate:g}/s")
        hints.append(f"set DELAY_SECONDS to at least {1 / rate:g}")
    if problems:
        return Check(name, WARN, f"{'; '.join(problems)}; {detail}", "; ".join(hints))
    return Check(name, OK, f"production access, sending enabled, {detail}")


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _ses_call_failed(name: str, action: str, err: ClientError) -> Check:
    message = error_message(err)
    if _code(err) in _DENIED:
        return Check(name, FAIL, f"{action} denied: {message}", f"allow {action} in the role's policy ({IAM_POLICY})")
    return Check(name, FAIL, f"SES error {_code(err)}: {message}",
                 "check AWS_REGION and the credentials (they may be expired or for another account)")


def _unreachable(name: str, region: str, err: Exception) -> Check:
    return Check(name, FAIL, f"cannot reach SES in {region}: {one_line(err)}",
                 "check AWS_REGION and that the instance can reach the internet (security group, NAT)")


# --- SMTP --------------------------------------------------------------------------------------


def check_smtp(settings: Settings, *, smtp_factory: Callable[..., smtplib.SMTP] | None = None) -> Check:
    """Connect, STARTTLS or SSL, log in and quit, as a run would (nothing is sent).

    `smtp_factory(timeout=...)` makes the unconnected client, as for SmtpTransport; the whole
    exchange gets SEND_TIMEOUT_SECONDS, as one send does.
    """
    from .transports.smtp import connect, default_smtp_factory, watch

    name = "SMTP login"
    if not settings.smtp_host.strip():
        return Check(name, FAIL, "SMTP_HOST is not set", "set SMTP_HOST to your SMTP server, e.g. smtp.gmail.com")
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    factory = smtp_factory or default_smtp_factory(settings)
    tls_hint = "set SMTP_SSL=true for port 465, or SMTP_STARTTLS=false only for a trusted local relay"
    smtp = factory(timeout=settings.send_timeout_seconds)
    watchdog = watch(settings.send_timeout_seconds, lambda: smtp)
    try:
        with watchdog, connect(smtp, settings.smtp_host, settings.smtp_port):
            smtp.ehlo()
            if settings.smtp_starttls and not settings.smtp_ssl:
                if not smtp.has_extn("starttls"):
                    return Check(name, FAIL, f"{where} does not offer STARTTLS", tls_hint)
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if not settings.smtp_username:
                return Check(name, OK, f"connected to {where}; no SMTP_USERNAME, so no login")
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
    except smtplib.SMTPAuthenticationError as err:
        return Check(name, FAIL, f"{where} refused the login of {settings.smtp_username}: "
                     f"{err.smtp_code} {_text(err.smtp_error)}",
                     "check SMTP_USERNAME and SMTP_PASSWORD (for Gmail or Microsoft 365, an app password)")
    except smtplib.SMTPNotSupportedError as err:
        return Check(name, FAIL, f"{where} does not accept a login here: {err}", tls_hint)
    except (smtplib.SMTPException, OSError) as err:
        if watchdog.expired:  # cut at the deadline, or a socket timeout (never longer than the time left)
            return Check(name, FAIL, f"{where} did not complete the login exchange within SEND_TIMEOUT_SECONDS "
                         f"({settings.send_timeout_seconds:g} s)",
                         "check SMTP_HOST and SMTP_PORT point to an SMTP server; "
                         "raise SEND_TIMEOUT_SECONDS for a slow one")
        if isinstance(err, (smtplib.SMTPException, ssl.SSLError)):
            return Check(name, FAIL, f"{where}: {err}", "check SMTP_HOST, SMTP_PORT, SMTP_STARTTLS and SMTP_SSL")
        return Check(name, FAIL, f"cannot connect to {where}: {err}",
                     "check SMTP_HOST and SMTP_PORT, and that outbound traffic to that port is allowed "
                     "(EC2 blocks port 25)")
    return Check(name, OK, f"logged in to {where} as {settings.smtp_username}")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
