"""Settings: environment variables, then `.env` in the working directory, then defaults.

CLI flags are passed as overrides and win over everything. AWS credentials and region come from
boto3's own chain (env, profile, EC2 instance role); `AWS_REGION` is only read here so that a
region put in `.env` also reaches boto3 under cron's nearly empty environment.

Hand-written rather than pydantic(-settings), for start-up time: every command reads the settings,
and `from pydantic import BaseModel, Field` alone took 0.12 s of a 0.32 s `status` (a whole
`mailmerge --help` takes 0.17 s); the pydantic model made importing this module 0.19 s. Now
importing it and loading the settings takes about a third of that (CPU, a bare interpreter
subtracted: 0.07 s against 0.22 s, interleaved runs). `Settings` keeps the model's behaviour and
the parts of its API the code uses (`model_fields`, `model_copy(update=...)`, `model_dump()`);
setting_values.py holds pydantic's conversion rules, which a `.env` that worked relies on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError
from .headers import forbidden_character
from .schedule import parse_days, parse_hours
from .setting_values import (Invalid, Rule, SecretStr, blank_is_none, boolean, choice, number, optional_path, path,
                             secret, text, whole_number)
from .unsubscribe import url_problem

# Upper bounds: a value beyond them is a typo, and `inf` or 1e300 seconds would overflow
# time.sleep() after the first send. DAILY_LIMIT stays far above any SES sending quota.
MAX_DAILY_LIMIT = 100_000
MAX_DELAY_SECONDS = 3600.0
MAX_ATTEMPTS = 20
MAX_SEND_TIMEOUT_SECONDS = 600.0
MAX_SEND_CONCURRENCY = 32
MAX_SEND_RATE = 1000.0

ENV_FILE = ".env"

# What each setting accepts, for error messages and `email-automation config`.
ACCEPTS: dict[str, str] = {
    "db_path": "a file path",
    "dry_run": "true or false",
    "daily_limit": f"a whole number from 0 to {MAX_DAILY_LIMIT}",
    "delay_seconds": f"a number of seconds from 0 to {MAX_DELAY_SECONDS:g}",
    "delay_jitter_seconds": f"a number of seconds from 0 to {MAX_DELAY_SECONDS:g}",
    "max_attempts": f"a whole number from 1 to {MAX_ATTEMPTS}",
    "transport": "ses or smtp",
    "sender_email": "an email address",
    "sender_name": "any text",
    "reply_to": "an email address",
    "ses_configuration_set": "an SES configuration set name",
    "ses_events_queue_url": "an SQS queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/ses-events",
    "aws_region": "an AWS region such as us-east-1",
    "send_timeout_seconds": f"a number of seconds above 0, at most {MAX_SEND_TIMEOUT_SECONDS:g}",
    "smtp_host": "a host name",
    "smtp_port": "a port number 1-65535",
    "smtp_username": "any text",
    "smtp_password": "any text",
    "smtp_starttls": "true or false",
    "smtp_ssl": "true or false",
    "timezone": "an IANA time zone name such as Europe/Berlin",
    "outbox_dir": "a folder path",
    "unsubscribe_url": "an https:// URL containing {email}, which is replaced by the recipient's address",
    "physical_address": "your postal address, shown in the email footer",
    "dashboard_password": "any text",
    "log_file": "a file path",
    "report_email": "an email address",
    "imap_host": "the IMAP server's host name, e.g. imap.gmail.com (empty: the inbox is not read)",
    "imap_port": "a port number 1-65535 (993 with IMAP_SSL, 143 with IMAP_STARTTLS)",
    "imap_username": "the mailbox login, usually your address",
    "imap_password": "the mailbox password or app password",
    "imap_folder": "a folder name such as INBOX",
    "imap_ssl": "true or false (not both IMAP_SSL and IMAP_STARTTLS)",
    "imap_starttls": "true or false (not both IMAP_SSL and IMAP_STARTTLS)",
    "stop_company_on_reply": "true or false",
    "holidays": "dates written YYYY-MM-DD, separated by commas",
    "send_days": "days such as mon-fri or mon,wed,fri",
    "max_new_per_company_per_day": "a whole number >= 1",
    "max_contacts_per_company": "a whole number >= 1",
    "send_hours": "a range of hours such as 08:00-17:00 (00:00-24:00 for the whole day)",
    "bounce_pause_rate": "a rate such as 2% or 0.02 (more than 0, at most 100%)",
    "bounce_pause_min": "a whole number >= 1",
    "complaint_pause_rate": "a rate such as 0.05% or 0.0005 (more than 0, at most 100%)",
    "complaint_pause_min": "a whole number >= 1",
    "pause_window_days": "a whole number of days >= 1",
    "ses_suppression_check": "true or false",
    "ses_push_suppressions": "true or false",
    "unsubscribe_secret": "a random string of at least 16 characters (e.g. the output of `openssl rand -hex 32`)",
    "ses_contact_list": "the name of your SES contact list",
    "ses_topic": "a topic name of SES_CONTACT_LIST",
    "check_mx": "true or false",
    "warmup_schedule": "daily limits for the first sending days, whole numbers >= 1 separated by commas (e.g. 20,40,60,80)",
    "send_concurrency": f"a whole number from 1 to {MAX_SEND_CONCURRENCY}",
    "max_send_rate": f"messages per second from 0 (no limit of ours) to {MAX_SEND_RATE:g}",
    "send_one_cpu": "true or false",
    "attachments_dir": "a folder path (empty: the CSV's folder)",
    "max_message_bytes": "a whole number of bytes from 65536 to 41943040 (64 KiB to 40 MiB)",
}


def environment_values(env_file: str | Path = ENV_FILE) -> dict[str, str]:
    """The settings given outside the command line: environment variables over `.env`, by field name.

    Names are case-insensitive and unknown ones are ignored. Read here rather than by
    pydantic-settings, whose import (asyncio among others) cost `status` about 0.2 s of CPU per
    call; the precedence is the same: https://docs.pydantic.dev/latest/concepts/pydantic_settings/#field-value-priority
    """
    values = {k.lower(): v for k, v in _dotenv(env_file).items() if v is not None}
    values.update((k.lower(), v) for k, v in os.environ.items())
    return {k: v for k, v in values.items() if k in Settings.model_fields}


def _dotenv(env_file: str | Path) -> dict[str, str | None]:
    """The `.env` file's variables (python-dotenv's syntax: `export`, quotes, ${VAR}); {} without one."""
    if not Path(env_file).is_file():
        return {}
    from dotenv import dotenv_values

    return dotenv_values(env_file, encoding="utf-8")


def _rate(value: Any) -> float:
    """`2%` or `0.02`; a bare number above 1 is refused rather than guessed at."""
    if isinstance(value, str) and value.strip().endswith("%"):
        value = float(value.strip()[:-1]) / 100
    rate = float(value)
    if not 0 < rate <= 1:
        raise ValueError("rate out of range")
    return rate


def _lower_transport(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _steps(value: str) -> str:
    from .warmup import parse_steps

    parse_steps(value)  # ValueError: not whole numbers >= 1
    return value.strip()


def _long_secret(value: SecretStr) -> SecretStr:
    if value.get_secret_value() and len(value.get_secret_value()) < 16:
        raise ValueError("secret too short")
    return value


def _usable_unsubscribe_url(value: str) -> str:
    problem = url_problem(value.strip())
    if problem:
        raise Invalid(why=problem)
    return value.strip()


def _known_timezone(value: str) -> str:
    if value:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError("unknown time zone") from err
    return value


def _iso_dates(value: str) -> str:
    for item in _date_items(value):
        date.fromisoformat(item)  # ValueError: not a date written YYYY-MM-DD
    return value


def _days(value: str) -> str:
    parse_days(value)
    return value


def _hours(value: str) -> str:
    parse_hours(value)
    return value


def setting(default: Any, parse: Callable[[Any], Any], **rule: Any) -> Any:
    """A field of Settings: its default and its Rule (type, bounds, checks)."""
    return field(default=default, metadata={"rule": Rule(default, parse, **rule)})


@dataclass(init=False)
class Settings:
    """Every knob of the tool; field names map to upper-case environment variables.

    `Settings(**overrides)` reads the environment and `.env` itself (see `environment_values`):
    keyword arguments win, then the environment, then `.env`, then the defaults here. Every value,
    defaults too, goes through its field's Rule. An unknown keyword is ignored.

    Raises:
        ConfigError: one line naming each bad setting, its value and what it accepts.
    """

    model_fields: ClassVar[dict[str, Rule]]

    db_path: Path = setting(Path("email_automation.db"), path)
    dry_run: bool = setting(True, boolean)
    daily_limit: int = setting(80, whole_number, ge=0, le=MAX_DAILY_LIMIT)
    delay_seconds: float = setting(5.0, number, ge=0, le=MAX_DELAY_SECONDS)
    delay_jitter_seconds: float = setting(0.0, number, ge=0, le=MAX_DELAY_SECONDS)
    max_attempts: int = setting(3, whole_number, ge=1, le=MAX_ATTEMPTS)
    transport: Literal["ses", "smtp"] = setting("ses", choice("ses", "smtp"), prepare=_lower_transport)
    sender_email: str = setting("", text)
    sender_name: str = setting("", text)
    reply_to: str = setting("", text)
    ses_configuration_set: str = setting("", text)
    ses_events_queue_url: str = setting("", text)
    aws_region: str = setting("", text)
    send_timeout_seconds: float = setting(30.0, number, gt=0, le=MAX_SEND_TIMEOUT_SECONDS)
    smtp_host: str = setting("", text)  # no default: a real SMTP send must name its server (see _smtp_needs_a_host)
    smtp_port: int = setting(587, whole_number, ge=1, le=65535)
    smtp_username: str = setting("", text)
    smtp_password: SecretStr = setting(SecretStr(""), secret)
    smtp_starttls: bool = setting(True, boolean)
    smtp_ssl: bool = setting(False, boolean)
    timezone: str = setting("", text, checks=(_known_timezone,))
    outbox_dir: Path = setting(Path("outbox"), path)
    # Attachments (attachments.py): the folder an `attachments` CSV column is relative to (default:
    # the CSV's folder) and the largest message to build; SES v2 allows 40 MB
    # (https://docs.aws.amazon.com/ses/latest/dg/attachments.html).
    attachments_dir: Path | None = setting(None, optional_path, prepare=blank_is_none)
    max_message_bytes: int = setting(10 * 1024 * 1024, whole_number, ge=64 * 1024, le=40 * 1024 * 1024)
    unsubscribe_url: str = setting("", text, checks=(_usable_unsubscribe_url,))
    physical_address: str = setting("", text)
    dashboard_password: SecretStr = setting(SecretStr(""), secret)
    log_file: Path | None = setting(None, optional_path, prepare=blank_is_none)
    report_email: str = setting("", text)
    imap_host: str = setting("", text)
    imap_port: int = setting(993, whole_number, ge=1, le=65535)
    imap_username: str = setting("", text)
    imap_password: SecretStr = setting(SecretStr(""), secret)
    imap_folder: str = setting("INBOX", text, min_length=1)
    imap_ssl: bool = setting(True, boolean)
    imap_starttls: bool = setting(False, boolean)
    stop_company_on_reply: bool = setting(True, boolean)
    # Follow-up waits count business days: weekends and these dates (YYYY-MM-DD, comma-separated) are skipped.
    holidays: str = setting("", text, checks=(_iso_dates,))
    # A real run sends only inside this window, in TIMEZONE (schedule.py).
    send_days: str = setting("mon-fri", text, checks=(_days,))
    send_hours: str = setting("08:00-17:00", text, checks=(_hours,))
    # Per-company politeness (politeness.py): first messages to one company per day, people per campaign.
    max_new_per_company_per_day: int = setting(1, whole_number, ge=1)
    max_contacts_per_company: int = setting(3, whole_number, ge=1)
    # Circuit breaker (circuit_breaker.py): well below SES's own review rates of 5% and 0.1%.
    bounce_pause_rate: float = setting(0.02, _rate)
    bounce_pause_min: int = setting(3, whole_number, ge=1)
    complaint_pause_rate: float = setting(0.0005, _rate)
    complaint_pause_min: int = setting(1, whole_number, ge=1)
    pause_window_days: int = setting(7, whole_number, ge=1)
    # SES's account-level suppression list (ses_suppression.py).
    ses_suppression_check: bool = setting(True, boolean)
    ses_push_suppressions: bool = setting(False, boolean)
    # One-click unsubscribe without hosting (unsubscribe_tokens.py, transports/ses.py).
    unsubscribe_secret: SecretStr = setting(SecretStr(""), secret, checks=(_long_secret,))
    ses_contact_list: str = setting("", text)
    ses_topic: str = setting("", text)
    # Pre-flight: domains that cannot receive mail are rejected at import (mx_check.py).
    check_mx: bool = setting(False, boolean)
    # Daily caps for the first sending days of a new domain or identity (warmup.py).
    warmup_schedule: str = setting("", text, checks=(_steps,))
    # Sends in flight at once when DELAY_SECONDS is 0 (see concurrent_send.py), and their rate.
    send_concurrency: int = setting(1, whole_number, ge=1, le=MAX_SEND_CONCURRENCY)
    max_send_rate: float = setting(0.0, number, ge=0, le=MAX_SEND_RATE)
    # Concurrent sends keep the run's threads on one CPU (cpu_affinity.py).
    send_one_cpu: bool = setting(True, boolean)

    def __init__(self, **overrides: Any) -> None:
        self.__dict__.update(_validated({**environment_values(), **overrides}))

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Settings:
        """A copy with `update` taken as given, unchecked (as pydantic's model_copy: tests and
        run_gates pass values of the right type)."""
        copy = object.__new__(Settings)
        copy.__dict__.update(self.__dict__, **(update or {}))
        return copy

    def model_dump(self) -> dict[str, Any]:
        """Every setting's value by field name (secrets stay SecretStr)."""
        return {name: getattr(self, name) for name in self.model_fields}

    @property
    def send_window(self) -> tuple[frozenset[int], tuple[int, int]]:
        """SEND_DAYS as weekday numbers and SEND_HOURS as minutes after midnight."""
        return parse_days(self.send_days), parse_hours(self.send_hours)

    @property
    def holiday_dates(self) -> frozenset[date]:
        """HOLIDAYS as dates: days a follow-up's wait does not count, like weekends."""
        return frozenset(date.fromisoformat(item) for item in _date_items(self.holidays))

    @property
    def tz(self) -> tzinfo:
        """The zone that decides which day a send belongs to (the system's when unset)."""
        return ZoneInfo(self.timezone) if self.timezone else system_zone()


