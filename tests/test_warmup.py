"""WARMUP_SCHEDULE: the first sending days of a new sender are capped, step by step."""

from __future__ import annotations

import random

import pytest
from typer.testing import CliRunner

from email_automation.cli import app
from email_automation.database import transaction
from email_automation.doctor import check_warmup
from email_automation.run_daily import run_daily
from email_automation.warmup import suggested_ramp

from .fakes import RecordingSleep, ScriptedTransport

runner = CliRunner()


def add_pending(db, count):
    with transaction(db):
        for i in range(count):
            db.execute("INSERT INTO recipients (campaign_id, email, created_at) VALUES (1, ?, 'x')", (f"p{i:03}@x.org",))


def test_each_sending_day_takes_the_next_step_and_then_daily_limit(settings, db, clock):
    ramp = settings.model_copy(update={"warmup_schedule": "2,3", "daily_limit": 5})
    add_pending(db, 20)
    sent_per_day = []
    for day in range(4):
        transport = ScriptedTransport()
        report = run_daily(ramp, db, transport, now=clock, sleep=RecordingSleep(), rng=random.Random(1))
        sent_per_day.append(report.sent)
        assert report.remaining_today == 0
        clock.advance(86400 if day != 1 else 3 * 86400)  # days without sends do not skip a step
    assert sent_per_day == [2, 3, 5, 5]


def test_status_shows_todays_capped_limit(settings, db, monkeypatch):
    monkeypatch.setenv("WARMUP_SCHEDULE", "20,40")
    result = runner.invoke(app, ["status", "--db", str(settings.db_path)], catch_exceptions=False)
    assert "of DAILY_LIMIT 20 used, 20 left" in result.stdout
    assert ("Limit: warm-up day 1 of 2 (WARMUP_SCHEDULE): at most 20 today instead of DAILY_LIMIT 80."
            in result.stdout.splitlines())


def test_doctor_suggests_a_ramp_to_a_new_sender(settings, db):
    check = check_warmup(settings)
    assert check.status == "WARN" and check.hint == "ramp up over the first days with WARMUP_SCHEDULE=20,40"
    assert check.detail.startswith("0 sending day(s) before today and DAILY_LIMIT=80 from the first day")
    assert suggested_ramp(500) == "20,40,80,160,320"


@pytest.mark.parametrize("given", ["20,,40", "20,x", "0,20", "-5"])
def test_a_bad_schedule_is_one_line(given, tmp_path):
    result = runner.invoke(app, ["status", "--db", str(tmp_path / "x.db")], env={"WARMUP_SCHEDULE": given})
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"Error: invalid setting WARMUP_SCHEDULE={given}: expected daily limits for the "
                                     "first sending days, whole numbers >= 1 separated by commas (e.g. 20,40,60,80)")
