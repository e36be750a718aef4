"""CLI command `events`: read the SES events queue once. Wiring only, like cli.py."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from . import event_queue as events_lib
from .cli import DbOption, JsonOption, app, cli_errors, err, out, settings_for
from .database import open_db, utc_now

NOTES_SHOWN = 20


@app.command()
@cli_errors
def events(
    queue_url: Annotated[Optional[str], typer.Option("--queue-url", help="SQS queue subscribed to the SES event topic (default: SES_EVENTS_QUEUE_URL).")] = None,
    db: DbOption = None,
    wait: Annotated[int, typer.Option("--wait", min=0, max=20, help="Seconds each receive waits for messages to arrive (SQS long polling, 0-20).")] = events_lib.DEFAULT_WAIT_SECONDS,
    as_json: JsonOption = False,
) -> None:
    """Apply SES bounces, complaints and deliveries from the SQS queue: suppress, reconcile, record.

    Exit codes: 0 every message applied, 1 a message could not be applied (it stays on the queue)
    or SQS refused, 2 no queue or region configured.
    """
    settings = settings_for(db)
    url = events_lib.check_queue_url(queue_url or settings.ses_events_queue_url)
    report = events_lib.drain_queue(settings, open_db(settings.db_path), now=utc_now, queue_url=url,
                                   wait_seconds=wait)
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        out.print(f"SES events: {report.summary()}.", markup=False)
        for note in report.notes[:NOTES_SHOWN]:
            out.print(f"  {note}", markup=False)
        if len(report.notes) > NOTES_SHOWN:
            out.print(f"  ... and {len(report.notes) - NOTES_SHOWN} more")
    if report.failed:
        err.print(f"Error: {report.failed} message(s) could not be applied and stay on the queue "
                  "(its dead-letter queue takes them after maxReceiveCount receives).", markup=False)
        raise typer.Exit(1)