Settings.model_fields = {f.name: f.metadata["rule"] for f in fields(Settings)}


def _validated(given: dict[str, Any]) -> dict[str, Any]:
    """Each setting's value from `given` (or its default), checked by its Rule, then the rules over
    several settings; every problem at once, in field order, as pydantic reported them.

    Raises:
        ConfigError: the problems joined by "; ".
    """
    values, problems = {}, []
    for name, rule in Settings.model_fields.items():
        try:
            values[name] = rule.validate(given.get(name, rule.default))
        except Invalid as err:
            problems.append(_describe(name, err))
    if not problems and values["imap_ssl"] and values["imap_starttls"]:
        problems.append("invalid settings: IMAP_SSL and IMAP_STARTTLS are both true: set one (IMAP_SSL for "
                        "port 993, IMAP_STARTTLS for port 143)")
    if problems:
        raise ConfigError("; ".join(problems))
    return values


def _date_items(value: str) -> list[str]:
    return [item.strip() for item in value.replace(";", ",").split(",") if item.strip()]


def system_zone() -> tzinfo:
    """The machine's IANA zone (TZ, then /etc/localtime, then /etc/timezone).

    A real zone, not today's UTC offset: a fixed offset would put summer sends an hour off.
    """
    names = [os.environ.get("TZ", "").lstrip(":")]
    localtime = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in localtime:
        names.append(localtime.split("zoneinfo/", 1)[1])
    try:
        names.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    except OSError:
        pass
    for name in filter(None, names):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return datetime.now().astimezone().tzinfo or ZoneInfo("UTC")


