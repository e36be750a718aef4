"""Settings come from env, then .env, then defaults; flags win; bad values are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from email_automation.config import describe_settings, load_settings
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
        ("DAILY_LIMIT", "abc", "invalid setting DAILY_LIMIT=abc: expected a whole number >= 0"),
        ("DAILY_LIMIT", "-1", "invalid setting DAILY_LIMIT=-1: expected a whole number >= 0"),
        ("DELAY_SECONDS", "soon", "invalid setting DELAY_SECONDS=soon: expected a number of seconds >= 0"),
        ("DRY_RUN", "maybe", "invalid setting DRY_RUN=maybe: expected true or false"),
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
