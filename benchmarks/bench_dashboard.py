"""Does the dashboard stay quick on a big log? Its queries against loading the table into pandas.

    python benchmarks/bench_dashboard.py                  # 1,000,000 send_log rows
    python benchmarks/bench_dashboard.py --rows 200000

Fills a fresh database (init_db, so the real schema and indexes) with ~50k recipients and a
send_log spread over ~365 days, in one transaction with executemany, and the SES events a
configuration set publishes for them (a send and a delivery per sent message, 2% hard bounces,
0.1% complaints: 1.8M events). Then times, for the default 30-day filter and without the page's
cache, every query the first view and the Recipients and Replies and Campaigns tabs make (best
of --repeat), then the filters a user can pick over the whole year (the first view, its last
log page and the Deliverability tab; median of --repeat), and next to it `pandas.read_sql` of
the whole send_log: what a page that loaded everything and aggregated in pandas would pay on
each view.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_automation.config import load_settings  # noqa: E402
from email_automation.database import init_db, iso  # noqa: E402
from email_automation.dashboard_data import Reports  # noqa: E402

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)
LOG_STATUSES = ["sent"] * 900 + ["failed"] * 70 + ["dry_run"] * 25 + ["unknown"] * 5


def fill(path: Path, *, rows: int, recipients: int, days: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    conn = init_db(path)
    conn.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at)"
                 " SELECT 'spring', subject_template, html_template, created_at FROM campaigns")
    created = iso(NOW - timedelta(days=days + 1))
    statuses = ["sent"] * 80 + ["pending"] * 15 + ["failed"] * 4 + ["unknown"]
    chosen = [rng.choice(statuses) for _ in range(recipients)]
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO recipients (campaign_id, email, first_name, company, status, last_error, created_at)"
        " VALUES (?, ?, 'Ann', 'Acme', ?, ?, ?)",
        ((1 + n % 2, f"person{n}@company{n % 3000}.example.com", status,
          "550: mailbox does not exist" if status == "failed" else None, created)
         for n, status in enumerate(chosen)),
    )
    conn.execute("INSERT INTO campaign_steps (campaign_id, step, after_days, html_template, created_at)"
                 " VALUES (1, 2, 3, '<p>Following up</p>', ?)", (created,))
    conn.executemany(
        "INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, finished_at, status,"
        " message_id, subject, error, error_class, step, subject_variant, transport)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ses')",
        _log_rows(rng, rows=rows, recipients=recipients, days=days,
                  mailed=[n + 1 for n, status in enumerate(chosen) if status != "pending"]),
    )
    # When each mailed recipient's first message went, as a run records it: the follow-up step
    # is due three business days later, so most of campaign 1's are due now.
    conn.execute("UPDATE recipients SET sent_at = (SELECT max(l.attempted_at) FROM send_log l"
                 " WHERE l.recipient_id = recipients.id AND l.step = 1 AND l.status IN ('sent', 'unknown'))"
                 " WHERE status IN ('sent', 'unknown')")
    conn.execute(EVENTS)
    conn.execute("COMMIT")
    conn.close()


# What SES reports for the sends, as `email-automation events` stores it (received when sent):
# Sends and Deliveries for each, a hard bounce instead of the delivery for every 50th, a
# complaint for every 1000th (README, "Bounces and complaints", the event types to publish).
EVENTS = """
INSERT INTO ses_events (dedupe_key, kind, email, message_id, attempt_id, detail, event_at, received_at)
SELECT l.attempt_id || '/' || k.kind, k.kind, r.email, l.message_id, l.attempt_id,
       CASE k.kind WHEN 'BOUNCED_PERMANENT' THEN '550 5.1.1 user unknown' END, l.finished_at, l.finished_at
FROM send_log l CROSS JOIN recipients r ON r.id = l.recipient_id
JOIN (SELECT 'SENT' AS kind UNION ALL SELECT 'DELIVERED' UNION ALL SELECT 'BOUNCED_PERMANENT' UNION ALL SELECT 'COMPLAINED') k
  ON k.kind = 'SENT' OR (k.kind = 'DELIVERED' AND l.id % 50 != 7) OR (k.kind = 'BOUNCED_PERMANENT' AND l.id % 50 = 7)
     OR (k.kind = 'COMPLAINED' AND l.id % 1000 = 3)
