"""The content of follow-up steps: each step's own version and its version per named template
(segment), changed with the same checks as `template set`. Recipients of segment NAME get step
N's NAME version if there is one, else step N's own (sequences.render_step picks it).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import template_columns
from .database import get_campaign, iso, transaction
from .errors import NotFoundError, TemplateRenderError
from .sequences import FIRST_STEP, check_wait, step_place


@dataclass(frozen=True)
class StepVersion:
    """Step `number`'s content for the recipients of one segment (`template` None: the step's default)."""

    number: int
    template: str | None
    subject: str | None  # None: `Re: ` + the subject the recipient got at step 1
    html: str
    text: str | None


def step_versions(conn: sqlite3.Connection, campaign: str, *, template: str | None = None) -> list[StepVersion]:
    """Each follow-up step's default, and its version for each segment, in step order; with
    `template`, only that segment's versions."""
    row = get_campaign(conn, campaign)
    found = []
    for step in conn.execute("SELECT * FROM campaign_steps WHERE campaign_id = ? ORDER BY step", (row["id"],)).fetchall():
        if template is None:
            found.append(_version(step["step"], None, step))
        for version in conn.execute("SELECT * FROM step_templates WHERE step_id = ? AND (name = ? OR ? IS NULL)"
                                    " ORDER BY id", (step["id"], template, template)):
            found.append(_version(step["step"], version["name"], version))
    return found


def _version(number: int, template: str | None, row: Any) -> StepVersion:
    return StepVersion(number, template, row["subject_template"], row["html_template"], row["text_template"])


def _step_row(conn: sqlite3.Connection, campaign: str, number: int) -> Any:
    """The `campaign_steps` row of follow-up step `number`.

    Raises:
        NotFoundError: no such campaign, or no such step (naming the steps it has).
        TemplateRenderError: step 1, which is the campaign's own template.
    """
    row = get_campaign(conn, campaign)
    if number == FIRST_STEP:
        raise TemplateRenderError(f"campaign {campaign!r}: step 1 is the campaign's own template; "
                                  "change it with `template set` (or `template add NAME` for a segment)")
    step = conn.execute("SELECT * FROM campaign_steps WHERE campaign_id = ? AND step = ?",
                        (row["id"], number)).fetchone()
    if step is None:
        last = conn.execute("SELECT MAX(step) FROM campaign_steps WHERE campaign_id = ?", (row["id"],)).fetchone()[0]
        has = f"steps 2 to {last}" if last and last > 2 else ("step 2" if last else "no follow-up step")
        raise NotFoundError(f"campaign {campaign!r} has no step {number} (it has {has})")
    return step


