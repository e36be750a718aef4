"""A campaign worked on from the dashboard: the CLI's library calls, with uploads in place of paths.

Uploaded files (CSVs and attachments) are written to UPLOADS: ATTACHMENTS_DIR when set, else an
`uploads` folder beside the database, so an uploaded CSV's `attachments` column finds the files
uploaded with it, and a run started by cron finds them all.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import campaign_templates, sequences, step_content
from .attachments import stored_paths
from .database import check_campaign_name, ensure_campaign, get_campaign, transaction, utc_now
from .email_templates import CampaignTemplate, RenderedEmail, subject_variants
from .errors import EmailAutomationError, NotFoundError
from .preview import follow_up_thread
from .sequences import FIRST_STEP
from .template_sets import CampaignTemplates

if TYPE_CHECKING:
    from .import_csv import ImportReport

_UNSAFE = re.compile(r"[^\w.\- ]+")


class UploadError(EmailAutomationError):
    """An uploaded file that cannot be stored."""

    exit_code = 2


@dataclass(frozen=True)
class TemplateDraft:
    """What the editor shows and saves: `name` None is the campaign's own template (of step 1) or
    the step's own version (of a follow-up `step`); a follow-up has one subject, "" for `Re: ` +
    the subject of step 1."""

    name: str | None
    subjects: tuple[str, ...]
    html: str
    text: str | None
    step: int = FIRST_STEP
    inherited: bool = False  # a named template without its own version of the follow-up: the step's is shown


@dataclass(frozen=True)
class DraftPreview:
    """A draft rendered for one recipient: their message, and every subject variant as they would read it."""

    rendered: RenderedEmail
    subjects: tuple[str, ...]
    variant: int | None  # which of `subjects` this recipient gets; None: their own subject, none of them
    own_subject: bool = False  # the recipient's CSV row has a subject of its own, which replaces the draft's
    own_body: bool = False  # ... a body of its own, which replaces the draft's HTML and text


def uploads_folder(settings: Any) -> Path:
    """Where the dashboard stores uploaded files (created when first needed)."""
    return Path(settings.attachments_dir) if settings.attachments_dir else Path(settings.db_path).parent / "uploads"


def store_upload(settings: Any, filename: str, data: bytes) -> Path:
    """Write an upload into `uploads_folder` under its own name, made safe (no folders, no dot files).

    Raises:
        UploadError: no usable name, or the folder cannot be written.
    """
    name = _UNSAFE.sub("_", Path(filename.replace("\\", "/")).name).strip(" .")
    if not name:
        raise UploadError(f"{filename!r}: not a usable file name")
    folder = uploads_folder(settings)
    path = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise UploadError(f"{path}: cannot store the upload: {err.strerror or err}") from err
    return path


def create_campaign(conn: sqlite3.Connection, name: str) -> bool:
    """Create a campaign with the default templates; False when it already exists."""
    name = check_campaign_name(name).strip()
    exists = conn.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone()
    with transaction(conn):
        ensure_campaign(conn, name)
    return exists is None


def import_upload(conn: sqlite3.Connection, settings: Any, campaign: str, filename: str,
                  data: bytes) -> tuple[ImportReport, bytes | None]:
    """Import an uploaded CSV exactly as `import` does; returns the report and the rejects file's bytes."""
    from .import_csv import import_csv  # with email-validator: loaded when a file is imported, not with the page

    path = store_upload(settings, filename, data)
    try:
        report = import_csv(conn, path, campaign=campaign, attachments_dir=uploads_folder(settings),
                            max_message_bytes=settings.max_message_bytes)
    except EmailAutomationError as err:  # name the file as the user uploaded it, not the server's copy
        err.args = tuple(arg.replace(str(path), filename) if isinstance(arg, str) else arg for arg in err.args)
        raise
    rejects = report.rejects_file.read_bytes() if report.rejects_file and report.rejects_file.exists() else None
    return report, rejects


def drafts(conn: sqlite3.Connection, campaign: str) -> list[TemplateDraft]:
    """The campaign's own template, then its named ones, as the editor shows them."""
    own = get_campaign(conn, campaign)
    rows = [own, *conn.execute("SELECT * FROM templates WHERE campaign_id = ? ORDER BY id", (own["id"],))]
    return [TemplateDraft(None if row is own else row["name"], tuple(subject_variants(row)), row["html_template"],
                          row["text_template"]) for row in rows]


def steps(conn: sqlite3.Connection, campaign: str) -> dict[int, int | None]:
    """The campaign's steps by number, with each one's wait in business days: 1 (its own
    template, no wait) and its follow-ups."""
    return {FIRST_STEP: None, **sequences.step_waits(conn, campaign)}


