"""Commands over campaigns: `preview`, `template show/set/add/remove`, `step add/set/list/remove`, `pause`, `resume`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..database import DEFAULT_CAMPAIGN, MAX_WAIT_DAYS  # not from sequences: --help would load it
from .common import BadInput, DbOption, JsonOption, answer, app, cli_errors, open_database, say, settings_for

template_app = typer.Typer(help="Show or change a campaign's templates, its named ones and its attachments.", no_args_is_help=True)
app.add_typer(template_app, name="template")
step_app = typer.Typer(help="Follow-up steps of a campaign: replies in the same thread, sent business days later; "
                       "each may have its own version per named template.",
                       no_args_is_help=True)
app.add_typer(step_app, name="step")
CampaignOption = Annotated[str, typer.Option("--campaign", "-c", help="Campaign of the steps.")]


@app.command()
@cli_errors
def preview(
    address: Annotated[Optional[str], typer.Argument(metavar="EMAIL", help="Recipient to render, as --email.", show_default=False)] = None,
    db: DbOption = None,
    email: Annotated[Optional[str], typer.Option("--email", "-e", help="Recipient to render (default: the next pending one; with --step, the next to get that step).")] = None,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign of the recipient.")] = DEFAULT_CAMPAIGN,
    step: Annotated[int, typer.Option("--step", help="Step to render: a follow-up as the recipient would get it, in their thread.")] = 1,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the message: .eml for the whole MIME message, anything else for the HTML body.")] = None,
) -> None:
    """Render one recipient's message (subject, text and HTML) without sending anything."""
    from ..preview import render_preview
    from ..user_files import is_database_file, write_problem

    if address and email and address != email:
        raise BadInput(f"two recipients given ({address} and --email {email}); name one")
    if out_file and is_database_file(out_file):
        raise BadInput(f"{out_file}: is a database file; name another file for --out")
    if out_file and (problem := write_problem(out_file)):
        raise BadInput(f"{out_file}: cannot write: {problem}")
    settings = settings_for(db)
    result = render_preview(open_database(settings), settings, campaign=campaign, email=address or email, step=step)
    headers = "\n".join(result.header_lines())
    say(f"{headers}\n\n--- text ---\n{result.rendered.text}\n--- html ---\n{result.rendered.html}")
    if files := result.attachment_lines():
        say("--- attachments ---\n" + "\n".join(files))
    if out_file:
        data = result.message.as_bytes() if out_file.suffix == ".eml" else result.rendered.html.encode()
        try:
            out_file.write_bytes(data)
        except OSError as exc:
            raise BadInput(f"{out_file}: cannot write: {exc.strerror or exc}") from None
        say(f"Written to {out_file}")


@template_app.command("show")
@cli_errors
def template_show(
    name: Annotated[Optional[str], typer.Argument(help="Named template to show (default: the campaign's own).", show_default=False)] = None,
    db: DbOption = None,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign to show.")] = DEFAULT_CAMPAIGN,
) -> None:
    """Print a campaign's subject(s), HTML and text templates, or those of its template NAME."""
    from ..attachments import stored_paths
    from ..campaign_templates import get_template, template_names
    from ..database import get_campaign
    from ..sequences import list_steps
    from ..step_content import step_versions

    conn = open_database(settings_for(db))
    row = get_campaign(conn, campaign)
    if name:
        name = name.strip()  # as `template add` stores it
        template = get_template(conn, campaign, name)  # before any line: a missing one prints only the error
        say(f"Campaign: {row['name']} ({row['status']}), template: {name}")
        say(_template_text(template))
        for version in step_versions(conn, campaign, template=name):
            say(f"\n=== step {version.number}, template {name}: subject: {_subject_line(version.subject)} ===")
            say(_body_text(version))
        return
    say(f"Campaign: {row['name']} ({row['status']})")
    say(_template_text(row))
    say("--- attachments ---\n" + ("\n".join(stored_paths(row["attachments"])) or "(none)"))
    say("--- named templates ---\n" + ("\n".join(template_names(conn, campaign)) or "(none)"))
    steps = {step.number: step for step in list_steps(conn, campaign)}
    for version in step_versions(conn, campaign):
        if version.template is None:
            say(f"\n=== step {version.number}: {_step_line(steps[version.number])} ===")
        else:
            say(f"\n=== step {version.number}, template {version.template}: subject: "
                f"{_subject_line(version.subject)} ===")
        say(_body_text(version))


def _body_text(version) -> str:
    return f"--- html ---\n{version.html}\n--- text ---\n{version.text or '(derived from the HTML)'}"


def _subject_line(subject: str | None) -> str:
    return subject or "Re: + the subject of step 1"


def _template_text(row) -> str:
    from ..email_templates import subject_variants

    subjects = subject_variants(row)
    lines = [f"Subject: {subjects[0]}"] if len(subjects) == 1 else [
        f"Subject {n} of {len(subjects)}: {s}" for n, s in enumerate(subjects, 1)]
    return "\n".join(lines) + (f"\n\n--- html ---\n{row['html_template']}\n"
                               f"--- text ---\n{row['text_template'] or '(derived from the HTML)'}")


