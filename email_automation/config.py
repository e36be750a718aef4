"""Settings: environment variables, then `.env` in the working directory, then defaults.

CLI flags are passed as overrides and win over everything. AWS credentials and region come from
boto3's own chain (env, profile, EC2 instance role); `AWS_REGION` is only read here so that a
region put in `.env` also reaches boto3 under cron's nearly empty environment.
"""

from __future__ import annotations

import os
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .headers import forbidden_character
from .schedule import parse_days, parse_hours
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


class Settings(BaseModel):
    """Every knob of the tool; field names map to upper-case environment variables.

    `Settings(**overrides)` reads the environment and `.env` itself (see `environment_values`), as
    pydantic-settings' BaseSettings did: keyword arguments win, then the environment, then `.env`.
    """

    # validate_default: a default goes through the same checks as a given value (as in BaseSettings).
    model_config = ConfigDict(extra="ignore", validate_default=True)

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**{**environment_values(), **overrides})

    db_path: Path = Path("email_automation.db")
    dry_run: bool = True
    daily_limit: int = Field(80, ge=0, le=MAX_DAILY_LIMIT)
    delay_seconds: float = Field(5.0, ge=0, le=MAX_DELAY_SECONDS, allow_inf_nan=False)
    delay_jitter_seconds: float = Field(0.0, ge=0, le=MAX_DELAY_SECONDS, allow_inf_nan=False)
    max_attempts: int = Field(3, ge=1, le=MAX_ATTEMPTS)
    transport: Literal["ses", "smtp"] = "ses"
    sender_email: str = ""
    sender_name: str = ""
    reply_to: str = ""
    ses_configuration_set: str = ""
    ses_events_queue_url: str = ""
    aws_region: str = ""
    send_timeout_seconds: float = Field(30.0, gt=0, le=MAX_SEND_TIMEOUT_SECONDS, allow_inf_nan=False)
    smtp_host: str = ""  # no default: a real SMTP send must name its server (see _smtp_needs_a_host)
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    timezone: str = ""
    outbox_dir: Path = Path("outbox")
    # Attachments (attachments.py): the folder an `attachments` CSV column is relative to (default:
    # the CSV's folder) and the largest message to build; SES v2 allows 40 MB
    # (https://docs.aws.amazon.com/ses/latest/dg/attachments.html).
    attachments_dir: Path | None = None
    max_message_bytes: int = Field(10 * 1024 * 1024, ge=64 * 1024, le=40 * 1024 * 1024)
    unsubscribe_url: str = ""
    physical_address: str = ""
    dashboard_password: SecretStr = SecretStr("")
    log_file: Path | None = None
    report_email: str = ""
    imap_host: str = ""
    imap_port: int = Field(993, ge=1, le=65535)
    imap_username: str = ""
    imap_password: SecretStr = SecretStr("")
    imap_folder: str = Field("INBOX", min_length=1)
    imap_ssl: bool = True
    imap_starttls: bool = False
    stop_company_on_reply: bool = True
    # Follow-up waits count business days: weekends and these dates (YYYY-MM-DD, comma-separated) are skipped.
    holidays: str = ""
    # A real run sends only inside this window, in TIMEZONE (schedule.py).
    send_days: str = "mon-fri"
    send_hours: str = "08:00-17:00"
    # Per-company politeness (politeness.py): first messages to one company per day, people per campaign.
    max_new_per_company_per_day: int = Field(1, ge=1)
    max_contacts_per_company: int = Field(3, ge=1)
    # Circuit breaker (circuit_breaker.py): well below SES's own review rates of 5% and 0.1%.
    bounce_pause_rate: float = 0.02
    bounce_pause_min: int = Field(3, ge=1)
    complaint_pause_rate: float = 0.0005
    complaint_pause_min: int = Field(1, ge=1)
    pause_window_days: int = Field(7, ge=1)
    # SES's account-level suppression list (ses_suppression.py).
    ses_suppression_check: bool = True
    ses_push_suppressions: bool = False
    # One-click unsubscribe without hosting (unsubscribe_tokens.py, transports/ses.py).
    unsubscribe_secret: SecretStr = SecretStr("")
    ses_contact_list: str = ""
    ses_topic: str = ""
    # Pre-flight: domains that cannot receive mail are rejected at import (mx_check.py).
    check_mx: bool = False
    # Daily caps for the first sending days of a new domain or identity (warmup.py).
    warmup_schedule: str = ""

    @field_validator("bounce_pause_rate", "complaint_pause_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        """`2%` or `0.02`; a bare number above 1 is refused rather than guessed at."""
        if isinstance(value, str) and value.strip().endswith("%"):
            value = float(value.strip()[:-1]) / 100
        rate = float(value)
        if not 0 < rate <= 1:
            raise ValueError("rate out of range")
        return rate

    @field_validator("warmup_schedule")
    @classmethod
    def _steps(cls, value: str) -> str:
        from .warmup import parse_steps

        parse_steps(value)  # ValueError: not whole numbers >= 1
        return value.strip()

    @field_validator("unsubscribe_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < 16:
            raise ValueError("secret too short")
        return value

    # Sends in flight at once when DELAY_SECONDS is 0 (see concurrent_send.py), and their rate.
    send_concurrency: int = Field(1, ge=1, le=MAX_SEND_CONCURRENCY)
    max_send_rate: float = Field(0.0, ge=0, le=MAX_SEND_RATE, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        """Settings end up in headers, paths and SMTP commands: a line break or NUL would be injected."""
        problem = forbidden_character(value) if isinstance(value, str) else None
        if problem:
            raise PydanticCustomError("control_character", "has a {problem}", {"problem": problem})
        return value

    @field_validator("unsubscribe_url")
    @classmethod
    def _usable_unsubscribe_url(cls, value: str) -> str:
        problem = url_problem(value.strip())
        if problem:
            raise PydanticCustomError("unsubscribe_url", problem)
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as err:
                raise ValueError("unknown time zone") from err
        return value

    @field_validator("holidays")
    @classmethod
    def _iso_dates(cls, value: str) -> str:
        for item in _date_items(value):
            try:
                date.fromisoformat(item)
            except ValueError as err:
                raise ValueError(f"{item!r} is not a date written YYYY-MM-DD") from err
        return value

    @field_validator("send_days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_days(value)
        return value

    @field_validator("send_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_hours(value)
        return value

    @property
    def send_window(self) -> tuple[frozenset[int], tuple[int, int]]:
        """SEND_DAYS as weekday numbers and SEND_HOURS as minutes after midnight."""
        return parse_days(self.send_days), parse_hours(self.send_hours)

    @property
    def holiday_dates(self) -> frozenset[date]:
        """HOLIDAYS as dates: days a follow-up's wait does not count, like weekends."""
        return frozenset(date.fromisoformat(item) for item in _date_items(self.holidays))

    @field_validator("log_file", "attachments_dir", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("transport", mode="before")
    @classmethod
    def _lower_transport(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_imap_encryption(self) -> Settings:
        if self.imap_ssl and self.imap_starttls:
            raise PydanticCustomError(
                "imap_tls", "IMAP_SSL and IMAP_STARTTLS are both true: set one (IMAP_SSL for port 993, "
                "IMAP_STARTTLS for port 143)")
        return self

    @property
    def tz(self) -> tzinfo:
        """The zone that decides which day a send belongs to (the system's when unset)."""
        return ZoneInfo(self.timezone) if self.timezone else system_zone()


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
    """Build the effective settings; a bad value becomes one ConfigError line naming it.

    Raises:
        ConfigError: naming the variable, the value given and what it accepts.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as err:
        raise ConfigError(_describe_validation_error(err)) from None


# Errors whose own message says what is wrong better than "expected ...".
_EXPLAINED = {"control_character", "unsubscribe_url"}
_SECRETS = {"smtp_password", "dashboard_password", "unsubscribe_secret"}


def _describe_validation_error(err: ValidationError) -> str:
    problems = []
    for item in err.errors():
        if not item["loc"]:  # a rule over several settings says itself what is wrong
            problems.append(f"invalid settings: {item['msg']}")
            continue
        field = str(item["loc"][0])
        value = item.get("input")
        shown = show_value(value) if isinstance(value, (str, int, float, bool)) else ""
        if field in _SECRETS:
            shown = "********"
        if item["type"] in _EXPLAINED:
            problems.append(f"invalid setting {field.upper()}={shown}: {item['msg']}")
            continue
        accepts = ACCEPTS.get(field, "a valid value")
        problems.append(f"invalid setting {field.upper()}={shown}: expected {accepts}")
    return "; ".join(problems)


def show_value(value: Any, *, limit: int = 100) -> str:
    """A setting's value as one short line for an error: controls escaped (\\r, \\x00), long values cut."""
    text = str(value)
    text = "".join(repr(c)[1:-1] if forbidden_character(c) else c for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
