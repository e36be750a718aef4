"""`kill -9` at random moments, with overlapping runs, never makes anyone get two messages.

Real `email-automation run` processes send through SMTP to a loopback sink that counts what it
accepted per recipient; the test kills them at seeded random moments and then compares the
sink's counts with the database.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from email_automation.database import connect, init_db

from .smtp_sink import SmtpSink

RECIPIENTS = 80
ROUNDS = 12


def start_run(env):
    return subprocess.Popen([sys.executable, "-m", "email_automation", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("pace, recipients", [
    ({"DELAY_SECONDS": "0.02"}, RECIPIENTS),
    # Four sends in flight at once: a kill leaves up to four claims without their outcome.
    ({"DELAY_SECONDS": "0", "SEND_CONCURRENCY": "4"}, 4 * RECIPIENTS),
], ids=["one-at-a-time", "concurrent"])
def test_random_sigkills_and_overlapping_runs_never_send_twice(tmp_path, pace, recipients):
    rng = random.Random(20261125)
    db_path = tmp_path / "kill.db"
    conn = init_db(db_path)
    conn.executemany("INSERT INTO recipients (campaign_id, email, first_name, created_at) VALUES (1, ?, 'Sam', 'x')",
                     [(f"r{i:03d}@example.com",) for i in range(recipients)])
    conn.close()

    # Each message is counted on arrival, then answered 50 ms later: most of a run's time is spent
    # in the window where a kill leaves a delivered message without its `sent` record.
    with SmtpSink(stall_after_data=0.05) as sink:
        env = {**os.environ, "DB_PATH": str(db_path), "DRY_RUN": "false", "TRANSPORT": "smtp",
               "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port), "SMTP_STARTTLS": "false",
               "SENDER_EMAIL": "jane@example.com", "DAILY_LIMIT": "100000", "TIMEZONE": "UTC", **pace}
        killed_mid_run = 0
        for _ in range(ROUNDS):
            runs = [start_run(env) for _ in range(rng.choice((1, 2, 3)))]
            time.sleep(rng.uniform(0.8, 3.0))  # the random moment of the kill, not a wait for a result
            for proc in runs:
                if proc.poll() is None and rng.random() < 0.85:
                    proc.send_signal(signal.SIGKILL)
                    killed_mid_run += 1
            for proc in runs:
                proc.wait(timeout=120)
                assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode()

        final = subprocess.run([sys.executable, "-m", "email_automation", "run"], env=env,
                               capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr
        counts = sink.counts()

    conn = connect(db_path, readonly=True)
    status = dict(conn.execute("SELECT email, status FROM recipients").fetchall())
    assert killed_mid_run > 0, "no run was killed while working; the test proved nothing"
    assert counts, "nothing was delivered"
    assert max(counts.values()) == 1, {e: n for e, n in counts.items() if n > 1}
    for email, delivered in counts.items():
        assert status[email] in ("sent", "unknown"), f"{email} was delivered but is {status[email]}"
    for email, state in status.items():
        assert state in ("sent", "unknown"), f"{email} left {state} after a clean final run"
        if state == "sent":
            assert counts.get(email) == 1, f"{email} is recorded sent but the sink never got it"
    logged = conn.execute("SELECT count(*) FROM send_log WHERE status = 'sending'").fetchone()[0]
    assert logged == 0