def add_step(conn: sqlite3.Connection, campaign: str, after_days: int, draft: TemplateDraft) -> tuple[int, list[str]]:
    """Append a follow-up step as `step add` does (same checks, same errors); returns its number
    and the notes `step add` prints."""
    notes: list[str] = []
    number = sequences.add_step(conn, campaign, after_days=after_days, html=draft.html, text=draft.text or None,
                                subject=draft.subjects[0] if draft.subjects else None, now=utc_now(), notes=notes)
    return number, notes


def set_wait(conn: sqlite3.Connection, campaign: str, number: int, after_days: int) -> None:
    """Change step `number`'s wait, as `step set N --after-days D` does."""
    step_content.set_step(conn, campaign, number, after_days=after_days, now=utc_now())


def remove_step(conn: sqlite3.Connection, campaign: str, number: int, template: str | None = None) -> None:
    """Remove follow-up step `number` (refused once sent to anyone), or with `template` only that
    named template's version of it, as `step remove N [--template NAME]` does."""
    if template is None:
        sequences.remove_step(conn, campaign, number)
    else:
        step_content.remove_step_version(conn, campaign, number, template)


def step_drafts(conn: sqlite3.Connection, campaign: str, number: int) -> dict[str | None, TemplateDraft]:
    """Follow-up step `number`'s own version (key None) and its version per named template, as
    the editor shows them; a named template without its own version starts from the step's."""
    versions = {v.template: v for v in step_content.step_versions(conn, campaign) if v.number == number}
    if None not in versions:
        raise NotFoundError(f"campaign {campaign!r} has no step {number}")
    found = {}
    for name in [None, *campaign_templates.template_names(conn, campaign)]:
        version = versions.get(name, versions[None])
        found[name] = TemplateDraft(name, (version.subject or "",), version.html, version.text, step=number,
                                    inherited=name not in versions)
    return found


def render_draft(conn: sqlite3.Connection, settings: Any, campaign: str, email: str, draft: TemplateDraft) -> DraftPreview:
    """Render an unsaved draft for one of the campaign's recipients, checked as `template set`
    (or `step set`) checks: with the recipient's own subject variant, and a follow-up in their thread.
    At step 1 a subject or body of the recipient's own (CSV custom_subject, custom_body) replaces
    the draft's, as in a run: the preview is what they get, and says which parts are their own.

    Raises:
        TemplateRenderError: an empty part, a syntax error, an unknown variable, or a render error.
        NotFoundError: no such recipient in the campaign.
    """
    if draft.step == FIRST_STEP:
        campaign_templates.check_draft(conn, campaign, list(draft.subjects), draft.html, draft.text,
                                       template=draft.name)
    else:
        subject = draft.subjects[0].strip() if draft.subjects else ""
        step_content.check_version(conn, campaign, step_content.StepVersion(
            draft.step, draft.name, subject or None, draft.html, draft.text or None))
    campaign_row = get_campaign(conn, campaign)
    row = conn.execute("SELECT * FROM recipients WHERE campaign_id = ? AND email = ?",
                       (campaign_row["id"], email)).fetchone()
    if row is None:
        raise NotFoundError(f"no recipient {email} in campaign {campaign!r}")
    if draft.step != FIRST_STEP:
        thread = follow_up_thread(conn, settings, CampaignTemplates(conn, campaign_row), row)
        template = sequences.step_template(campaign, subject, draft.html, draft.text or None, template=draft.name,
                                           step=draft.step)
        rendered = template.render(sequences.step_fields(row, subject, thread.first_subject), settings)
        return DraftPreview(rendered, (rendered.subject,), 0)
    template = CampaignTemplate(campaign, list(draft.subjects), draft.html, draft.text or None, template=draft.name)
    count = len(template.subject_variants)
    variant = CampaignTemplates(conn, campaign_row).rank(row) % count if count > 1 else 0
    own_subject, own_body = (bool((row[key] or "").strip()) for key in ("custom_subject", "custom_body"))
    if not (own_subject or own_body):
        # Each variant rendered whole: the body may show {{ subject }}; only the recipient's needs its text part.
        renders = [template.render(row, settings, variant=n, derive_text=n == variant) for n in range(count)]
        return DraftPreview(renders[variant], tuple(r.subject for r in renders), variant)
    # A subject or body of the recipient's own (CSV columns custom_subject, custom_body) replaces the
    # draft's, as in a run: their message is rendered as a run renders it (CampaignTemplate.render
    # with their row), the draft's variants as another recipient would read them.
    rendered = template.render(row, settings, variant=variant)
    fields = {**dict(row), "custom_subject": None, "custom_body": None}
    subjects = tuple(template.render(fields, settings, variant=n, derive_text=False,
                                     subject_required=not own_subject).subject for n in range(count))
    return DraftPreview(rendered, subjects, None if own_subject else variant, own_subject, own_body)