@template_app.command("add")
@cli_errors
def template_add(
    name: Annotated[str, typer.Argument(help="Template name, as the CSV's `template` column gives it.")],
    db: DbOption = None,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign to add it to (created if new).")] = DEFAULT_CAMPAIGN,
    subject: Annotated[Optional[list[str]], typer.Option("--subject", help="Subject template; repeat for variants (each recipient gets one).")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="File with the HTML body template.")] = None,
    text: Annotated[Optional[Path], typer.Option("--text", help="File with a plain-text body template (default: derived from the HTML).")] = None,
) -> None:
    """Add a named template (or replace the one of that name) for the recipients whose `template` column names it."""
    from ..campaign_templates import add_template

    settings = settings_for(db)
    notes: list[str] = []
    replaced = add_template(open_database(settings), campaign, name, subject=subject, html=_read_template(html),
                            text=_read_template(text), settings=settings, notes=notes)
    say("\n".join([f"Template '{name.strip()}' of campaign '{campaign}' {'replaced' if replaced else 'added'}.", *notes]))


@template_app.command("remove")
@cli_errors
def template_remove(
    name: Annotated[str, typer.Argument(help="Template to remove.")],
    db: DbOption = None,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign of the template.")] = DEFAULT_CAMPAIGN,
) -> None:
    """Remove a named template that no recipient waiting to be sent uses (failed ones that used it get the campaign's own)."""
    from ..campaign_templates import remove_template

    moved = remove_template(open_database(settings_for(db)), campaign, name)
    who = ", ".join(f"{count} {status}" for status, count in moved.items())
    say(f"Template '{name}' of campaign '{campaign}' removed"
        + (f"; {who} recipient(s) that used it get the campaign's own template if retried." if moved else "."))
def _step_line(step) -> str:
    versions = f", own version for template(s): {', '.join(step.versions)}" if step.versions else ""
    return (f"{step.after_days} business day(s) after step {step.number - 1}, subject: {_subject_line(step.subject)}, "
            f"sent {step.sent}" + (f", unknown {step.unknown}" if step.unknown else "") + versions)


