"""The `email-automation` command: wiring only. Each command builds settings, makes one library
call and formats its result; a library error becomes one `Error: ...` line and an exit code."""

from __future__ import annotations

import functools
import json
import logging
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import admin, logs, reports
from .config import Settings, describe_settings, load_settings
from .database import DEFAULT_CAMPAIGN, get_campaign, init_db, open_db, update_campaign_templates, utc_now
from .errors import EmailAutomationError

app = typer.Typer(
    help="Send personalized outreach email in small, safe daily batches (Amazon SES or SMTP), "
    "with every attempt logged in SQLite. DRY_RUN is on until you turn it off.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
template_app = typer.Typer(help="Show or change a campaign's subject and body templates.", no_args_is_help=True)
app.add_typer(template_app, name="template")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DbOption = Annotated[Optional[Path], typer.Option("--db", help="SQLite database file (default: DB_PATH or email_automation.db).")]
CampaignOption = Annotated[Optional[str], typer.Option("--campaign", "-c", help="Campaign name (default: all, or 'default' where one is needed).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def cli_errors(fn):
    """Turn the library's errors into one line on stderr and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EmailAutomationError as exc:
            code = getattr(exc, "exit_code", 1)
            (out if code == 0 else err).print(f"{'' if code == 0 else 'Error: '}{exc}", markup=False)
            raise typer.Exit(code) from None
        except sqlite3.Error as exc:  # e.g. "database is locked" past the busy timeout, a full disk
            err.print(f"Error: database: {exc}", markup=False)
            raise typer.Exit(1) from None

    return wrapper


def settings_for(db: Path | None = None, **overrides) -> Settings:
    return load_settings(db_path=db, **overrides)


@app.command()
@cli_errors
def init(db: DbOption = None) -> None:
    """Create the database (or upgrade an older one) with a 'default' campaign. Safe to run again."""
    settings = settings_for(db)
    init_db(settings.db_path).close()
    out.print(f"Database ready: {settings.db_path}")


@app.command("config")
@cli_errors
def show_config(db: DbOption = None) -> None:
    """Print the effective settings (secrets masked) and where each came from."""
    overrides = {"db_path": db}
    settings = settings_for(db)
    table = Table("Variable", "Value", "From", box=None, pad_edge=False)
    for name, value, source in describe_settings(settings, overrides):
        table.add_row(name, value, source)
    out.print(table)


@app.command("import")
@cli_errors
def import_file(
    file: Annotated[Path, typer.Argument(help="CSV file with an email column (UTF-8 or Windows-1252; , ; or tab).")],
    db: DbOption = None,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign to add the recipients to (created if new).")] = DEFAULT_CAMPAIGN,
    rejects: Annotated[Optional[Path], typer.Option("--rejects", help="Where to write invalid rows (default: FILE.rejects.csv).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Add recipients from a CSV file; duplicates are skipped and invalid rows written to a rejects file."""
    from .import_csv import import_csv

    settings = settings_for(db)
    conn = open_db(settings.db_path)
    with _progress_bar(enabled=not as_json, total=file.stat().st_size if file.is_file() else None,
                       label=f"Importing {file.name}") as advance:
        report = import_csv(conn, file, campaign=campaign, rejects_path=rejects, progress=advance)
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    out.print(f"{file}: {report.inserted} added to campaign '{campaign}', "
              f"{report.duplicates} duplicate(s) skipped, {report.invalid} invalid.")
    for reject in report.rejects[:20]:
        out.print(f"  {file}:{reject.row}: {reject.email!r}: {reject.reason}", markup=False)
    if report.invalid > 20:
        out.print(f"  ... and {report.invalid - 20} more")
    if report.rejects_file:
        out.print(f"Invalid rows written to {report.rejects_file}")


@app.command()
@cli_errors
def status(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Recipients by status for each campaign, and today's sends against the daily limit."""
    settings = settings_for(db)
    conn = open_db(settings.db_path)
    summary = reports.status_summary(conn, now=utc_now(), tz=settings.tz, daily_limit=settings.daily_limit)
    unknown = reports.unknown_recipients(conn)
    funnel = reports.funnel(conn)
    if as_json:
        print(json.dumps(summary.as_dict() | {"unknown_recipients": [r["email"] for r in unknown]}
                         | {"funnel": {f.campaign: f.as_dict() for f in funnel}}))
        return
    table = Table("Campaign", "State", "Pending", "Sending", "Sent", "Failed", "Skipped", "Unknown", "Total", box=None)
    for c in summary.campaigns:
        n = c.counts
        table.add_row(c.name, c.state, *(str(n[s]) for s in ("pending", "sending", "sent", "failed", "skipped", "unknown")), str(c.total))
    out.print(table)
    in_doubt = summary.counted_today - summary.sent_today
    out.print(f"Today ({summary.today}): {summary.sent_today} sent"
              + (f" and {in_doubt} sending or unknown" if in_doubt else "")
              + f", {summary.counted_today} of DAILY_LIMIT {summary.daily_limit} used, {summary.remaining_today} left. "
              f"Suppressed addresses: {summary.suppressed}.")
    for f in funnel:
        if f.contacted:
            out.print(f"Replies in {f.campaign}: {f.contacted} contacted -> {f.replied} replied ({f.reply_rate:.0%}) "
                      f"-> {f.interview} interview -> {f.offer} offer.", markup=False)
    for m in reports.inbox_messages(conn, kinds=("reply",), limit=5):
        out.print(f"  {m.dated_at[:10]} {m.from_email} ({m.company or m.email}): {m.subject}", markup=False)
    if settings.dry_run:
        out.print("DRY_RUN is on: runs write .eml files to the outbox and send nothing.")
    for row in unknown:
        out.print(f"Needs a decision: {row['email']} ({row['campaign']}) may or may not have been sent; "
                  f"`email-automation resolve {row['email']} --sent` or `--pending`.", markup=False)


@app.command()
@cli_errors
def run(
    db: DbOption = None,
    dry_run: Annotated[Optional[bool], typer.Option("--dry-run/--send", help="Write .eml files instead of sending (default: DRY_RUN, which is true until you set it to false).", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Send at most N in this run (never more than what is left of DAILY_LIMIT today).")] = None,
    log_file: Annotated[Optional[Path], typer.Option("--log-file", help="Also write the run's lines to this file, rotated at 1 MB x 5 (default: LOG_FILE).")] = None,
    require_inbox: Annotated[bool, typer.Option("--require-inbox", help="Stop (exit 3, nothing sent) if the inbox cannot be read first.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Send today's batch: at most DAILY_LIMIT a day, DELAY_SECONDS apart, never twice to anyone.

    Exit codes: 0 done (or another run is active), 1 an unexpected error, 2 bad configuration or
    template, 3 stopped by an error that affects every message (credentials, unverified sender,
    paused account, quota) or by a streak of time-outs, throttling or identical refusals, or
    (--require-inbox) because the inbox could not be read.
    """
    from .event_queue import drain_before_run
    from .inbox import read_before_run
    from .run_daily import run_daily
    from .summary_report import send_summary
    from .transports import make_transport

    settings = settings_for(db, dry_run=dry_run, log_file=log_file)
    conn = open_db(settings.db_path)
    _log_lines_to(sys.stderr if as_json else sys.stdout)
    logs.setup_file_logging(settings.log_file)
    transport = make_transport(settings)
    try:
        if transport.name != "dry_run":  # a laptop dry run must not take the server's events off the queue
            drain_before_run(settings, conn, now=utc_now)  # yesterday's bounces first; never raises
            read_before_run(settings, conn, now=utc_now, require=require_inbox)  # overnight replies stop sends
        with _progress_bar(enabled=not as_json, total=None, label="Sending") as advance:
            report = run_daily(settings, conn, transport, now=utc_now, sleep=time.sleep, limit=limit,
                               rng=random.Random(), on_outcome=lambda _: advance(1))
        send_summary(settings, report, transport, now=utc_now())
    finally:
        transport.close()
    if as_json:
        keys = ("sent", "failed", "skipped", "unknown", "remaining_today", "dry_run")
        print(json.dumps({k: report.as_dict()[k] for k in keys} | {"previewed": report.previewed}))
    else:
        _print_run_summary(report, settings)
    if report.fatal_error:
        err.print(f"Error: run stopped: {report.fatal_error}", markup=False)
        raise typer.Exit(3)


def _print_run_summary(report, settings: Settings) -> None:
    if report.dry_run:
        out.print(f"Dry run: {report.previewed} message(s) written to {settings.outbox_dir}/ and nothing sent. "
                  "To send for real, set DRY_RUN=false (or pass --send).")
        return
    out.print(f"Sent {report.sent}, failed {report.failed}, deferred {report.deferred}, skipped {report.skipped}, "
              f"unknown {report.unknown}; {report.remaining_today} left today.")


@app.command()
@cli_errors
def preview(
    db: DbOption = None,
    email: Annotated[Optional[str], typer.Option("--email", "-e", help="Recipient to render (default: the next pending one).")] = None,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign of the recipient.")] = DEFAULT_CAMPAIGN,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the message: .eml for the whole MIME message, anything else for the HTML body.")] = None,
) -> None:
    """Render one recipient's message (subject, text and HTML) without sending anything."""
    from .preview import render_preview

    settings = settings_for(db)
    conn = open_db(settings.db_path)
    result = render_preview(conn, settings, campaign=campaign, email=email)
    out.print(f"To: {result.email}\nSubject: {result.rendered.subject}\n\n--- text ---\n{result.rendered.text}\n--- html ---\n{result.rendered.html}", markup=False)
    if out_file:
        data = result.message.as_bytes() if out_file.suffix == ".eml" else result.rendered.html.encode()
        try:
            out_file.write_bytes(data)
        except OSError as exc:
            raise EmailAutomationError(f"{out_file}: cannot write: {exc.strerror or exc}") from None
        out.print(f"Written to {out_file}")


@template_app.command("show")
@cli_errors
def template_show(db: DbOption = None, campaign: Annotated[str, typer.Option("--campaign", "-c")] = DEFAULT_CAMPAIGN) -> None:
    """Print a campaign's subject, HTML and text templates."""
    conn = open_db(settings_for(db).db_path)
    row = get_campaign(conn, campaign)
    out.print(f"Campaign: {row['name']} ({row['status']})\nSubject: {row['subject_template']}\n\n--- html ---\n{row['html_template']}", markup=False)
    out.print(f"--- text ---\n{row['text_template'] or '(derived from the HTML)'}", markup=False)


@template_app.command("set")
@cli_errors
def template_set(
    db: DbOption = None,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign to change (created if new).")] = DEFAULT_CAMPAIGN,
    subject: Annotated[Optional[str], typer.Option("--subject", help="Subject template, e.g. 'Hello {{ first_name }}'.")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="File with the HTML body template.")] = None,
    text: Annotated[Optional[Path], typer.Option("--text", help="File with a plain-text body template (default: derived from the HTML).")] = None,
) -> None:
    """Store new templates for a campaign after checking that they compile."""
    from .database import ensure_campaign, transaction
    from .email_templates import check_template

    conn = open_db(settings_for(db).db_path)
    html_src = _read_text(html)
    text_src = _read_text(text)
    check_template(subject or "", html_src or "", text_src)
    with transaction(conn):
        ensure_campaign(conn, campaign)
    update_campaign_templates(conn, campaign, subject=subject, html=html_src, text=text_src)
    out.print(f"Templates of campaign '{campaign}' updated.")


def _read_text(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EmailAutomationError(f"{path}: cannot read template: {exc}") from None


@app.command("retry-failed")
@cli_errors
def retry_failed(db: DbOption = None, campaign: CampaignOption = None) -> None:
    """Put failed recipients back in the queue (suppressed addresses stay failed)."""
    count = admin.retry_failed(open_db(settings_for(db).db_path), campaign=campaign)
    out.print(f"{count} failed recipient(s) are pending again.")


@app.command()
@cli_errors
def skip(email: Annotated[str, typer.Argument(help="Address to skip.")], db: DbOption = None, campaign: CampaignOption = None) -> None:
    """Never send to this pending or failed recipient."""
    count = admin.skip_recipient(open_db(settings_for(db).db_path), email, campaign=campaign)
    out.print(f"{count} recipient(s) skipped.")


@app.command()
@cli_errors
def suppress(
    email: Annotated[str, typer.Argument(help="Address never to mail again, in any campaign.")],
    db: DbOption = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (bounce, complaint, unsubscribe, ...).")] = "manual",
) -> None:
    """Add an address to the suppression list; its pending recipients become skipped."""
    count = admin.suppress(open_db(settings_for(db).db_path), email, reason=reason)
    out.print(f"{admin.normalize_email(email)} suppressed ({reason}); {count} pending recipient(s) skipped.")


@app.command()
@cli_errors
def unsuppress(email: Annotated[str, typer.Argument(help="Address to allow again.")], db: DbOption = None) -> None:
    """Remove an address from the suppression list."""
    admin.unsuppress(open_db(settings_for(db).db_path), email)
    out.print(f"{admin.normalize_email(email)} may be mailed again.")


@app.command()
@cli_errors
def resolve(
    email: Annotated[str, typer.Argument(help="Recipient in the 'unknown' state.")],
    sent: Annotated[Optional[bool], typer.Option("--sent/--pending", help="--sent: it did go out; --pending: it did not, send it again.", show_default=False)] = None,
    db: DbOption = None,
    campaign: CampaignOption = None,
) -> None:
    """Settle a recipient whose send was interrupted: mark it sent, or pending to be sent again."""
    if sent is None:
        raise EmailAutomationError("say what happened: --sent (it went out) or --pending (it did not; send it again)")
    outcome = "sent" if sent else "pending"
    count = admin.resolve_unknown(open_db(settings_for(db).db_path), email, outcome, campaign=campaign)
    out.print(f"{count} recipient(s) marked {outcome}.")


@app.command()
@cli_errors
def pause(campaign: Annotated[str, typer.Argument(help="Campaign to pause.")], db: DbOption = None) -> None:
    """Pause a campaign: runs leave its recipients alone until it is resumed."""
    admin.set_campaign_status(open_db(settings_for(db).db_path), campaign, "paused")
    out.print(f"Campaign '{campaign}' paused.")


@app.command()
@cli_errors
def resume(campaign: Annotated[str, typer.Argument(help="Campaign to resume.")], db: DbOption = None) -> None:
    """Resume a paused campaign."""
    admin.set_campaign_status(open_db(settings_for(db).db_path), campaign, "active")
    out.print(f"Campaign '{campaign}' is active.")


def _log_lines_to(stream) -> None:
    """Plain `time email status id` lines, readable in cron.log."""
    logger = logging.getLogger("email_automation")
    console = [h for h in logger.handlers if getattr(h, "_ea_console", False)]
    if console:
        console[0].stream = stream  # not setStream: the old stream may be closed already
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logs.line_formatter())
        handler._ea_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


class _progress_bar:
    """A rich progress bar on a terminal; nothing at all when output goes to a file or cron."""

    def __init__(self, *, enabled: bool, total: int | None, label: str) -> None:
        self.enabled = enabled and err.is_terminal
        self.total, self.label = total, label

    def __enter__(self):
        if not self.enabled:
            return lambda n=1: None
        from rich.progress import Progress

        self.progress = Progress(console=err, transient=True)
        self.progress.start()
        task = self.progress.add_task(self.label, total=self.total)
        return lambda n=1: self.progress.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()


def main() -> None:
    app()


# Commands that live beside their concern register themselves on `app` when imported.
from . import cli_dashboard, cli_events, cli_ops, cli_replies  # noqa: E402,F401
