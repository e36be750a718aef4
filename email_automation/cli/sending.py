"""Commands that send and watch: `run`, `status`, `events`."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (EXIT_BAD_INPUT, EXIT_STOPPED, DbOption, JsonOption, answer, app, cli_errors, open_database,
                     print_json, progress_bar, say, settings_for, text_table, warn)

EXIT_TERMINATED = 128 + signal.SIGTERM  # what a shell reports for a process SIGTERM ended
EVENT_NOTES_SHOWN = 20
RUN_JSON_KEYS = ("sent", "failed", "deferred", "skipped", "unknown", "remaining_today", "dry_run", "previewed", "steps",
                 "window")


@app.command()
@cli_errors
def run(
    db: DbOption = None,
    dry_run: Annotated[Optional[bool], typer.Option("--dry-run/--send", help="Write .eml files instead of sending (default: DRY_RUN, which is true until you set it to false).", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Send at most N in this run (never more than what is left of DAILY_LIMIT today).")] = None,
    log_file: Annotated[Optional[Path], typer.Option("--log-file", help="Also write the run's lines to this file, rotated at 1 MB x 5 (default: LOG_FILE).")] = None,
    require_inbox: Annotated[bool, typer.Option("--require-inbox", help="Stop (exit 3, nothing sent) if the inbox cannot be read first.")] = False,
    plan: Annotated[bool, typer.Option("--plan", help="Show what the next real run would send, who is held back and why, and (with SES) how its quota cuts the batch; sends and claims nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Send today's batch: at most DAILY_LIMIT a day, DELAY_SECONDS apart, never twice to anyone.

    Exit codes: 0 done (or another run is active), 1 an unexpected error, 2 bad configuration or
    template (a campaign whose template fails is held back, the others are sent), 3 stopped by an
    error that affects every message (credentials, unverified sender, paused account, quota), by a
    streak of time-outs, throttling or identical refusals, by the circuit breaker (a campaign or all
    sending paused), by a hung run holding the lock, or (--require-inbox) because the inbox could
    not be read; 130 Ctrl-C, 143 SIGTERM (the sends in flight recorded first).
    """
    import random
    import time

    from .. import logs
    from ..daily_job import run_job
    from ..database import utc_now
    from ..locking import RunLockedError
    from ..run_daily import RunOptions
    from ..transports import make_transport

    settings = settings_for(db, dry_run=dry_run, log_file=log_file)
    conn = open_database(settings)
    if plan:
        from ..plan import check_startable, inbox_line, plan_lines, plan_run, read_quota

        check_startable(settings)  # a run that would refuse to start: its own error line and exit code
        transport = make_transport(settings)
        try:
            planned = plan_run(conn, settings, now=utc_now(), quota=read_quota(transport), limit=limit)
        finally:
            transport.close()
        answer(as_json, planned.as_dict(), "\n".join(plan_lines(planned, ses=settings.transport == "ses",
                                                                inbox=inbox_line(conn, settings))))
        return
    _log_lines_to(sys.stderr if as_json else sys.stdout)
    logs.setup_file_logging(settings.log_file)
    transport = make_transport(settings)
    outbox = getattr(transport, "folder", None)
    try:
        with progress_bar(enabled=not as_json, total=None, label="Sending") as advance, _stopped_by_sigterm():
            options = RunOptions(now=utc_now, sleep=time.sleep, limit=limit, rng=random.Random(),
                                 on_outcome=lambda _: advance(1), transport_factory=lambda: make_transport(settings))
            report = run_job(settings, conn, transport, options, require_inbox=require_inbox)
    except Terminated:
        if as_json:
            print_json({"error": "terminated"})
        else:
            warn("Terminated.")
        raise typer.Exit(EXIT_TERMINATED) from None
    except RunLockedError as exc:  # not a failure: cron's overlapping start exits 0
        if exc.exit_code:  # a hung run holds the lock: a person must look (exit 3)
            raise
        answer(as_json, {"locked": True, "message": str(exc)}, str(exc))
        return
    if as_json:
        print_json(run_json(report, outbox))
    else:
        say(run_summary(report, outbox))
    for problem in report.template_errors:  # those campaigns were held back, the others went out
        warn(f"Error: {problem}")
    for line in report.paused:
        if line != report.fatal_error:  # that one is the "run stopped" line below
            warn(f"Paused: {line}")
    if report.fatal_error:
        warn(f"Error: run stopped: {report.fatal_error}")
        raise typer.Exit(EXIT_STOPPED)
    if report.template_errors:
        raise typer.Exit(EXIT_BAD_INPUT)
    if report.paused and not report.dry_run:  # a campaign stopped by the circuit breaker needs a person
        raise typer.Exit(EXIT_STOPPED)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, systemd, `timeout`) asked the run to stop: it stops as Ctrl-C stops it."""


@contextlib.contextmanager
def _stopped_by_sigterm():
    """While the run runs, SIGTERM raises Terminated in it, so that it stops as on Ctrl-C: nothing
    more starts, the claims waiting for a connection are undone and the sends in flight are
    recorded (the default action would end the process at once, each of them `unknown`)."""
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one would cut the recording short
        raise Terminated

    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def run_json(report, outbox: Path | None) -> dict:
    """`run --json`: the counts, where a dry run's files are, and why the run stopped (or null)."""
    data = {key: report.as_dict()[key] for key in RUN_JSON_KEYS}
    written = bool(report.dry_run and report.previewed)
    return data | {"outbox": str(outbox) if written else None, "stopped": report.fatal_error,
                   "held_back": list(report.template_errors), "paused": list(report.paused)}


