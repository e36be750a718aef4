"""Commands for replies: `inbox` (read the mailbox) and `mark` (set an application status)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import (
    CampaignOption,
    DbOption,
    JsonOption,
    answer,
    app,
    cli_errors,
    open_database,
    say,
    settings_for,
)

# The statuses `mark` accepts, as database.APPLICATION_STATUSES (not imported here: --help stays light).
STATUS_HELP = "none, replied, interview, offer, rejected, not_interested"


@app.command("inbox")
@cli_errors
def read_inbox(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Read new mail from IMAP_FOLDER: record replies, auto-replies, bounces and unsubscribes.

    Read-only: nothing in the mailbox is deleted, moved or marked as read, and each message is
    counted once however often you run it. Exit codes: 0 read, 1 the server, login or folder
    failed, 2 IMAP_* not set or invalid.
    """
    from .. import inbox
    from ..database import utc_now

    settings = settings_for(db)
    report = inbox.read_inbox(settings, open_database(settings), now=utc_now)
    answer(as_json, report.as_dict(), f"Inbox {settings.imap_folder}: {report.summary()}.")
    if not as_json:
        for line in report.notes:
            say(f"  {line}")


@app.command()
@cli_errors
def mark(
    email: Annotated[str, typer.Argument(help="Recipient's address.")],
    status: Annotated[str, typer.Argument(help=f"New application status: {STATUS_HELP}.")],
    note: Annotated[Optional[str], typer.Option("--note", help="A note to keep with it (who, when, what was said).")] = None,
    db: DbOption = None,
    campaign: CampaignOption = None,
) -> None:
    """Set a recipient's application status by hand.

    For example `mark bob@acme.com interview`. Use `replied` for an answer that came by phone or
    LinkedIn. Any status but `none` stops later messages to the address (and, with
    STOP_COMPANY_ON_REPLY, to its company); the inbox watcher never overwrites a status set here.
    `none` undoes a reply read by mistake: what it stopped goes on, and a later reply counts again.
    """
    from .. import applications
    from ..database import utc_now

    settings = settings_for(db)
    marked = applications.mark(open_database(settings), email, status, now=utc_now(), note=note, campaign=campaign)
    say(marked.line(email.strip().lower(), status))
