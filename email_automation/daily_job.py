"""What `email-automation run` does, as one library call: events first, the batch, the summary.

The CLI builds the real clock, sleep and transport and formats the report; this module wires the
library steps in their order so a test (or a script) can run the whole job with fakes.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from datetime import datetime

from .config import Settings
from .event_queue import drain_before_run
from .run_daily import Outcome, RunReport, run_daily
from .summary_report import send_summary
from .transports.base import Transport


def run_job(
    settings: Settings,
    conn: sqlite3.Connection,
    transport: Transport,
    *,
    now: Callable[[], datetime],
    sleep: Callable[[float], None],
    limit: int | None = None,
    rng: random.Random | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    transport_factory: Callable[[], Transport] | None = None,
    require_inbox: bool = False,
) -> RunReport:
    """Apply new SES events and read the inbox (real runs only), send today's batch, mail the
    summary; closes `transport`.

    `transport_factory` makes the extra transports of concurrent sends (SEND_CONCURRENCY).

    Raises what `run_daily` raises (another run holds the lock, a template error before any send),
    and InboxRequiredError when `require_inbox` and the inbox cannot be read (nothing is sent).
    """
    from .inbox import read_before_run  # IMAPClient only when a job runs

    try:
        if transport.name != "dry_run":  # a laptop dry run must not take the server's events off the queue
            drain_before_run(settings, conn, now=now)  # yesterday's bounces first; never raises
            read_before_run(settings, conn, now=now, require=require_inbox)  # overnight replies stop sends
        report = run_daily(settings, conn, transport, now=now, sleep=sleep, limit=limit, rng=rng,
                           on_outcome=on_outcome, transport_factory=transport_factory)
        send_summary(settings, report, transport, now=now())
    finally:
        transport.close()
    return report
