"""Send windows: SEND_DAYS and SEND_HOURS in TIMEZONE, across a weekend and a DST change."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from email_automation.schedule import DAY_NAMES, parse_days, parse_hours

from .cli_helpers import cli
from .fakes import ScriptedTransport
from .test_run_daily import add_recipients, run


def test_days_and_hours_are_read_as_a_person_writes_them():
    assert parse_days("mon-fri") == frozenset(range(5))
    assert parse_days("Mon, Wed,fri") == frozenset({0, 2, 4})
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_hours("08:00-17:30") == (480, 1050)
    assert parse_hours("00:00-24:00") == (0, 1440)
    for bad in ("mon-funday", ""):
        with pytest.raises(ValueError):
            parse_days(bad)
    for bad in ("17:00-08:00", "8-", "25:00-26:00", "08:60-09:00"):
        with pytest.raises(ValueError):
            parse_hours(bad)


@pytest.fixture
def office_hours(settings):
    return settings.model_copy(update={"send_days": "mon-fri", "send_hours": "08:00-17:00"})  # Europe/Berlin


@pytest.mark.parametrize("moment, sends", [
    (datetime(2026, 11, 28, 10, 0), False),   # Saturday 11:00 in Berlin
    (datetime(2026, 11, 30, 6, 59), False),   # Monday 07:59
    (datetime(2026, 11, 30, 7, 0), True),     # Monday 08:00
    (datetime(2026, 11, 30, 16, 0), False),   # Monday 17:00: the end is excluded
    (datetime(2026, 10, 23, 6, 30), True),    # Friday 08:30 CEST (UTC+2)
    (datetime(2026, 10, 26, 6, 30), False),   # Monday 07:30 CET: summer time ended on Sunday
    (datetime(2026, 10, 26, 7, 30), True),    # Monday 08:30 CET
], ids=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
def test_a_real_run_sends_only_inside_the_window_in_timezone(office_hours, db, moment, sends):
    add_recipients(db, 2)
    transport = ScriptedTransport()
    report = run(office_hours, db, transport, lambda: moment.replace(tzinfo=timezone.utc))
    assert report.sent == (2 if sends else 0)
    assert (report.window is None) == sends
    if not sends:
        assert set(dict(db.execute("SELECT email, status FROM recipients")).values()) == {"pending"}


def test_the_cli_says_why_a_run_outside_the_window_sent_nothing():
    today = datetime.now(timezone.utc).weekday()
    env = {"SENDER_EMAIL": "jane@example.com", "SEND_DAYS": DAY_NAMES[(today + 1) % 7], "DRY_RUN": "false",
           "TIMEZONE": "UTC"}
    assert cli("init", "--db", "x.db").exit_code == 0
    result = cli("run", "--db", "x.db", env=env)
    if datetime.now(timezone.utc).weekday() != today:
        pytest.skip("midnight passed during the test")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == (
        f"Nothing sent: outside the send window ({DAY_NAMES[today]} is not one of SEND_DAYS). "
        "Sent 0, failed 0, deferred 0, skipped 0, unknown 0; 80 left today.")


@pytest.mark.parametrize("name, value, hint", [
    ("SEND_HOURS", "17:00-08:00", "a range of hours such as 08:00-17:00 (00:00-24:00 for the whole day)"),
    ("SEND_DAYS", "weekdays", "days such as mon-fri or mon,wed,fri"),
    ("HOLIDAYS", "2026-13-01", "dates written YYYY-MM-DD, separated by commas"),
])
def test_a_bad_window_setting_is_one_line_and_exit_2(name, value, hint):
    result = cli("status", "--db", "x.db", env={name: value})
    assert (result.exit_code, result.stderr) == (2, f"Error: invalid setting {name}={value}: expected {hint}\n")
