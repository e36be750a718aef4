"""CLI commands for replies: `inbox` (read the mailbox) and `mark` (application status). Wiring only."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from . import applications, inbox
from .cli import CampaignOption, DbOption, JsonOption, app, cli_errors, out, settings_for
from .database import APPLICATION_STATUSES, open_db, utc_now


@app.command("inbox")
@cli_errors
def read_inbox(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Read new mail from IMAP_FOLDER: record replies, auto-replies, bounces and unsubscribes.

    Read-only: nothing in the mailbox is deleted, moved or marked as read. Each message is counted
    once, however often you run it. Exit codes: 0 read, 1 the server or login failed, 2 IMAP_* not set.
    """
    settings = settings_for(db)
    report = inbox.read_inbox(settings, open_db(settings.db_path), now=utc_now)
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    out.print(f"Inbox {settings.imap_folder}: {report.summary()}.", markup=False)
    for line in report.notes:
        out.print(f"  {line}", markup=False)


@app.command()
@cli_errors
def mark(
    email: Annotated[str, typer.Argument(help="Recipient's address.")],
    status: Annotated[str, typer.Argument(help=f"New application status: {', '.join(APPLICATION_STATUSES)}.")],
    note: Annotated[Optional[str], typer.Option("--note", help="A note to keep with it (who, when, what was said).")] = None,
    db: DbOption = None,
    campaign: CampaignOption = None,
) -> None:
    """Set a recipient's application status by hand (e.g. `mark bob@acme.com interview`).

    Use `replied` for an answer that came by phone or LinkedIn. Any status but `none` stops later
    messages to the address (and, with STOP_COMPANY_ON_REPLY, to its company); the inbox watcher
    never overwrites a status set here.
    """
    count = applications.mark(open_db(settings_for(db).db_path), email, status, now=utc_now(), note=note,
                              campaign=campaign)
    out.print(f"{email.strip().lower()}: application status {status!r} ({count} recipient(s)).", markup=False)