def run_summary(report, outbox: Path | None) -> str:
    """The run's last line: counts, or for a dry run where the files are and how to send for real."""
    if report.dry_run:
        where = f"written to {outbox}/" if report.previewed else "written"
        return (f"Dry run: {report.previewed} message(s) {where} and nothing sent. "
                "To send for real, set DRY_RUN=false (or pass --send).")
    attempted = report.sent + report.failed + report.deferred + report.skipped + report.unknown
    if report.window:
        why = f"Nothing sent: {report.window.removesuffix(': nothing sent now')}. "
    elif not attempted and not report.remaining_today:
        why = "Nothing sent: today's limit is used up (DAILY_LIMIT, or the WARMUP_SCHEDULE step; the day of TIMEZONE). "
    else:
        why = ""
    return (why + f"Sent {report.sent}, failed {report.failed}, deferred {report.deferred}, skipped {report.skipped}, "
            f"unknown {report.unknown}; {report.remaining_today} left today.")


def _quiet_library_log() -> None:
    """For a command that prints what the library's warnings say in its own report: without a
    handler, Python's last-resort one would print each of them a second time on stderr
    (https://docs.python.org/3/library/logging.html#logging.lastResort)."""
    logger = logging.getLogger("email_automation")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())


def _log_lines_to(stream) -> None:
    """Plain `time email status id` lines, readable in cron.log."""
    from .. import logs

    logger = logging.getLogger("email_automation")
    ours = [h for h in logger.handlers if getattr(h, "_ea_console", False)]
    if ours:
        ours[0].stream = stream  # not setStream: the old stream may be closed already
        ours[0].setLevel(logging.NOTSET)  # heard again, if a reader that went away silenced it
    else:
        handler = logs.ConsoleHandler(stream)
        handler.setFormatter(logs.line_formatter())
        handler._ea_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@app.command()
