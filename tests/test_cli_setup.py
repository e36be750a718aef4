"""`config`, `doctor`, `cron`, `dashboard` as a user types them: --json, --db, a busy port."""

from __future__ import annotations

import json
import socket

import pytest

from email_automation.cli import dashboard as dashboard_command
from email_automation.database import init_db
from tests.cli_helpers import cli
from tests.smtp_sink import SmtpSink


def test_config_json_gives_each_setting_its_value_and_source(tmp_path):
    result = cli("config", "--db", "x.db", "--json", env={"DAILY_LIMIT": "12"})
    data = json.loads(result.stdout)
    assert data["DAILY_LIMIT"] == {"value": "12", "from": "env"}
    assert data["DB_PATH"] == {"value": "x.db", "from": "flag"}
    assert data["DRY_RUN"] == {"value": "true", "from": "default"}


def test_config_shows_values_that_look_like_markup_as_written(tmp_path):
    result = cli("config", "--db", "[/x].db")
    assert (result.exit_code, result.stderr) == (0, "")
    assert "[/x].db" in next(line for line in result.stdout.splitlines() if line.startswith("DB_PATH"))


def test_doctor_json(tmp_path, monkeypatch, dns_zone):
    init_db(tmp_path / "x.db").close()
    dns_zone.txt.update({"_dmarc.example.com": ["v=DMARC1; p=none"], "example.com": ["v=spf1 ip4:127.0.0.1 -all"]})
    with SmtpSink() as sink:
        env = {"TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port), "SMTP_STARTTLS": "false",
               "SENDER_EMAIL": "jane@example.com", "DRY_RUN": "false", "WARMUP_SCHEDULE": "20,40",
               "UNSUBSCRIBE_URL": "https://example.com/unsubscribe?e={email}"}
        result = cli("doctor", "--db", "x.db", "--json", env=env)
    data = json.loads(result.stdout)
    assert (result.exit_code, data["ok"]) == (0, True), result.stdout
    assert [c["name"] for c in data["checks"]] == ["configuration", "unsubscribe", "database", "warm-up", "SMTP login",
                                                   "DMARC", "SPF"]
    assert {c["status"] for c in data["checks"]} == {"OK"}


def test_cron_log_file_that_is_the_database_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("init", "--db", "x.db").exit_code == 0
    result = cli("cron", "--db", "x.db", "--log-file", "x.db")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "Error: x.db: is a database file; name another file for --log-file\n"


def test_cron_takes_db_like_every_command(tmp_path):
    result = cli("cron", "--db", "data/live.db")
    assert result.exit_code == 0, result.output
    line = result.stdout.splitlines()[0]
    assert f"env DB_PATH={tmp_path / 'data' / 'live.db'} " in line and line.split("#")[0].rstrip().endswith(">> "
           f"{tmp_path / 'cron.log'} 2>&1")
    assert result.stdout.splitlines()[-1] == "To install it: email-automation cron --install --db data/live.db"


def test_cron_install_and_remove_together_is_bad_input():
    result = cli("cron", "--install", "--remove")
    assert (result.exit_code, result.stderr) == (2, "Error: choose --install or --remove, not both\n")


def test_dashboard_on_a_busy_port_says_so_before_printing_a_url(tmp_path, monkeypatch):
    init_db(tmp_path / "x.db").close()
    monkeypatch.setattr(dashboard_command, "_run_until_stopped", lambda *a: pytest.fail("streamlit was started"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("dashboard", "--db", "x.db", "--port", str(port))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"Error: 127.0.0.1:{port} is not free (Address already in use): another dashboard "
                             "may be running; choose another port with --port\n")
