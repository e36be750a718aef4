"""Commands over the recipient list: `import`, `skip`, `suppress`, `unsubscribe`, `unsuppress`, `resolve`, `retry-failed`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..database import DEFAULT_CAMPAIGN
from .common import (BadInput, CampaignOption, DbOption, JsonOption, answer, app, cli_errors, open_database, print_json,
                     progress_bar, say, settings_for)

REJECTS_SHOWN = 20


@app.command("import")
@cli_errors
def import_file(
    file: Annotated[Path, typer.Argument(help="CSV file with an email column (UTF-8 or Windows-1252; , ; or tab).")],
    db: DbOption = None,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign to add the recipients to (created if new).")] = DEFAULT_CAMPAIGN,
    rejects: Annotated[Optional[Path], typer.Option("--rejects", help="Where to write invalid rows (default: recipients.csv -> recipients.rejects.csv, beside it; in the working directory if its folder is read-only).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Add recipients from a CSV file; duplicates are skipped and invalid rows written to a rejects file."""
    from ..import_csv import import_csv
    from ..mx_check import for_settings

    settings = settings_for(db)
    conn = open_database(settings)
    with progress_bar(enabled=not as_json, total=file.stat().st_size if file.is_file() else None,
                      label=f"Importing {file.name}") as advance:
        report = import_csv(conn, file, campaign=campaign, rejects_path=rejects, progress=advance,
                            domain_check=for_settings(settings), attachments_dir=settings.attachments_dir,
                            max_message_bytes=settings.max_message_bytes)
    if as_json:
        print_json(report.as_dict())
        return
    for line in import_lines(file, report):
        say(line)


def import_lines(file: Path, report) -> list[str]:
    """The counts, then `FILE:LINE: 'field': reason` for the first rejected rows."""
    lines = [f"{file}: {report.inserted} added to campaign '{report.campaign}', "
             f"{report.duplicates} duplicate(s) skipped, {report.invalid} invalid."]
    lines += [f"  {r.message(file)}" for r in report.rejects[:REJECTS_SHOWN]]
    if report.invalid > REJECTS_SHOWN:
        lines.append(f"  ... and {report.invalid - REJECTS_SHOWN} more")
    if report.rejects_file:
        lines.append(f"Invalid rows written to {report.rejects_file}")
    if note := report.renamed_note():
        lines.append(note)
    return lines


@app.command("retry-failed")
@cli_errors
def retry_failed(db: DbOption = None, campaign: CampaignOption = None, as_json: JsonOption = False) -> None:
    """Put failed recipients back in the queue (suppressed addresses stay failed)."""
    from .. import admin

    count = admin.retry_failed(open_database(settings_for(db)), campaign=campaign)
    answer(as_json, {"pending_again": count}, f"{count} failed recipient(s) are pending again.")


@app.command()
@cli_errors
def skip(
    email: Annotated[str, typer.Argument(help="Address to skip.")],
    db: DbOption = None,
    campaign: CampaignOption = None,
    as_json: JsonOption = False,
) -> None:
    """Never send to this pending or failed recipient."""
    from .. import admin

    count = admin.skip_recipient(open_database(settings_for(db)), email, campaign=campaign)
    answer(as_json, {"email": _address(email), "skipped": count}, f"{count} recipient(s) skipped.")


@app.command()
@cli_errors
def suppress(
    email: Annotated[str, typer.Argument(help="Address never to mail again, in any campaign.")],
    db: DbOption = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (bounce, complaint, unsubscribe, ...).")] = "manual",
    as_json: JsonOption = False,
) -> None:
    """Add an address to the suppression list; its pending recipients become skipped."""
    from .. import admin

    done = admin.suppress(open_database(settings_for(db)), email, reason=reason)
    entry = done.entry
    answer(as_json, {"email": entry.email, "reason": entry.reason, "since": entry.since, "added": entry.added,
                     "skipped": done.skipped}, done.message())


@app.command()
@cli_errors
def unsubscribe(
    link: Annotated[str, typer.Argument(help="The unsubscribe URL a recipient used (or just its token, or an address).", show_default=False)],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply an unsubscribe collected by your UNSUBSCRIBE_URL endpoint: suppress that recipient's address."""
    from ..database import utc_now
    from ..unsubscribe_tokens import apply_unsubscribe, secret_of

    settings = settings_for(db)
    done = apply_unsubscribe(open_database(settings), link, secret=secret_of(settings), now=utc_now())
    text = (f"{done.email} unsubscribed; {done.skipped} pending recipient(s) skipped." if done.newly
            else f"{done.email} was already suppressed ({done.reason}); nothing changed.")
    answer(as_json, {"email": done.email, "suppressed": done.newly, "reason": done.reason, "skipped": done.skipped}, text)


@app.command()
@cli_errors
def unsuppress(
    email: Annotated[str, typer.Argument(help="Address to allow again.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove an address from the suppression list; the recipients it skipped, never mailed, are pending again."""
    from .. import admin

    done = admin.unsuppress(open_database(settings_for(db)), email)
    answer(as_json, {"email": done.email, "unsuppressed": True, "requeued": done.requeued}, done.message())


@app.command()
@cli_errors
def resolve(
    email: Annotated[str, typer.Argument(help="Recipient in the 'unknown' state.")],
    sent: Annotated[Optional[bool], typer.Option("--sent/--pending", help="--sent: it did go out; --pending: it did not, send it again.", show_default=False)] = None,
    db: DbOption = None,
    campaign: CampaignOption = None,
    as_json: JsonOption = False,
) -> None:
    """Settle a recipient whose send was interrupted: mark it sent, or pending to be sent again."""
    from .. import admin

    if sent is None:
        raise BadInput("say what happened: --sent (it went out) or --pending (it did not; send it again)")
    outcome = "sent" if sent else "pending"
    count = admin.resolve_unknown(open_database(settings_for(db)), email, outcome, campaign=campaign)
    answer(as_json, {"email": _address(email), "marked": outcome, "recipients": count},
           f"{count} recipient(s) marked {outcome}.")


def _address(email: str) -> str:
    """The address as stored, the way the library looked it up."""
    from ..addresses import lookup_form

    return lookup_form(email)
