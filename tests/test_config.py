"""Settings come from env, then .env, then defaults; flags win; bad values are one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from email_automation.config import ACCEPTS, Settings, describe_settings, load_settings
from email_automation.errors import ConfigError


def test_fresh_install_never_sends_by_accident():
    settings = load_settings()
    assert settings.dry_run is True
    assert settings.daily_limit == 80
    assert settings.delay_seconds == 5
    assert settings.db_path == Path("email_automation.db")
    assert settings.transport == "ses"


def test_environment_beats_dotenv_and_dotenv_beats_defaults(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("DAILY_LIMIT=10\nDELAY_SECONDS=2\nexport SENDER_EMAIL=me@example.com\n")
    monkeypatch.setenv("DAILY_LIMIT", "20")
    settings = load_settings()
    assert settings.daily_limit == 20
    assert settings.delay_seconds == 2
    assert settings.sender_email == "me@example.com"


def test_flags_override_everything(monkeypatch):
    monkeypatch.setenv("DRY_RUN", "true")
    assert load_settings(dry_run=False).dry_run is False
    assert load_settings(dry_run=None).dry_run is True  # an unset flag changes nothing


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DAILY_LIMIT", "abc", "invalid setting DAILY_LIMIT=abc: expected a whole number from 0 to 100000"),
        ("DAILY_LIMIT", "-1", "invalid setting DAILY_LIMIT=-1: expected a whole number from 0 to 100000"),
        ("DAILY_LIMIT", "10000000000000000000000", "invalid setting DAILY_LIMIT=10000000000000000000000: "
         "expected a whole number from 0 to 100000"),
        ("DELAY_SECONDS", "soon", "invalid setting DELAY_SECONDS=soon: expected a number of seconds from 0 to 3600"),
        # inf and 1e300 were accepted, then time.sleep() raised OverflowError after the first send.
        ("DELAY_SECONDS", "inf", "invalid setting DELAY_SECONDS=inf: expected a number of seconds from 0 to 3600"),
        ("DELAY_SECONDS", "1e300", "invalid setting DELAY_SECONDS=1e300: expected a number of seconds from 0 to 3600"),
        ("DELAY_SECONDS", "nan", "invalid setting DELAY_SECONDS=nan: expected a number of seconds from 0 to 3600"),
        ("DELAY_JITTER_SECONDS", "Infinity",
         "invalid setting DELAY_JITTER_SECONDS=Infinity: expected a number of seconds from 0 to 3600"),
        ("MAX_ATTEMPTS", "1000", "invalid setting MAX_ATTEMPTS=1000: expected a whole number from 1 to 20"),
        ("SEND_TIMEOUT_SECONDS", "inf",
         "invalid setting SEND_TIMEOUT_SECONDS=inf: expected a number of seconds above 0, at most 600"),
        ("DRY_RUN", "maybe", "invalid setting DRY_RUN=maybe: expected true or false"),
        ("SEND_ONE_CPU", "maybe", "invalid setting SEND_ONE_CPU=maybe: expected true or false"),
        ("MAX_MESSAGE_BYTES", "1", "invalid setting MAX_MESSAGE_BYTES=1: expected a whole number of bytes from 65536 "
         "to 41943040 (64 KiB to 40 MiB)"),
        ("TRANSPORT", "carrier-pigeon", "invalid setting TRANSPORT=carrier-pigeon: expected ses or smtp"),
        ("TIMEZONE", "Mars/Olympus", "invalid setting TIMEZONE=Mars/Olympus: expected an IANA time zone name such as Europe/Berlin"),
        ("SMTP_PORT", "70000", "invalid setting SMTP_PORT=70000: expected a port number 1-65535"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == message


def test_every_setting_says_what_it_accepts():
    """A bad value's error names what would do, never just "a valid value"."""
    assert sorted(set(Settings.model_fields) - set(ACCEPTS)) == []


def test_transport_name_is_case_insensitive(monkeypatch):
    monkeypatch.setenv("TRANSPORT", " SMTP ")
    assert load_settings().transport == "smtp"