def message_files(conn: sqlite3.Connection, campaign: str, email: str) -> list[tuple[str, int | None]]:
    """(file name, size in bytes, None if it cannot be read now) of what `email`'s message carries."""
    row = conn.execute("SELECT r.attachments FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
                       " WHERE c.name = ? AND r.email = ?", (campaign, email)).fetchone()
    paths = dict.fromkeys([*attached_files(conn, campaign), *stored_paths(row[0] if row else None)])
    return [(Path(path).name, _size(Path(path))) for path in paths]


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def save_draft(conn: sqlite3.Connection, settings: Any, campaign: str, draft: TemplateDraft) -> list[str]:
    """Store a draft with the CLI's own checks (`template set`, `template add` or `step set`); nothing on
    error. Returns the notes the command prints (a column no recipient who gets it has yet)."""
    notes: list[str] = []
    if draft.step != FIRST_STEP:
        step_content.set_step(conn, campaign, draft.step, template=draft.name,
                              subject=draft.subjects[0] if draft.subjects else "", html=draft.html,
                              text=draft.text or "", settings=settings, now=utc_now(), notes=notes)
    elif draft.name is None:
        campaign_templates.set_templates(conn, campaign, subject=list(draft.subjects), html=draft.html,
                                         text=draft.text or None, settings=settings, notes=notes)
    else:
        campaign_templates.add_template(conn, campaign, draft.name, subject=list(draft.subjects), html=draft.html,
                                        text=draft.text or None, settings=settings, notes=notes)
    return notes


def attach_upload(conn: sqlite3.Connection, settings: Any, campaign: str, filename: str, data: bytes) -> Path:
    """Add an uploaded file to the files every message of the campaign carries (checked as `--attach`)."""
    path = store_upload(settings, filename, data)
    current = stored_paths(get_campaign(conn, campaign)["attachments"])
    campaign_templates.set_templates(conn, campaign, attach=[*current, str(path)], settings=settings)
    return path


def detach_all(conn: sqlite3.Connection, settings: Any, campaign: str) -> None:
    """The campaign's messages carry no file of their own any more (`template set --no-attachments`)."""
    campaign_templates.set_templates(conn, campaign, attach=[], settings=settings)


def attached_files(conn: sqlite3.Connection, campaign: str) -> Sequence[str]:
    """The files every message of the campaign carries."""
    return stored_paths(get_campaign(conn, campaign)["attachments"])


def recipient_emails(conn: sqlite3.Connection, campaign: str, *, limit: int = 500) -> list[str]:
    """The campaign's recipients to preview a template for, pending ones first."""
    return [row[0] for row in conn.execute(
        "SELECT r.email FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE c.name = ?"
        " ORDER BY r.status != 'pending', r.id LIMIT ?", (campaign, limit))]


@dataclass(frozen=True)
class RunPlan:
    """What a run started now would do for one campaign (`plan.plan_run`, as `run --plan` tells
    it), without rendering or sending anything."""

    campaign: str
    paused: bool
    daily_limit: int  # today's, after any warm-up step
    remaining_today: int  # of the whole database's limit
    to_send: tuple[tuple[str, int], ...]  # (address, step) in the order the run sends them
    held: tuple[tuple[str, int, str], ...]  # (address, step, why): the first `look_at`, who could go now first
    held_total: int = 0  # of this campaign; `held` may list fewer
    over_limit: int = 0  # of every campaign: sendable now, but past what is left of today's limit
    closed: str | None = None  # why the send window is closed now in TIMEZONE, if it is


def next_run(conn: sqlite3.Connection, settings: Any, campaign: str, *, now: datetime, look_at: int = 200) -> RunPlan:
    """The messages of `campaign` a real run started at `now` would send, from `plan.plan_run`
    (what `run --plan` prints: the send window in each recipient's zone, today's DAILY_LIMIT after
    warm-up, the per-company limits, paused campaigns, the recipients the run skips as mailed in
    another campaign or stopped by a reply), and who of it is held back and why: the first
    `look_at`, those who could go now first, and how many in all. SES's own quota is not read here."""
    from . import plan, schedule

    row = get_campaign(conn, campaign)
    planned = plan.plan_run(conn, settings, now=now)
    to_send = tuple((p.email, p.step) for p in planned.send if p.campaign == campaign)
    held = [(h.email, h.step, h.reason) for h in planned.held if h.campaign == campaign]
    held.sort(key=lambda h: h[2].startswith("waiting for a reply"))  # stable: who could go now comes first
    closed = schedule.window_problem(now, settings.tz, *settings.send_window)
    if closed is not None:
        closed = f"{closed} (SEND_DAYS {settings.send_days}, SEND_HOURS {settings.send_hours}, TIMEZONE {settings.tz})"
    return RunPlan(campaign, row["status"] == "paused", planned.daily_limit, planned.remaining_today, to_send,
                   tuple(held[:look_at]), len(held), planned.over_limit, closed)