def set_step(conn: sqlite3.Connection, campaign: str, number: int, *, template: str | None = None,
             subject: str | None = None, html: str | None = None, text: str | None = None,
             after_days: int | None = None, settings: Any = None, now: datetime,
             notes: list[str] | None = None) -> bool:
    """Change follow-up step `number`: its default, or with `template` the version the recipients
    of that named template (segment) get; with `after_days`, its wait. Returns True when an existing
    version was replaced.

    None keeps a part as it is; an empty `subject` means `Re: ` + the step-1 subject and an empty
    `text` one derived from the HTML. A new segment version needs its HTML. Checked as `template
    set` checks (`check_version`): each part compiles, each recipient who may still get it has the
    CSV columns it reads, and with `settings` it is rendered (within the render limits) for the first recipient it concerns. `notes` gets a
    line for the CSV columns it reads that no recipient who may get it was imported with yet.

    The wait may change after the step was sent to some: a recipient's due day is worked out from
    the wait at each run, so the new one applies to everyone not yet sent the step.

    Raises:
        NotFoundError: no such campaign, step or named template.
        TemplateRenderError: step 1, nothing to set, an empty or broken part (naming the step and
            template), a wait outside 1..MAX_WAIT_DAYS or one given with `template`; nothing is saved.
    """
    from .campaign_templates import get_template

    step = _step_row(conn, campaign, number)
    if after_days is not None:
        if template is not None:
            raise TemplateRenderError(f"{step_place(campaign, number)}: --after-days is the step's wait, the same for "
                                      "every template: give it without --template")
        check_wait(campaign, after_days)
    if template is not None:
        template = get_template(conn, campaign, template.strip())["name"]
    where = step_place(campaign, number, template)
    if subject is None and html is None and text is None:
        if after_days is None:
            raise TemplateRenderError(f"{where}: nothing to set: give --after-days, --subject, --html and/or --text")
        with transaction(conn):
            conn.execute("UPDATE campaign_steps SET after_days = ? WHERE id = ?", (after_days, step["id"]))
        return False
    current = (conn.execute("SELECT * FROM step_templates WHERE step_id = ? AND name = ?",
                            (step["id"], template)).fetchone() if template else step)
    if html is None and current is None:
        raise TemplateRenderError(f"{where}: a new version of the step needs its --html")

    def kept(part: str) -> str | None:
        return None if current is None else current[part]

    merged = StepVersion(number, template,
                         (subject.strip() or None) if subject is not None else kept("subject_template"),
                         html if html is not None else kept("html_template"),
                         (text if text.strip() else None) if text is not None else kept("text_template"))
    found = check_version(conn, campaign, merged, settings)
    if notes is not None:
        notes += found
    with transaction(conn):
        if template is None:
            conn.execute("UPDATE campaign_steps SET subject_template = ?, html_template = ?, text_template = ?,"
                         " after_days = coalesce(?, after_days) WHERE id = ?",
                         (merged.subject, merged.html, merged.text, after_days, step["id"]))
            return False
        replaced = conn.execute("DELETE FROM step_templates WHERE step_id = ? AND name = ?",
                                (step["id"], template)).rowcount
        conn.execute("INSERT INTO step_templates (step_id, name, subject_template, html_template, text_template,"
                     " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                     (step["id"], template, merged.subject, merged.html, merged.text, iso(now)))
    return bool(replaced)


def check_version(conn: sqlite3.Connection, campaign: str, version: StepVersion, settings: Any = None) -> list[str]:
    """Check a step's content as `template set` checks a campaign's: each part compiles, and every
    recipient who may still get this version has each CSV column it reads; with `settings`, it
    renders (within the render limits) for the first recipient it concerns. Returns the note for
    columns no such recipient was imported with yet.

    Raises:
        TemplateRenderError: naming the campaign, the step, the template and the problem.
    """
    from .email_templates import check_template

    where = step_place(campaign, version.number, version.template)
    try:
        if not version.html.strip():
            raise TemplateRenderError("the HTML body template is empty")
        reads = check_template(version.subject, version.html, version.text)
        notes = template_columns.require(conn, campaign, _audience(conn, campaign, version), reads)
    except TemplateRenderError as err:
        raise TemplateRenderError(f"{where}: {err}") from None
    if settings is not None:
        _render_first(conn, campaign, version, settings, reads)  # its errors name the step already
    return notes


def _audience(conn: sqlite3.Connection, campaign: str, version: StepVersion) -> template_columns.Audience:
    """Who gets this version: its template's recipients, or for the step's own, those whose
    template has no version of it (everyone, for a step not added yet)."""
    if version.template is not None:
        return template_columns.named_template(version.template, version.number)
    step = conn.execute("SELECT s.id FROM campaign_steps s JOIN campaigns c ON c.id = s.campaign_id"
                        " WHERE c.name = ? AND s.step = ?", (campaign, version.number)).fetchone()
    return template_columns.step_default(version.number, step[0] if step else None)


def remove_step_version(conn: sqlite3.Connection, campaign: str, number: int, template: str) -> None:
    """Remove step `number`'s version for segment `template`: its recipients get the step's default.

    Raises:
        NotFoundError: no such campaign, step or version.
        TemplateRenderError: one of its recipients who may still get the step lacks a CSV column
            the step's default reads; nothing is removed.
    """
    step = _step_row(conn, campaign, number)
    reads = template_columns.stored_reads([step["subject_template"]] if step["subject_template"] else [],
                                          step["html_template"], step["text_template"])
    with transaction(conn):
        if not conn.execute("DELETE FROM step_templates WHERE step_id = ? AND name = ?",
                            (step["id"], template)).rowcount:
            raise NotFoundError(f"campaign {campaign!r}: step {number} has no version for template {template!r}")
        template_columns.require(conn, campaign, template_columns.named_template(template, number), reads,
                                 where=f"{step_place(campaign, number, template)}: cannot be removed: ",
                                 instead="the step's own version")


def _render_first(conn: sqlite3.Connection, campaign: str, version: StepVersion, settings: Any,
                  reads: dict[str, str]) -> None:
    """Render a step's draft, as a run would, for the oldest recipient of its segment (or of the
    campaign), with an empty value for each column of `reads` it lacks (who gets it has them all)."""
    from .sequences import step_fields, step_template

    first = ("SELECT r.* FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE c.name = ?"
             " AND (r.template IS ? OR ?) ORDER BY r.id LIMIT 1")
    row = conn.execute(first, (campaign, version.template, False)).fetchone()
    if row is None:
        row = conn.execute(first, (campaign, None, True)).fetchone()
    if row is not None:
        template = step_template(campaign, version.subject, version.html, version.text, template=version.template,
                                 step=version.number)
        template.render(step_fields(template_columns.with_columns(row, reads), version.subject, "a subject"), settings,
                        subject_required=not template_columns.lacks_columns(row, reads))
