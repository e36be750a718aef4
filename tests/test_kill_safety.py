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
from datetime import timedelta

import pytest

from email_automation.database import connect, init_db, iso, transaction, utc_now
from email_automation.sequences import add_step

from .smtp_sink import SmtpSink

RECIPIENTS = 80
ROUNDS = 6  # each kills mid-send (see kill_rounds): more such kills than 12 rounds at fixed delays gave


def start_run(env):
    return subprocess.Popen([sys.executable, "-m", "email_automation", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def sending_started(sink: SmtpSink, before: int, runs) -> bool:
    """Wait until the sink accepts a message past `before` (a run is inside claim -> send -> record);
    False if every run exited first (nobody was left to send)."""
    while not sink.wait_for(before + 1, timeout=0.05):
        if all(proc.poll() is not None for proc in runs):
            return sink.wait_for(before + 1, timeout=0)
    return True


def kill_rounds(env, sink: SmtpSink, rng, rounds: int) -> int:
    """Start 1-3 overlapping runs per round and SIGKILL most of them at a random moment while they
    send; then one clean run. Returns how many were killed while sending.

    The moment is counted from the sink's first delivery of the round, not from the start: a kill
    during the interpreter's start-up proves nothing, and waiting out start-up on a loaded machine
    is what made a fixed delay slow and its kills land anywhere."""
    killed_mid_send = 0
    for _ in range(rounds):
        before = len(sink.deliveries)
        runs = [start_run(env) for _ in range(rng.choice((1, 2, 3)))]
        sending = sending_started(sink, before, runs)
        time.sleep(rng.uniform(0.0, 0.4))  # the random moment of the kill, within the sending
        for proc in runs:
            if proc.poll() is None and rng.random() < 0.85:
                proc.send_signal(signal.SIGKILL)
                killed_mid_send += sending
        for proc in runs:
            proc.wait(timeout=120)
            assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode()
    final = subprocess.run([sys.executable, "-m", "email_automation", "run"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    return killed_mid_send


def make_db(db_path, recipients: int):
    conn = init_db(db_path)
    conn.executemany("INSERT INTO recipients (campaign_id, email, first_name, created_at) VALUES (1, ?, 'Sam', 'x')",
                     [(f"r{i:03d}@example.com",) for i in range(recipients)])
    conn.close()


def sink_env(db_path, sink):
    return {**os.environ, "DB_PATH": str(db_path), "DRY_RUN": "false", "TRANSPORT": "smtp",
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port), "SMTP_STARTTLS": "false",
            "SENDER_EMAIL": "jane@example.com", "DELAY_SECONDS": "0.02", "DAILY_LIMIT": "100000",
            "TIMEZONE": "UTC", "STOP_COMPANY_ON_REPLY": "false"}


@pytest.mark.slow
@pytest.mark.parametrize("pace, recipients", [
    ({"DELAY_SECONDS": "0.02"}, RECIPIENTS),
    # Four sends in flight at once and four claimed waiting: a kill leaves up to eight claims without
    # their outcome.
    ({"DELAY_SECONDS": "0", "SEND_CONCURRENCY": "4"}, 4 * RECIPIENTS),
], ids=["one-at-a-time", "concurrent"])
def test_random_sigkills_and_overlapping_runs_never_send_twice(tmp_path, pace, recipients):
    rng = random.Random(20261125)
    db_path = tmp_path / "kill.db"
    make_db(db_path, recipients)

    # Each message is counted on arrival, then answered 50 ms later: most of a run's time is spent
    # in the window where a kill leaves a delivered message without its `sent` record.
    with SmtpSink(stall_after_data=0.05) as sink:
        killed_mid_send = kill_rounds({**sink_env(db_path, sink), **pace}, sink, rng, ROUNDS)
        counts = sink.counts()

    conn = connect(db_path, readonly=True)
    status = dict(conn.execute("SELECT email, status FROM recipients").fetchall())
    assert killed_mid_send > 0, "no run was killed while sending; the test proved nothing"
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


@pytest.mark.slow
def test_random_sigkills_with_a_follow_up_step_never_send_a_step_twice(tmp_path):
    """Step 1 under kills, then (the clock moved on: step 1's sends dated ten days back) step 2
    under kills: each recipient gets each step at most once, and `sent` means delivered."""
    rng = random.Random(20261130)
    db_path = tmp_path / "kill.db"
    make_db(db_path, RECIPIENTS // 2)
    conn = init_db(db_path)
    add_step(conn, "default", after_days=1, html="<p>Following up, {{ first_name }}.</p>", now=utc_now())
    conn.close()
    with SmtpSink(stall_after_data=0.05) as sink:
        env = sink_env(db_path, sink)
        killed = kill_rounds(env, sink, rng, ROUNDS // 2)
        conn = connect(db_path)
        with transaction(conn):
            conn.execute("UPDATE recipients SET sent_at = ?", (iso(utc_now() - timedelta(days=10)),))
        conn.close()
        killed += kill_rounds(env, sink, rng, ROUNDS // 2)
        counts = sink.counts()

    conn = connect(db_path, readonly=True)
    assert killed > 0, "no run was killed while sending; the test proved nothing"
    rows = conn.execute("SELECT r.email, r.status, r.step, (SELECT count(*) FROM send_log l WHERE l.recipient_id = r.id"
                        " AND l.status = 'sent') AS sent, (SELECT count(*) FROM send_log l WHERE l.recipient_id = r.id"
                        " AND l.status = 'unknown') AS unknown FROM recipients r").fetchall()
    assert any(row["step"] == 2 and row["status"] == "sent" for row in rows), "no follow-up went out"
    for row in rows:
        delivered = counts.get(row["email"], 0)
        assert delivered <= 2, f"{row['email']} got {delivered} messages from a two-step sequence"
        assert row["sent"] <= delivered <= row["sent"] + row["unknown"], dict(row)
        assert (row["status"], row["step"]) in (("sent", 2), ("unknown", 1), ("unknown", 2)), dict(row)
    assert conn.execute("SELECT count(*) FROM send_log WHERE status = 'sending'").fetchone()[0] == 0


@pytest.mark.parametrize("concurrency", ["4", "1"])
def test_sigterm_stops_a_run_as_ctrl_c_does_and_records_what_went_out(tmp_path, concurrency):
    """`kill PID`, systemd or `timeout` ask with SIGTERM: nothing more starts, the claims waiting for
    a connection are pending again and the sends in flight are recorded; nobody is left unknown.
    One at a time too: the sink holds each message 0.2 s before it answers, so the signal lands
    while a send is in flight (its message already counted by the sink)."""
    db_path = tmp_path / "term.db"
    make_db(db_path, 40)
    with SmtpSink(stall_after_data=0.2) as sink:
        env = {**sink_env(db_path, sink), "DELAY_SECONDS": "0", "SEND_CONCURRENCY": concurrency}
        proc = subprocess.Popen([sys.executable, "-m", "email_automation", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert sink.wait_for(4, timeout=120), "the run started sending"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        delivered = len(sink.deliveries)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "Terminated." and "Traceback" not in err
    conn = connect(db_path)
    counts = dict(conn.execute("SELECT status, count(*) FROM recipients GROUP BY status").fetchall())
    conn.close()
    assert counts.get("sending", 0) == 0, "every send that went out is recorded"
    assert counts["sent"] == delivered < 40
    assert counts["pending"] == 40 - delivered


def test_a_reply_to_a_send_a_kill_left_mid_send_stops_its_follow_up(tmp_path):
    """kill -9 while the sink holds the message: the claim stayed `sending` with no Message-ID, so
    the inbox filed the recipient's reply as "not about a message we sent", the next run made the
    send `unknown`, and once it was resolved as sent the follow-up went out, outside the thread."""
    import email

    from email_automation import inbox_store, run_daily
    from email_automation.config import load_settings
    from email_automation.mail_classify import classify

    from .fakes import RecordingSleep, ScriptedTransport

    db_path = tmp_path / "kill.db"
    make_db(db_path, 1)
    conn = init_db(db_path)
    add_step(conn, "default", after_days=1, html="<p>Following up, {{ first_name }}.</p>", now=utc_now())
    conn.close()
    with SmtpSink(stall_after_data=5) as sink:
        run = start_run(sink_env(db_path, sink))
        assert sending_started(sink, 0, [run]), run.stderr.read().decode()
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
        delivered = sink.deliveries[0].message
    conn = connect(db_path)
    assert [tuple(r) for r in conn.execute("SELECT status, message_id FROM send_log")] == [
        ("sending", delivered["Message-ID"])]
    reply = (f"From: r000@example.com\r\nTo: jane@example.com\r\nSubject: Re: {delivered['Subject']}\r\n"
             f"Message-ID: <answer@example.com>\r\nIn-Reply-To: {delivered['Message-ID']}\r\n"
             f"Date: {email.utils.format_datetime(utc_now())}\r\n\r\nHappy to talk.\r\n").encode()
    found = classify(email.message_from_bytes(reply), inbox_store.DbSentLookup(conn))
    assert found.kind == "reply"
    inbox_store.store(conn, inbox_store.Position("INBOX", 1, 1), inbox_store.dedupe_key(found.message_id, b""), found,
                      now=utc_now())

    later = lambda: utc_now() + timedelta(days=7)  # noqa: E731 - past step 2's wait
    settings = load_settings(db_path=str(db_path), sender_email="jane@example.com", delay_seconds=0, timezone="UTC")
    transport = ScriptedTransport()
    report = run_daily.run_daily(settings, conn, transport, now=later, sleep=RecordingSleep())
    assert report.recovered == 1 and transport.delivered == []
    assert [tuple(r) for r in conn.execute("SELECT l.status, r.status, r.application_status FROM send_log l"
                                           " JOIN recipients r ON r.id = l.recipient_id")] == [("sent", "sent", "replied")]