def load_settings(**overrides: Any) -> Settings:
    """Build the effective settings; a flag left unset (None) changes nothing.

    Raises:
        ConfigError: naming the variable, the value given and what it accepts.
    """
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _describe(name: str, err: Invalid) -> str:
    """`invalid setting NAME=value: expected ...` (or the check's own why); a secret is never shown."""
    value = err.value
    shown = show_value(value) if isinstance(value, (str, int, float, bool)) else ""
    if Settings.model_fields[name].parse is secret:  # every secret, IMAP_PASSWORD too
        shown = "********"
    return f"invalid setting {name.upper()}={shown}: {err.why or 'expected ' + ACCEPTS.get(name, 'a valid value')}"


def show_value(value: Any, *, limit: int = 100) -> str:
    """A setting's value as one short line for an error: controls escaped (\\r, \\x00), long values cut."""
    shown = "".join(repr(c)[1:-1] if forbidden_character(c) else c for c in str(value))
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def setting_sources(overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """Where each setting's effective value came from: flag, env, .env or default."""
    dotenv = {k.lower(): v for k, v in _dotenv(ENV_FILE).items()}
    environ = {k.lower() for k in os.environ}
    given = {k for k, v in (overrides or {}).items() if v is not None}
    sources = {}
    for name in Settings.model_fields:
        if name in given:
            sources[name] = "flag"
        elif name in environ:
            sources[name] = "env"
        elif name in dotenv:
            sources[name] = ".env"
        else:
            sources[name] = "default"
    return sources


def describe_settings(settings: Settings, overrides: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(VARIABLE, shown value, source) for each setting, secrets masked."""
    sources = setting_sources(overrides)
    rows = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "********" if value.get_secret_value() else ""
        elif isinstance(value, bool):
            shown = str(value).lower()
        elif name == "timezone" and not value:
            shown = f"(system: {settings.tz})"
        else:
            shown = "" if value is None else str(value)
        rows.append((name.upper(), shown, sources[name]))
    return rows
