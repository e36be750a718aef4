"""The real cron entry point, as a subprocess, sending through SES over HTTP (moto server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from email import message_from_string

import boto3

from email_automation.database import connect, init_db


def reset(moto_url):
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10)




def run_cli(tmp_path, moto_url, *args):
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_url, "AWS_REGION": "us-east-1", "DRY_RUN": "false",
           "TRANSPORT": "ses", "SENDER_EMAIL": "jane@example.com", "SENDER_NAME": "Jane Sender",
           "DELAY_SECONDS": "0", "DB_PATH": str(tmp_path / "e2e.db"), "TIMEZONE": "UTC"}
    return subprocess.run([sys.executable, "-m", "email_automation", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def fill(tmp_path, emails):
    conn = init_db(tmp_path / "e2e.db")
    conn.executemany("INSERT INTO recipients (campaign_id, email, first_name, company, created_at) VALUES (1, ?, 'Sam', 'Initech', 'x')",
                     [(e,) for e in emails])
    conn.close()


def test_run_sends_through_ses_and_logs_the_message_ids_ses_returned(tmp_path, moto_url):
    reset(moto_url)
    boto3.client("sesv2", region_name="us-east-1", endpoint_url=moto_url).create_email_identity(EmailIdentity="example.com")
    fill(tmp_path, ["a@example.org", "b@example.org", "c@example.org"])

    result = run_cli(tmp_path, moto_url, "run", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 3

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    accepted = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    by_id = {m.id: message_from_string(m.raw_data) for m in accepted}
    conn = connect(tmp_path / "e2e.db", readonly=True)
    logged = conn.execute("SELECT r.email, s.status, s.message_id FROM send_log s JOIN recipients r ON r.id = s.recipient_id").fetchall()
    assert sorted(r["email"] for r in logged) == ["a@example.org", "b@example.org", "c@example.org"]
    for row in logged:
        assert row["status"] == "sent"
        assert row["message_id"] in by_id, "the logged id is the one SES returned"
        assert by_id[row["message_id"]]["To"] == f"Sam <{row['email']}>"  # the first name is known
        assert by_id[row["message_id"]]["From"] == "Jane Sender <jane@example.com>"

    again = run_cli(tmp_path, moto_url, "run", "--json")
    assert json.loads(again.stdout)["sent"] == 0
    assert len(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages) == 3


def test_an_unverified_sender_stops_the_run_with_exit_code_3_and_sends_nothing(tmp_path, moto_url):
    reset(moto_url)
    fill(tmp_path, ["a@example.org", "b@example.org"])
    result = run_cli(tmp_path, moto_url, "run")
    assert result.returncode == 3
    assert "SENDER_EMAIL jane@example.com is not verified in SES region us-east-1" in result.stderr
    assert "Traceback" not in result.stderr
    conn = connect(tmp_path / "e2e.db", readonly=True)
    assert dict(conn.execute("SELECT email, status FROM recipients").fetchall()) == {
        "a@example.org": "pending", "b@example.org": "pending"}
