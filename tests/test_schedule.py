"""Send windows: SEND_DAYS and SEND_HOURS in each recipient's zone or TIMEZONE, across a weekend,
a day boundary in another zone and a DST change, by moving an injected clock."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from email_automation.database import connect
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


def test_an_unknown_time_zone_is_a_reject_at_import_naming_the_row(tmp_path):
    (tmp_path / "people.csv").write_text("email,Time Zone\nada@example.com,America/New_York\nbob@example.com,Mars/Olympus\n"
                                         "cy@example.com,\n")
    assert cli("init", "--db", "x.db").exit_code == 0
    result = cli("import", "people.csv", "--db", "x.db")
    assert result.stdout.splitlines()[:2] == [
        "people.csv: 2 added to campaign 'default', 0 duplicate(s) skipped, 1 invalid.",
        "  people.csv:3: 'Time Zone': unknown time zone 'Mars/Olympus': use an IANA name such as Europe/Berlin "
        "or America/New_York",
    ]
    zones = dict(connect(tmp_path / "x.db").execute("SELECT email, timezone FROM recipients"))
    assert zones == {"ada@example.com": "America/New_York", "cy@example.com": ""}


def add_zoned(db, zones):
    db.executemany("INSERT INTO recipients (campaign_id, email, timezone, created_at) VALUES (1, ?, ?, 'x')",
                   [(f"{zone.split('/')[-1].lower() or 'home'}@example.com", zone) for zone in zones])


def test_each_recipient_is_mailed_inside_the_window_of_their_own_time_zone(office_hours, db):
    add_zoned(db, ["", "America/New_York", "Asia/Tokyo"])
    transport = ScriptedTransport()
    at = lambda *args: (lambda: datetime(*args, tzinfo=timezone.utc))  # noqa: E731
    # Monday 00:30 UTC: 01:30 in Berlin (TIMEZONE) and 19:30 on Sunday in New York, but 09:30 on Monday in Tokyo.
    assert run(office_hours, db, transport, at(2026, 11, 30, 0, 30)).sent == 1
    assert run(office_hours, db, transport, at(2026, 11, 30, 8, 0)).sent == 1  # 09:00 in Berlin
    assert run(office_hours, db, transport, at(2026, 11, 30, 14, 0)).sent == 1  # 09:00 in New York
    assert transport.recipients == ["tokyo@example.com", "home@example.com", "new_york@example.com"]


def test_a_run_when_every_zone_is_closed_says_so(office_hours, db):
    add_zoned(db, ["America/New_York"])
    report = run(office_hours, db, ScriptedTransport(), lambda: datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc))
    assert report.window == "outside the send window (sat is not one of SEND_DAYS in America/New_York): nothing sent now"


def test_run_plan_shows_the_batch_and_who_waits_and_why_without_claiming(tmp_path):
    from email_automation.sequences import add_step

    (tmp_path / "people.csv").write_text("email,company,timezone\nada@acme.com,Acme,\nbob@acme.com,Acme,\n"
                                         "cy@beta.io,,Pacific/Kiritimati\ndi@gamma.io,,\nev@delta.io,,\n")
    env = {"SENDER_EMAIL": "jane@example.com", "TIMEZONE": "UTC", "DAILY_LIMIT": "3",
           "MAX_NEW_PER_COMPANY_PER_DAY": "1", "SEND_HOURS": "00:00-24:00", "SEND_DAYS": "mon-sun"}
    assert cli("init", "--db", "x.db").exit_code == 0
    assert cli("import", "people.csv", "--db", "x.db").exit_code == 0
    conn = connect(tmp_path / "x.db")
    add_step(conn, "default", after_days=2, html="<p>Again</p>", now=datetime.now(timezone.utc))
    conn.execute("UPDATE recipients SET status = 'sent', sent_at = '2020-01-01T09:00:00+00:00'"
                 " WHERE email = 'ev@delta.io'")
    result = cli("run", "--plan", "--json", "--db", "x.db", env=env)
    data = json.loads(result.stdout)
    assert [(p["email"], p["step"]) for p in data["send"]] == [("ev@delta.io", 2), ("ada@acme.com", 1),
                                                              ("cy@beta.io", 1)]
    assert data["per_step"] == {"1": 2, "2": 1}
    assert [(h["email"], h["reason"]) for h in data["held"]] == [
        ("bob@acme.com", "company limit: 1 first message(s) to acme today (MAX_NEW_PER_COMPANY_PER_DAY)")]
    assert data["over_limit"] == 1  # di@gamma.io: the daily limit of 3 is used
    assert connect(tmp_path / "x.db").execute("SELECT count(*) FROM send_log").fetchone()[0] == 0
    text = cli("run", "--plan", "--db", "x.db", env=env).stdout.splitlines()
    assert text[0] == ("The next real run would send 3 message(s) (3 of DAILY_LIMIT 3 left today; SES's own quota may "
                       "cut it further).")
    assert "  held bob@acme.com (default, step 1): company limit: 1 first message(s) to acme today " \
           "(MAX_NEW_PER_COMPANY_PER_DAY)" in text
    smtp = cli("run", "--plan", "--db", "x.db", env={**env, "TRANSPORT": "smtp"}).stdout.splitlines()
    assert smtp[0] == "The next real run would send 3 message(s) (3 of DAILY_LIMIT 3 left today)."  # no SES to ask