def test_config_listing_masks_secrets_and_names_sources(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("SMTP_PASSWORD=hunter2\n")
    monkeypatch.setenv("DAILY_LIMIT", "7")
    overrides = {"db_path": tmp_path / "x.db"}
    rows = {name: (value, source) for name, value, source in describe_settings(load_settings(**overrides), overrides)}
    assert rows["SMTP_PASSWORD"] == ("********", ".env")
    assert rows["DAILY_LIMIT"] == ("7", "env")
    assert rows["DB_PATH"] == (str(tmp_path / "x.db"), "flag")
    assert rows["DRY_RUN"] == ("true", "default")
    assert "hunter2" not in repr(rows)


def test_an_unset_timezone_is_the_systems_zone_not_todays_offset(monkeypatch):
    from datetime import datetime, timezone

    monkeypatch.setenv("TZ", "America/New_York")
    zone = load_settings().tz
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc).astimezone(zone)
    winter = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc).astimezone(zone)
    assert (summer.hour, winter.hour) == (8, 7)


@pytest.mark.parametrize("name", ["SENDER_NAME", "SENDER_EMAIL", "REPLY_TO", "REPORT_EMAIL", "UNSUBSCRIBE_URL",
                                  "PHYSICAL_ADDRESS", "SES_CONFIGURATION_SET", "SMTP_HOST", "SMTP_USERNAME"])
def test_a_line_break_in_any_text_setting_is_refused_naming_that_setting(monkeypatch, name):
    # SENDER_NAME with CR/LF used to be reported as a bad SENDER_EMAIL, and only when sending.
    monkeypatch.setenv(name, "Jane\r\nBcc: x@example.net")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (f"invalid setting {name}=Jane\\r\\nBcc: x@example.net: "
                                 "has a control character U+000D at position 5")


@pytest.mark.parametrize("name", ["SMTP_PASSWORD", "IMAP_PASSWORD", "DASHBOARD_PASSWORD", "UNSUBSCRIBE_SECRET"])
def test_a_control_character_in_a_password_is_refused_without_showing_it(monkeypatch, name):
    monkeypatch.setenv(name, "hunter2\x1b")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"invalid setting {name}=********: has a control character U+001B at position 8"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://example.com/u?e={email}", "must be an https:// URL (one-click unsubscribe, RFC 8058, needs HTTPS)"),
        ("https://example.com/unsubscribe", "must contain {email}, so that each recipient gets their own link"),
        ("https://example.com/u?e={email}&x=a b", "must not contain spaces, quotes, angle brackets or braces "
                                                   "(percent-encode them)"),
        ("https://example.com/u?e={email}&t=" + "a" * 600, "is too long: with a recipient's address its "
         "List-Unsubscribe line can reach 1096 characters, over RFC 5322's 998 (keep the URL to at most 536 characters)"),
    ],
)
def test_an_unusable_unsubscribe_url_is_refused(monkeypatch, url, problem):
    monkeypatch.setenv("UNSUBSCRIBE_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"invalid setting UNSUBSCRIBE_URL={url if len(url) <= 100 else url[:97] + '...'}: {problem}"


def test_an_https_unsubscribe_url_with_the_placeholder_is_accepted(monkeypatch):
    monkeypatch.setenv("UNSUBSCRIBE_URL", " https://example.com/unsubscribe?email={email} ")
    assert load_settings().unsubscribe_url == "https://example.com/unsubscribe?email={email}"


def test_the_largest_accepted_values_are_accepted(monkeypatch):
    for name, value in {"DAILY_LIMIT": "100000", "DELAY_SECONDS": "3600", "MAX_ATTEMPTS": "20",
                        "SEND_TIMEOUT_SECONDS": "600"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.daily_limit, settings.delay_seconds, settings.max_attempts) == (100_000, 3600, 20)


# What pydantic 2's lax mode made of a value, checked against the pydantic model these settings
# were before they were written by hand: a `.env` that worked must keep working, to the letter.
@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("DAILY_LIMIT", "5", 5), ("DAILY_LIMIT", " 5 ", 5), ("DAILY_LIMIT", "5.0", 5), ("DAILY_LIMIT", "+5", 5),
        ("DAILY_LIMIT", "005", 5), ("DAILY_LIMIT", "1_000", 1000), ("DAILY_LIMIT", "\t7.00", 7),
        ("DELAY_SECONDS", "1e3", 1000.0), ("DELAY_SECONDS", ".5", 0.5), ("DELAY_SECONDS", "5.", 5.0),
        ("DELAY_SECONDS", " 2 ", 2.0), ("DELAY_SECONDS", "1_0.5", 10.5), ("DELAY_SECONDS", "1E1", 10.0),
        ("BOUNCE_PAUSE_RATE", " 2 % ", 0.02), ("BOUNCE_PAUSE_RATE", "1", 1.0),
        ("DRY_RUN", "no", False), ("DRY_RUN", "OFF", False), ("DRY_RUN", "F", False), ("DRY_RUN", "0", False),
        ("DRY_RUN", "Yes", True), ("DRY_RUN", "on", True), ("DRY_RUN", "t", True), ("DRY_RUN", "Y", True),
        ("TRANSPORT", "Smtp\t", "smtp"), ("DB_PATH", "", Path(".")), ("LOG_FILE", " ", None),
        ("IMAP_FOLDER", " ", " "), ("SENDER_NAME", " Jane ", " Jane "), ("WARMUP_SCHEDULE", " 10,20 ", "10,20"),
    ],
)
def test_values_are_read_as_pydantic_read_them(monkeypatch, name, value, read):
    monkeypatch.setenv(name, value)
    assert getattr(load_settings(), name.lower()) == read


