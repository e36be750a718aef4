"""How much does the safety cost? Our run against a bare smtplib loop, same sink, same messages.

Both send N rendered messages to a loopback SMTP sink (aiosmtpd) with DELAY_SECONDS=0. The bare
loop reuses one connection and does nothing else; our run also renders, claims (a durable
commit), and records each outcome (another commit). Prints messages/s for both, the ratio, and
our per-message overhead in ms.

    python benchmarks/bench_run.py [--messages 500]
"""

from __future__ import annotations

import argparse
import random
import smtplib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_automation.config import load_settings  # noqa: E402
from email_automation.database import init_db, utc_now  # noqa: E402
from email_automation.email_templates import CampaignTemplate  # noqa: E402
from email_automation.messages import build_message  # noqa: E402
from email_automation.run_daily import run_daily  # noqa: E402
from email_automation.transports.smtp import SmtpTransport  # noqa: E402
from tests.smtp_sink import SmtpSink  # noqa: E402


def fill(db_path: Path, count: int):
    conn = init_db(db_path)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO recipients (campaign_id, email, first_name, company, created_at) VALUES (1, ?, ?, ?, 'x')",
        [(f"person{i}@example.com", f"Person{i}", f"Company {i % 97}") for i in range(count)],
    )
    conn.execute("COMMIT")
    return conn


def bare_loop(settings, conn, port: int) -> float:
    """smtplib over the already rendered messages: the floor any sender pays."""
    campaign = conn.execute("SELECT * FROM campaigns WHERE name = 'default'").fetchone()
    template = CampaignTemplate.from_campaign(campaign)
    rows = conn.execute("SELECT * FROM recipients ORDER BY id").fetchall()
    messages = [build_message(template.render(r, settings), to=r["email"], settings=settings, now=utc_now()) for r in rows]
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for message in messages:
            smtp.send_message(message)
    return time.perf_counter() - started


def our_run(settings, conn) -> float:
    transport = SmtpTransport(settings)
    started = time.perf_counter()
    report = run_daily(settings, conn, transport, now=utc_now, sleep=lambda s: None, rng=random.Random(0))
    elapsed = time.perf_counter() - started
    transport.close()
    assert report.sent == conn.execute("SELECT count(*) FROM recipients").fetchone()[0], report
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory() as tmp, SmtpSink() as sink:
        settings = load_settings(
            db_path=Path(tmp) / "bench.db", dry_run=False, transport="smtp", smtp_host="127.0.0.1",
            smtp_port=sink.port, smtp_starttls=False, sender_email="bench@example.com",
            delay_seconds=0, daily_limit=n, timezone="UTC", send_days="mon-sun", send_hours="00:00-24:00",
            max_new_per_company_per_day=n, max_contacts_per_company=n,
        )
        conn = fill(settings.db_path, n)
        bare = bare_loop(settings, conn, sink.port)
        ours = our_run(settings, conn)
        assert len(sink.deliveries) == 2 * n
    print(f"messages:               {n}")
    print(f"bare smtplib loop:      {n / bare:8.1f} msg/s")
    print(f"email-automation run:   {n / ours:8.1f} msg/s")
    print(f"ratio (ours / bare):    {bare / ours:8.2f}")
    print(f"our overhead / message: {(ours - bare) / n * 1000:8.2f} ms (render + claim + record)")


if __name__ == "__main__":
    main()
