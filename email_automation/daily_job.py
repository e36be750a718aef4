"""What `email-automation run` does, as one library call: events first, the batch, the summary.

The CLI builds the real clock, sleep and transport and formats the report; this module wires the
library steps in their order so a test (or a script) can run the whole job with fakes.
"""

from __future__ import annotations

import sqlite3

from .config import Settings
from .run_daily import RunOptions, RunReport, run_daily
from .summary_report import send_summary
from .transports.base import Transport


def run_job(settings: Settings, conn: sqlite3.Connection, transport: Transport, options: RunOptions | None = None, *,
            require_inbox: bool = False, **fields) -> RunReport:
    """Apply new SES events and read the inbox (real runs only), send today's batch with `options`
    (or its fields as keywords, see `RunOptions`), mail the summary; closes `transport`.

    Raises what `run_daily` raises (another run holds the lock, a template error before any send),
    and InboxRequiredError when `require_inbox` and the inbox cannot be read (nothing is sent).
    """
    options = RunOptions.of(options, fields)
    try:
        # A laptop dry run must not take the server's events off the queue. The queue and inbox
        # modules load only when configured: a run without them starts faster.
        if transport.name != "dry_run" and settings.ses_events_queue_url:
            from .event_queue import drain_before_run

            drain_before_run(settings, conn, now=options.now)  # yesterday's bounces first; never raises
        if transport.name != "dry_run" and (settings.imap_host or require_inbox):
            from .inbox import read_before_run

            read_before_run(settings, conn, now=options.now, require=require_inbox)  # overnight replies stop sends
        report = run_daily(settings, conn, transport, options)
        send_summary(settings, report, transport, now=options.now())
    finally:
        transport.close()
    return report