WHERE l.status = 'sent'
"""


def _log_rows(rng: random.Random, *, rows: int, recipients: int, days: int, mailed: list[int]):
    """Rows in time order (as a real log grows), the batch day in Berlin like the settings below.

    A first message that may have gone (sent, unknown) belongs to a recipient no longer pending
    (`mailed`), as the schema's never-twice triggers require. Campaign 2 tries two subjects (its
    recipients have even ids): each of its sends names the variant it used, as a run records it."""
    start = NOW - timedelta(days=days)
    step = (NOW - start) / rows
    for n in range(rows):
        at = start + step * n
        status = rng.choice(LOG_STATUSES)
        stamp = iso(at)
        sequence_step = 2 if n % 4 == 0 else 1  # a quarter are follow-ups
        counted = sequence_step == 1 and status in ("sent", "unknown")
        recipient = rng.choice(mailed) if counted else rng.randrange(1, recipients + 1)
        variant = ("Interested in joining Acme", "A role at Acme?")[n % 2] if recipient % 2 == 0 else None
        yield (recipient, f"{n:032x}", (at + timedelta(hours=1)).date().isoformat(),
               stamp, stamp, status, f"0100-{n:x}@email.amazonses.com" if status == "sent" else None,
               variant or "Interested in joining Acme", "MessageRejected: address blacklisted" if status == "failed" else None,
               "permanent" if status == "failed" else None, sequence_step, variant)


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def median_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def first_view(reports: Reports, f, *, last_page: bool = False) -> None:
    """The queries that depend on the sidebar's filters in the first view, as the page makes them:
    the summary (metrics, by status, per day), the rates over its sends, one log page (the first,
    or the last as a user reaches it by typing its number)."""
    summary = reports.summary(f)
    reports.reputation(f, sent=summary.sent)
    page = max(1, -(-summary.total // 50)) if last_page else 1
    reports.log_page(f, page=page, page_size=50)


def deliverability_tab(reports: Reports, f) -> None:
    """The SES events tab's own queries for the filter: events per kind, then the first page."""
    if reports.event_counts(f):
        reports.event_page(f, page=1, page_size=50)


# Every way a user narrows the year, each as the sidebar makes it; "example" is in every address,
# "1" in 63% of them, "person12" in 2%, "person12345@" is one address.
YEAR_FILTERS = (("no filter", {}), ("campaign", {"campaign": "spring"}), ("status sent", {"status": "sent"}),
                ("status failed", {"status": "failed"}), ("status unknown", {"status": "unknown"}),
                ("broad search 'example'", {"email": "example"}), ("search '1' (63%)", {"email": "1"}),
                ("search 'person12' (2%)", {"email": "person12"}), ("one address", {"email": "person12345@"}),
                ("campaign + sent + search '1'", {"campaign": "spring", "status": "sent", "email": "1"}))