@pytest.mark.parametrize(
    ("name", "value"),
    [("DAILY_LIMIT", "5.5"), ("DAILY_LIMIT", "1e3"), ("DAILY_LIMIT", "5."), ("DAILY_LIMIT", "0x10"),
     ("DAILY_LIMIT", ""), ("DAILY_LIMIT", "1__0"), ("DAILY_LIMIT", "٥"), ("DELAY_SECONDS", "-inf"),
     ("DELAY_SECONDS", "0x1"), ("DELAY_SECONDS", "_1"), ("DELAY_SECONDS", ""), ("SEND_TIMEOUT_SECONDS", "0"),
     ("DRY_RUN", " true"), ("DRY_RUN", "1.0"), ("DRY_RUN", "2"), ("DRY_RUN", ""), ("IMAP_FOLDER", ""),
     ("BOUNCE_PAUSE_RATE", "1_0"), ("MAX_MESSAGE_BYTES", "65535"), ("TIMEZONE", " UTC")],
)
def test_values_pydantic_refused_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^invalid setting {name}={re.escape(value)}: expected "):
        load_settings()


def test_every_bad_setting_is_named_in_one_line_in_field_order(monkeypatch):
    monkeypatch.setenv("DAILY_LIMIT", "abc")
    monkeypatch.setenv("DRY_RUN", "maybe")
    monkeypatch.setenv("IMAP_STARTTLS", "true")  # with IMAP_SSL's default: only said once the rest is valid
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == ("invalid setting DRY_RUN=maybe: expected true or false; "
                                 "invalid setting DAILY_LIMIT=abc: expected a whole number from 0 to 100000")


def test_a_secret_is_never_shown(monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2")
    monkeypatch.setenv("UNSUBSCRIBE_SECRET", "s" * 16)
    settings = load_settings()
    assert settings.smtp_password.get_secret_value() == "hunter2"
    shown = f"{settings!r} {settings} {settings.smtp_password} {settings.model_dump()}"
    assert "hunter2" not in shown and "s" * 16 not in shown and "SecretStr('**********')" in shown
    monkeypatch.setenv("UNSUBSCRIBE_SECRET", "hunter2")
    with pytest.raises(ConfigError, match="^invalid setting UNSUBSCRIBE_SECRET=\\*\\*\\*\\*\\*\\*\\*\\*: expected"):
        load_settings()


def test_model_copy_changes_only_the_copy_and_keeps_the_value_given():
    settings = load_settings()
    copy = settings.model_copy(update={"daily_limit": 3, "delay_seconds": 1})
    assert (copy.daily_limit, copy.delay_seconds, settings.daily_limit) == (3, 1, 80)
    assert copy.model_dump() == {**settings.model_dump(), "daily_limit": 3, "delay_seconds": 1}