@step_app.command("add")
@cli_errors
def step_add(
    after_days: Annotated[int, typer.Option("--after-days", help="Business days to wait after the previous step was sent.", min=1, max=MAX_WAIT_DAYS)],
    html: Annotated[Path, typer.Option("--html", help="File with the HTML body template of the follow-up.")],
    db: DbOption = None,
    campaign: CampaignOption = DEFAULT_CAMPAIGN,
    text: Annotated[Optional[Path], typer.Option("--text", help="File with a plain-text body template (default: derived from the HTML).")] = None,
    subject: Annotated[Optional[str], typer.Option("--subject", help="Subject template (default: 'Re: ' + the subject the recipient got at step 1).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a follow-up step: sent as a reply in the same thread unless the person answered."""
    from ..database import utc_now
    from ..sequences import add_step

    notes: list[str] = []
    number = add_step(open_database(settings_for(db)), campaign, after_days=after_days, html=_read_template(html) or "",
                      text=_read_template(text), subject=subject, now=utc_now(), notes=notes)
    answer(as_json, {"campaign": campaign, "step": number, "after_days": after_days, "notes": notes},
           "\n".join([f"Step {number} added to campaign '{campaign}': {after_days} business day(s) after step "
                      f"{number - 1}.", *notes]))


@step_app.command("list")
@cli_errors
def step_list(db: DbOption = None, campaign: CampaignOption = DEFAULT_CAMPAIGN, as_json: JsonOption = False) -> None:
    """List a campaign's follow-up steps (step 1 is its own template)."""
    from ..sequences import list_steps

    steps = list_steps(open_database(settings_for(db)), campaign)
    lines = [f"step {s.number}: {_step_line(s)}" for s in steps]
    answer(as_json, {"campaign": campaign, "steps": [{"step": s.number, "after_days": s.after_days, "subject": s.subject,
                                                      "sent": s.sent, "unknown": s.unknown, "templates": list(s.versions)} for s in steps]},
           "\n".join(lines) if lines else f"Campaign '{campaign}' has no follow-up steps.")


StepTemplateOption = Annotated[Optional[str], typer.Option(
    "--template", "-t", help="Named template (segment) whose version of the step this is (default: the step's own).",
    show_default=False)]


@step_app.command("set")
@cli_errors
def step_set(
    number: Annotated[int, typer.Argument(help="Number of the step to change (2 or more).")],
    db: DbOption = None,
    campaign: CampaignOption = DEFAULT_CAMPAIGN,
    template: StepTemplateOption = None,
    subject: Annotated[Optional[str], typer.Option("--subject", help="Subject template ('' for 'Re: ' + the subject of step 1).")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="File with the HTML body template (needed for a new template version).")] = None,
    text: Annotated[Optional[Path], typer.Option("--text", help="File with a plain-text body template (an empty file: derived from the HTML).")] = None,
    after_days: Annotated[Optional[int], typer.Option("--after-days", help="Business days to wait after the previous step was sent (for everyone not yet sent this step).", min=1, max=MAX_WAIT_DAYS)] = None,
    as_json: JsonOption = False,
) -> None:
    """Change a follow-up step or its wait, or with --template NAME add (or replace) the version that recipients of template NAME get."""
    from ..database import utc_now
    from ..step_content import set_step

    settings = settings_for(db)
    notes: list[str] = []
    replaced = set_step(open_database(settings), campaign, number, template=template, subject=subject,
                        html=_read_template(html), text=_read_template(text), after_days=after_days,
                        settings=settings, now=utc_now(), notes=notes)
    what = f"Step {number}" + (f", template '{template.strip()}'," if template else "")
    done = "updated" if template is None else ("replaced" if replaced else "added")
    wait = "" if after_days is None else f": {after_days} business day(s) after step {number - 1}"
    answer(as_json, {"campaign": campaign, "step": number, "template": template and template.strip(), "result": done,
                     "after_days": after_days, "notes": notes},
           "\n".join([f"{what} of campaign '{campaign}' {done}{wait}.", *notes]))


@step_app.command("remove")
@cli_errors
def step_remove(number: Annotated[int, typer.Argument(help="Number of the step to remove (2 or more).")],
                db: DbOption = None, campaign: CampaignOption = DEFAULT_CAMPAIGN, template: StepTemplateOption = None,
                as_json: JsonOption = False) -> None:
    """Remove a follow-up step nothing was sent for yet (later steps move up), or with --template NAME only that template's version of it."""
    from ..sequences import remove_step
    from ..step_content import remove_step_version

    conn = open_database(settings_for(db))
    if template is not None:
        remove_step_version(conn, campaign, number, template.strip())
        answer(as_json, {"campaign": campaign, "removed": number, "template": template.strip()},
               f"Step {number}, template '{template.strip()}', removed from campaign '{campaign}': "
               "its recipients get the step's own version.")
        return
    remove_step(conn, campaign, number)
    answer(as_json, {"campaign": campaign, "removed": number}, f"Step {number} removed from campaign '{campaign}'.")





@template_app.command("set")
@cli_errors
def template_set(
    db: DbOption = None,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign to change (created if new).")] = DEFAULT_CAMPAIGN,
    subject: Annotated[Optional[list[str]], typer.Option("--subject", help="Subject template, e.g. 'Hello {{ first_name }}'; repeat for variants (each recipient gets one).")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="File with the HTML body template.")] = None,
    text: Annotated[Optional[Path], typer.Option("--text", help="File with a plain-text body template (default: derived from the HTML).")] = None,
    attach: Annotated[Optional[list[Path]], typer.Option("--attach", help="File every message of the campaign carries (repeat for several; replaces the current ones).")] = None,
    no_attachments: Annotated[bool, typer.Option("--no-attachments", help="Remove the campaign's own attachments.")] = False,
) -> None:
    """Store new templates for a campaign after checking that they compile and that its recipients have the columns they read."""
    from ..campaign_templates import set_templates

    settings = settings_for(db)
    conn = open_database(settings)
    notes: list[str] = []
    set_templates(conn, campaign, subject=subject, html=_read_template(html), text=_read_template(text),
                  settings=settings, attach=[] if no_attachments else attach, notes=notes)
    say("\n".join([f"Templates of campaign '{campaign}' updated.", *notes]))


def _read_template(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read template: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: cannot read template: not UTF-8 text (byte {exc.start})") from None


@app.command()
@cli_errors
def pause(campaign: Annotated[str, typer.Argument(help="Campaign to pause.")], db: DbOption = None,
          as_json: JsonOption = False) -> None:
    """Pause a campaign: runs leave its recipients alone until it is resumed."""
    from ..admin import set_campaign_status

    set_campaign_status(open_database(settings_for(db)), campaign, "paused")
    answer(as_json, {"campaign": campaign, "state": "paused"}, f"Campaign '{campaign}' paused.")


@app.command()
@cli_errors
def resume(campaign: Annotated[Optional[str], typer.Argument(help="Campaign to resume.", show_default=False)] = None,
           all_sending: Annotated[bool, typer.Option("--all", help="Lift the circuit breaker's pause of all sending.")] = False,
           db: DbOption = None, as_json: JsonOption = False) -> None:
    """Resume a paused campaign, or with --all lift a pause of all sending (the circuit breaker's).

    The breaker then counts bounces and complaints afresh from now on.
    """
    from ..admin import set_campaign_status
    from ..circuit_breaker import resume_all
    from ..database import utc_now

    if all_sending and campaign is not None:
        raise BadInput(f"--all lifts the pause of all sending and takes no campaign: `resume {campaign}` resumes "
                       "that campaign")
    if all_sending:
        lifted = resume_all(open_database(settings_for(db)), now=utc_now())
        answer(as_json, {"all": True, "lifted": lifted},
               "Sending resumed." if lifted else "Sending was not paused; nothing to resume.")
        return
    if campaign is None:
        raise BadInput("name the campaign to resume, or pass --all to lift a pause of all sending")
    set_campaign_status(open_database(settings_for(db)), campaign, "active")
    answer(as_json, {"campaign": campaign, "state": "active"}, f"Campaign '{campaign}' is active.")