def view_queries(reports: Reports) -> dict[str, list]:
    """The calls each uncached view of the page makes, as {view: [(label, thunk)]}: the first view
    (the metrics, the Activity tab and the template editor every tab draws), then the Recipients,
    Replies and Campaigns tabs' own calls (a click on one within the page's five-second cache adds nothing
    else). Each call gets a Reports of its own, so none reuses the follow-ups another call read."""
    f = reports.default_filter()
    sent = reports.summary(f).sent  # the page passes the summary's count to the rates
    fresh = partial(replace, reports)
    return {
        "first view": [
            ("campaigns", reports.campaigns),
            ("summary (metrics, by status, per day)", lambda: reports.summary(f)),
            ("bounce and complaint rates", lambda: reports.reputation(f, sent=sent)),
            ("today vs DAILY_LIMIT", reports.today),
            ("pending / unknown counts", reports.recipient_counts),
            ("log page 1 (50 rows)", lambda: reports.log_page(f, page=1, page_size=50)),
            ("editor: templates, steps, addresses", lambda: (reports.drafts("default"), reports.steps("default"),
                                                             reports.recipient_emails("default"))),
        ],
        "Recipients tab": [
            ("queue (first 200)", lambda: reports.pending_queue(limit=200)),
            ("queue's send windows now", reports.closed_zones),
            ("unknown recipients", reports.unknown),
            ("failed recipients (200)", lambda: reports.failed(limit=200)),
            ("follow-ups to come and per step", lambda: (lambda r: (r.sequences(limit=200), r.step_counts()))(fresh())),
        ],
        "Replies tab": [
            ("replies and other answers (200)", lambda: (reports.inbox_messages(("reply",), limit=200),
                                                         reports.inbox_messages(("auto_reply", "bounce", "unsubscribe"),
                                                                                limit=200))),
            ("funnel per campaign", reports.funnel),
            ("sent and replies per step", lambda: fresh().step_counts()),
            ("reply rate per subject variant", reports.variant_replies),
        ],
        "Campaigns tab": [
            ("next run (run --plan's plan)", lambda: reports.next_run("default")),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--recipients", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        started = time.perf_counter()
        fill(path, rows=args.rows, recipients=args.recipients, days=args.days)
        print(f"filled {args.rows:,} send_log rows, {args.recipients:,} recipients, {args.days} days "
              f"in {time.perf_counter() - started:.1f}s ({path.stat().st_size / 1e6:.0f} MB)")
        settings = load_settings(db_path=path, timezone="Europe/Berlin", daily_limit=80)
        reports = Reports(path, settings, now=lambda: NOW)
        f = reports.default_filter()
        print(f"filter: batch days {f.start} .. {f.end}: {reports.summary(f).total:,} rows\n")

        totals = {}
        for view, queries in view_queries(reports).items():
            totals[view] = 0.0
            for label, thunk in queries:
                seconds = best_of(args.repeat, thunk)
                totals[view] += seconds
                print(f"  {label:<36} {seconds * 1000:8.1f} ms")
            print(f"  {view + ', all its queries':<36} {totals[view] * 1000:8.1f} ms\n")
        total = totals["first view"]
        deep = best_of(args.repeat, lambda: reports.log_page(f, page=1000, page_size=50))
        print(f"  {'(log page 1000, offset 49,950)':<36} {deep * 1000:8.1f} ms")
        narrowed_filters = (("campaign", replace(f, campaign="spring")), ("email search", replace(f, email="person12")),
                            ("status failed", replace(f, status="failed")))
        for label, narrowed in narrowed_filters:
            seconds = best_of(args.repeat, lambda n=narrowed: first_view(reports, n))
            print(f"  {'(metrics+chart+page, ' + label + ')':<36} {seconds * 1000:8.1f} ms")
        export = best_of(1, lambda: reports.log_csv(f))
        print(f"  {'(CSV export of the filter)':<36} {export * 1000:8.1f} ms   on click only\n")

        year = reports.default_filter(args.days)
        print(f"a year: batch days {year.start} .. {year.end}, median of {args.repeat}"
              " (first view: summary, rates, log page 1 / the last page; Deliverability: events per kind, page 1)")
        print(f"  {'filter':<30} {'first view':>10} {'last page':>10} {'SES events':>10}")
        for label, narrowing in YEAR_FILTERS:
            narrowed = replace(year, **narrowing)
            first = median_of(args.repeat, lambda n=narrowed: first_view(reports, n))
            last = median_of(args.repeat, lambda n=narrowed: first_view(reports, n, last_page=True))
            events = ("" if narrowed.campaign or narrowed.status else
                      f"{median_of(args.repeat, lambda n=narrowed: deliverability_tab(reports, n)) * 1000:8.0f} ms")
            print(f"  {label:<30} {first * 1000:7.0f} ms {last * 1000:7.0f} ms {events:>10}")
        print()

        import pandas as pd

        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
            whole = best_of(max(1, args.repeat // 2), lambda: pd.read_sql("SELECT * FROM send_log", conn))
        print(f"  {'pandas.read_sql(whole send_log)':<36} {whole * 1000:8.1f} ms   (before any aggregation)")
        print(f"\nratio: the first view's queries take {total / whole:.1%} of the time of loading the table "
              f"({whole / total:.0f}x faster)")


if __name__ == "__main__":
    main()