@cli_errors
def status(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Recipients by status for each campaign, and today's sends against the daily limit."""
    from .. import reports
    from ..database import utc_now
    from ..sequences import step_summary

    settings = settings_for(db)
    conn = open_database(settings)
    summary = reports.status_summary(conn, now=utc_now(), tz=settings.tz, daily_limit=settings.daily_limit,
                                     warmup_schedule=settings.warmup_schedule)
    unknown = reports.unknown_recipients(conn)
    funnel = reports.funnel(conn)
    steps = step_summary(conn, now=utc_now(), tz=settings.tz, holidays=settings.holiday_dates,
                         stop_company=settings.stop_company_on_reply)
    if as_json:
        print_json(summary.as_dict() | {"unknown_recipients": [r["email"] for r in unknown]}
                   | {"funnel": {f.campaign: f.as_dict() for f in funnel}, "steps": steps}
                   | {"subject_variants": [v.as_dict() for v in reports.variant_replies(conn)]})
        return
    say(status_table(summary))
    for line in status_lines(summary, unknown, dry_run=settings.dry_run) + step_lines(steps):
        say(line)
    for line in reply_lines(funnel, reports.inbox_messages(conn, kinds=("reply",), limit=5), tz=settings.tz):
        say(line)
    if variants := reports.variant_replies(conn):
        say("Replies per subject variant:\n" + "\n".join(v.line() for v in variants))


def step_lines(steps) -> list[str]:
    """One line per campaign with follow-ups: each step's sent (known to have gone out, as the
    dashboard's Sent), unknown (may have), due, stopped and replied counts."""
    return [f"Steps in {name}: " + "; ".join(
        f"step {n} sent {c['sent']}" + (f", unknown {c['unknown']}" if c["unknown"] else "")
        + (f", due {c['due']}" if c["due"] else "")
        + (f", stopped before it {c['stopped']}" if c["stopped"] else "")
        + (f", replied {c['replied']}" if c["replied"] else "") for n, c in counts.items()) + "."
        for name, counts in steps.items()]


def reply_lines(funnel, latest, *, tz) -> list[str]:
    """The funnel of each campaign that has contacted (or marked) anyone, then the latest replies."""
    lines = [funnel_line(f) for f in funnel if f.contacted or f.not_mailed]
    return lines + [f"  {m.when(tz)} {m.from_email} ({m.company or m.email}): {m.subject}" for m in latest]


def funnel_line(f) -> str:
    """One campaign's funnel among the people mailed; those marked but never mailed are named apart,
    so a status set by hand before any send neither counts as contacted nor lifts the reply rate."""
    line = (f"Replies in {f.campaign}: {f.contacted} contacted -> {f.replied} replied ({f.reply_rate:.0%}) "
            f"-> {f.interview} interview -> {f.offer} offer")
    if f.not_mailed:
        line += f"; {f.not_mailed} more with a status but never mailed (not counted)"
    return line + "."


def status_table(summary) -> str:
    """One row per campaign: its state and its recipients by status."""
    statuses = ("pending", "sending", "sent", "failed", "skipped", "unknown")
    return text_table(("Campaign", "State", *(s.title() for s in statuses), "Total"),
                      [(c.name, c.state, *(c.counts[s] for s in statuses), c.total) for c in summary.campaigns])


SHOWN_DECISIONS = 10  # a terminal's worth: after an outage hundreds may be unknown


def status_lines(summary, unknown, *, dry_run: bool) -> list[str]:
    """Today against the limit, DRY_RUN, and a line per recipient that needs a decision (the first
    SHOWN_DECISIONS, then how many more)."""
    in_doubt = summary.counted_today - summary.sent_today
    lines = [f"Today ({summary.today}): {summary.sent_today} sent"
             + (f" and {in_doubt} sending or unknown" if in_doubt else "")
             + (f", {summary.deferred_today} deferred (refused for now or settled as not sent; still queued)"
               if summary.deferred_today else "")
             + f", {summary.counted_today} of DAILY_LIMIT {summary.daily_limit} used, {summary.remaining_today} left. "
             f"Suppressed addresses: {summary.suppressed}."]
    lines += [f"Limit: {summary.limit_note}."] if summary.limit_note else []
    lines += [f"Paused: {line}" for line in summary.paused]
    if dry_run:
        lines.append("DRY_RUN is on: runs write .eml files to a new folder in the outbox and send nothing.")
    lines += [f"Needs a decision: {row['email']} ({row['campaign']}) may or may not have been sent; "
              f"`email-automation resolve {row['email']} --sent` or `--pending`." for row in unknown[:SHOWN_DECISIONS]]
    if len(unknown) > SHOWN_DECISIONS:
        lines.append(f"Needs a decision: {len(unknown) - SHOWN_DECISIONS} more recipients may or may not have been "
                     "sent; `status --json` lists them all (unknown_recipients), the dashboard's Recipients tab too.")
    return lines


@app.command()
@cli_errors
def events(
    queue_url: Annotated[Optional[str], typer.Option("--queue-url", help="SQS queue subscribed to the SES event topic (default: SES_EVENTS_QUEUE_URL).")] = None,
    db: DbOption = None,
    wait: Annotated[Optional[int], typer.Option("--wait", min=0, max=20, show_default=False, help="Seconds each receive waits for messages to arrive (SQS long polling, 0-20; default 2).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Apply SES bounces, complaints and deliveries from the SQS queue: suppress, reconcile, record.

    Exit codes: 0 every message applied, 1 a message could not be applied (it stays on the queue)
    or SQS refused, 2 no queue or region configured.
    """
    from .. import event_queue
    from ..database import utc_now

    settings = settings_for(db)
    _quiet_library_log()
    url = event_queue.check_queue_url(queue_url or settings.ses_events_queue_url)
    wait = event_queue.DEFAULT_WAIT_SECONDS if wait is None else wait
    report = event_queue.drain_queue(settings, open_database(settings), now=utc_now, queue_url=url, wait_seconds=wait)
    if as_json:
        print_json(report.as_dict())
    else:
        say(f"SES events: {report.summary()}.")
        for note in report.notes[:EVENT_NOTES_SHOWN]:
            say(f"  {note}")
        if len(report.notes) > EVENT_NOTES_SHOWN:
            say(f"  ... and {len(report.notes) - EVENT_NOTES_SHOWN} more")
    if report.failed:
        warn(f"Error: {report.failed} message(s) could not be applied and stay on the queue "
             "(its dead-letter queue takes them after maxReceiveCount receives).")
        raise typer.Exit(1)
