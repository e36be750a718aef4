"""What does re-checking the per-company limits inside the claim cost? Claims with and without it.

    python benchmarks/bench_claim.py                      # 100,000 recipients, half of them contacted
    python benchmarks/bench_claim.py --recipients 20000

Fills a fresh database (init_db: the real schema and indexes) with one campaign of --recipients
people at 3,000 companies, half of them already sent, and a day's first messages in send_log.
Then claims pending recipients in rounds, alternating a round without the company check and a
round with it (the run's settings), so a busy machine slows both alike; prints ms per claim for
each, the ratio and the difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_automation import ledger  # noqa: E402
from email_automation.database import init_db, iso  # noqa: E402
from email_automation.politeness import Caps  # noqa: E402

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)
TZ = ZoneInfo("Europe/Berlin")
COMPANIES = 3000


def fill(path: Path, recipients: int, sent_today: int) -> None:
    conn = init_db(path)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO recipients (campaign_id, email, company, status, created_at) VALUES (1, ?, ?, ?, 'x')",
        ((f"p{n}@c{n % COMPANIES}.example.com", f"Company {n % COMPANIES}", "sent" if n % 2 else "pending")
         for n in range(recipients)))
    conn.executemany(
        "INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, transport)"
        " VALUES (?, ?, ?, ?, 'sent', 'ses')",
        ((2 * n + 2, f"a{n}", NOW.astimezone(TZ).date().isoformat(), iso(NOW)) for n in range(sent_today)))
    conn.execute("COMMIT")
    conn.close()


def claims(conn, ids: list[int], caps: Caps | None) -> float:
    """Seconds per claim over `ids` (each claimed once)."""
    started = time.perf_counter()
    for rid in ids:
        claim = ledger.claim(conn, rid, now=NOW, tz=TZ, daily_limit=10**9, subject="Hi", transport="ses",
                             companies=caps)
        assert isinstance(claim, ledger.Claim), claim
    return (time.perf_counter() - started) / len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--sent-today", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=40)
    args = parser.parse_args()
    caps = Caps(per_day=10**6, per_campaign=10**6)  # never refuses: every claim pays the whole check
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        fill(path, args.recipients, args.sent_today)
        conn = init_db(path)
        pending = iter(range(1, args.recipients + 1, 2))
        without, with_check = [], []
        for _ in range(args.rounds):
            without.append(claims(conn, [next(pending) for _ in range(args.per_round)], None))
            with_check.append(claims(conn, [next(pending) for _ in range(args.per_round)], caps))
        a, b = statistics.median(without) * 1000, statistics.median(with_check) * 1000
        print(f"{args.recipients:,} recipients ({args.recipients // 2:,} contacted), {args.rounds} rounds of "
              f"{args.per_round} claims each way, median of rounds:")
        print(f"  claim without the company check: {a:7.2f} ms")
        print(f"  claim with the company check:    {b:7.2f} ms  (x{b / a:.2f}, +{b - a:.2f} ms per claim)")
        conn.close()


if __name__ == "__main__":
    main()
