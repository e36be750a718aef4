"""Changing a campaign's templates, its own and its named ones: checked against the campaign's
recipients, then stored at once."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import attachments, template_columns
from .database import DEFAULT_TEMPLATE, ensure_campaign, get_campaign, iso, transaction, utc_now
from .email_templates import CampaignTemplate, check_template, subject_variants
from .errors import NotFoundError, TemplateRenderError


# Statuses a person can put back in the queue (retry-failed, unsuppress, resolve --pending), in the
# order `template remove` names them.
REQUEUED = ("failed", "skipped", "unknown")


def set_templates(conn: sqlite3.Connection, campaign: str, *, subject: str | Sequence[str] | None = None,
                  html: str | None = None, text: str | None = None, settings: Any = None,
                  attach: Sequence[str | Path] | None = None, notes: list[str] | None = None) -> None:
    """Store the given templates (the others keep their value), creating the campaign if new.

    Each template must compile, and every recipient who may still get it must have each CSV
    column it reads (see template_columns.py); before any such recipient is imported, a column is
    accepted and a line saying so is added to `notes`. With `settings`, the templates are also
    rendered for the campaign's first recipient, as a run would, so a template that passes the
    render limits or fails at run time (`{{ 1 / 0 }}`) is refused now, not at 7 am.
    Several subjects are variants, each recipient gets one (see template_sets.py).
    `attach` replaces the files every message of the campaign carries (an empty list removes them).

    Raises:
        TemplateRenderError: nothing to set, an empty template, a syntax error, an unknown
            variable or a column a recipient lacks, naming the template; nothing is saved.
        attachments.AttachmentError: a file to attach is missing, unreadable, of a type SES
            refuses, or the files alone exceed MAX_MESSAGE_BYTES; nothing is saved.
    """
    subjects = _subjects(subject)
    if subjects is None and html is None and text is None and attach is None:
        raise TemplateRenderError("nothing to set: give --subject, --html, --text and/or --attach")
    found = check_draft(conn, campaign, subjects, html, text)
    if settings is not None:
        stored = conn.execute("SELECT * FROM campaigns WHERE name = ?", (campaign,)).fetchone()
        _render_first_recipient(conn, campaign, None, settings, stored, subjects=subjects, html=html, text=text)
    files = _campaign_files(conn, campaign, attach, settings) if attach else None
    with transaction(conn):  # all or nothing
        ensure_campaign(conn, campaign)
        if attach is not None:
            conn.execute("UPDATE campaigns SET attachments = ? WHERE name = ?", (files, campaign))
        if subjects is not None:
            conn.execute("UPDATE campaigns SET subject_template = ?, subject_variants = ? WHERE name = ?",
                         (subjects[0], _variants(subjects), campaign))
        conn.execute("UPDATE campaigns SET html_template = COALESCE(?, html_template),"
                     " text_template = COALESCE(?, text_template) WHERE name = ?", (html, text, campaign))
    if notes is not None:
        notes += found


def add_template(conn: sqlite3.Connection, campaign: str, name: str, *, subject: str | Sequence[str] | None,
                 html: str | None, text: str | None = None, settings: Any = None,
                 notes: list[str] | None = None) -> bool:
    """Store the named template `name` of `campaign` (created if new), replacing one of that name.

    Recipients whose `template` column holds `name` get it. It is checked like `set_templates`,
    against the recipients that use it (or, before any does, the campaign's first), and `notes`
    gets the same lines. Returns True when it replaced a template.

    Raises:
        TemplateRenderError: a bad name, no subject or HTML, or a template that does not compile,
            reads a column one of its recipients lacks, or does not render; nothing is saved.
    """
    name = check_name(name)
    subjects = _subjects(subject)
    if not subjects or html is None:
        raise TemplateRenderError(f"template {name!r}: give its --subject and --html")
    found = check_draft(conn, campaign, subjects, html, text, template=name)
    if settings is not None:
        _render_first_recipient(conn, campaign, name, settings, None, subjects=subjects, html=html, text=text)
    with transaction(conn):
        row = ensure_campaign(conn, campaign)
        replaced = conn.execute("DELETE FROM templates WHERE campaign_id = ? AND name = ?", (row["id"], name)).rowcount
        conn.execute(
            "INSERT INTO templates (campaign_id, name, subject_template, subject_variants, html_template,"
            " text_template, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row["id"], name, subjects[0], _variants(subjects), html, text, iso(utc_now())))
    if notes is not None:
        notes += found
    return bool(replaced)


def get_template(conn: sqlite3.Connection, campaign: str, name: str) -> sqlite3.Row:
    """The named template `name` of `campaign`.

    Raises:
        NotFoundError: the campaign or the template does not exist.
    """
    row = conn.execute("SELECT t.* FROM templates t JOIN campaigns c ON c.id = t.campaign_id"
                       " WHERE c.name = ? AND t.name = ?", (get_campaign(conn, campaign)["name"], name)).fetchone()
    if row is None:
        raise NotFoundError(f"campaign {campaign!r} has no template {name!r}"
                            f" (it has: {', '.join(template_names(conn, campaign)) or 'none'})")
    return row


def template_names(conn: sqlite3.Connection, campaign: str) -> list[str]:
    """The named templates of `campaign`, oldest first (empty for an unknown campaign)."""
    return [row[0] for row in conn.execute(
        "SELECT t.name FROM templates t JOIN campaigns c ON c.id = t.campaign_id WHERE c.name = ? ORDER BY t.id",
        (campaign,))]


def remove_template(conn: sqlite3.Connection, campaign: str, name: str) -> dict[str, int]:
    """Delete a named template no recipient still waiting to be sent uses, with its versions of
    the follow-up steps (its recipients already sent get the steps' defaults).

    Its recipients that may be queued again (failed ones by `retry-failed`, skipped ones by
    `unsuppress`, unknown ones by `resolve --pending`) get the campaign's own template: a
    recipient naming a template the campaign no longer has would hold back its whole campaign at
    the next run. Returns how many were moved, per status.

    Raises:
        NotFoundError: no such template.
        TemplateRenderError: pending recipients use it; nothing is removed.
    """
    with transaction(conn):
        row = get_template(conn, campaign, name)
        waiting = conn.execute("SELECT count(*) FROM recipients WHERE campaign_id = ? AND template = ?"
                               " AND status IN ('pending', 'sending')", (row["campaign_id"], name)).fetchone()[0]
        if waiting:
            raise TemplateRenderError(
                f"template {name!r} of campaign {campaign!r} is used by {waiting} recipient(s) not sent yet: "
                "it stays; change it with `template add` instead")
        _check_moved(conn, campaign, name)
        moved = dict(conn.execute(
            "SELECT status, count(*) FROM recipients WHERE campaign_id = ? AND template = ?"
            f" AND status IN ({', '.join('?' * len(REQUEUED))}) GROUP BY status",
            (row["campaign_id"], name, *REQUEUED)).fetchall())
        conn.execute(f"UPDATE recipients SET template = NULL WHERE campaign_id = ? AND template = ?"
                     f" AND status IN ({', '.join('?' * len(REQUEUED))})", (row["campaign_id"], name, *REQUEUED))
        conn.execute("DELETE FROM step_templates WHERE name = ? AND step_id IN"
                     " (SELECT id FROM campaign_steps WHERE campaign_id = ?)", (name, row["campaign_id"]))
        conn.execute("DELETE FROM templates WHERE id = ?", (row["id"],))
    return {status: moved[status] for status in REQUEUED if status in moved}


def _check_moved(conn: sqlite3.Connection, campaign: str, name: str) -> None:
    """Whoever may still get template `name` gets the campaign's own template and the steps' own
    versions once it is removed: they must have the columns those read.

    Raises:
        TemplateRenderError: naming one who lacks a column, and the column.
    """
    where = f"campaign {campaign!r}: template {name!r} cannot be removed: "
    own = get_campaign(conn, campaign)
    reads = template_columns.stored_reads(subject_variants(own), own["html_template"], own["text_template"])
    template_columns.require(conn, campaign, template_columns.named_template(name), reads, where=where,
                             instead="the campaign's own template")
    for step in conn.execute("SELECT s.* FROM campaign_steps s JOIN step_templates t ON t.step_id = s.id"
                             " WHERE s.campaign_id = ? AND t.name = ? ORDER BY s.step", (own["id"], name)).fetchall():
        reads = template_columns.stored_reads([step["subject_template"]] if step["subject_template"] else [],
                                              step["html_template"], step["text_template"])
        template_columns.require(conn, campaign, template_columns.named_template(name, step["step"]), reads,
                                 where=where, instead=f"step {step['step']}'s own version")


def check_name(name: str) -> str:
    """A template name as a CSV cell can hold it: trimmed, 1-64 printable characters, not `default`,
    not starting with `(` or `+` (the dashboard's Template box names its own entries so:
    "(the campaign's own)", "+ new template").

    Raises:
        TemplateRenderError: the name cannot be used.
    """
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable() or ";" in name:
        raise TemplateRenderError(f"template name {name!r}: use 1 to 64 printable characters, no ';'")
    if name.startswith(("(", "+")):
        raise TemplateRenderError(f"template name {name!r}: a name cannot start with '(' or '+' (the dashboard's "
                                  "Template box names its own entries so)")
    if name.lower() == DEFAULT_TEMPLATE:
        raise TemplateRenderError(f"template name {name!r} is reserved for the campaign's own template "
                                  "(change it with `template set`)")
    return name


def _subjects(subject: str | Sequence[str] | None) -> list[str] | None:
    if subject is None:
        return None
    return [subject] if isinstance(subject, str) else list(subject) or None


def _variants(subjects: list[str]) -> str | None:
    return json.dumps(subjects, ensure_ascii=False) if len(subjects) > 1 else None


def check_draft(conn: sqlite3.Connection, campaign: str, subjects: list[str] | None, html: str | None,
                text: str | None, *, template: str | None = None) -> list[str]:
    """Check templates as `template set` (or, with `template`, `template add`) does before storing
    them: no empty subject or HTML, each compiles, and every recipient who may still get it has
    each CSV column it reads. Returns the note for columns no such recipient was imported with yet.

    Raises:
        TemplateRenderError: naming the part, the line and the problem.
    """
    for label, value in [*(("subject", s) for s in subjects or ()), ("HTML body", html)]:
        if value is not None and not value.strip():
            raise TemplateRenderError(f"campaign {campaign!r}: the {label} template is empty")
    reads: dict[str, str] = {}
    for index, subject in enumerate(subjects or [None]):
        found = check_template(subject, html if index == 0 else None, text if index == 0 else None, campaign=campaign)
        reads.update((column, place) for column, place in found.items() if column not in reads)
    audience = template_columns.own_template() if template is None else template_columns.named_template(template)
    return template_columns.require(conn, campaign, audience, reads, where=f"campaign {campaign!r}: ")


def _campaign_files(conn: sqlite3.Connection, campaign: str, attach: Sequence[str | Path], settings: Any) -> str:
    """The JSON list to store for `attach`, checked as a run will check it: alone, and with the own
    files of each recipient whose first message may still go out (a follow-up carries no
    attachment), as an import checks a row against the campaign's files (else every such message
    would be refused at send time). A file named twice, or by both, is sent and counted once."""
    stored = attachments.campaign_files(attach)
    limit = getattr(settings, "max_message_bytes", attachments.DEFAULT_MAX_MESSAGE_BYTES)
    paths = attachments.stored_paths(stored)
    total = attachments.encoded_total(paths)
    if total > limit:
        raise attachments.AttachmentError(attachments.too_big(total, limit))
    sizes: dict[str, int] = {}
    for email, own in conn.execute(
            "SELECT r.email, r.attachments FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
            " WHERE c.name = ? AND r.attachments IS NOT NULL AND r.status IN ('pending', 'failed') AND r.step = 1"
            " ORDER BY r.id", (campaign,)):
        extra = [p for p in dict.fromkeys(attachments.stored_paths(own)) if p not in paths]
        mine = total + sum(sizes.setdefault(p, attachments.encoded_total([p])) for p in extra)
        if mine > limit:
            raise attachments.AttachmentError(f"with {email}'s own files, {attachments.too_big(mine, limit)}")
    return stored


def _render_first_recipient(conn: sqlite3.Connection, campaign: str, name: str | None, settings: Any,
                            stored: Any, *, subjects: list[str] | None, html: str | None, text: str | None) -> None:
    """Render the template as it will be stored, every subject variant, for the oldest recipient
    that uses it (or, for a named template nobody uses yet, the campaign's oldest)."""
    first = ("SELECT r.* FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE c.name = ?"
             " AND (r.template IS ? OR ?) ORDER BY r.id LIMIT 1")
    row = conn.execute(first, (campaign, name, False)).fetchone()
    if row is None and name is not None:
        row = conn.execute(first, (campaign, name, True)).fetchone()
    if row is None:
        return
    variants = subjects or (subject_variants(stored) if stored is not None else None)
    html = html or stored["html_template"]
    text = text if text is not None or stored is None else stored["text_template"]
    template = CampaignTemplate(campaign, variants, html, text)
    # Columns the oldest one lacks are checked against who gets the template (check_draft); here, empty.
    reads = template_columns.stored_reads(variants, html, text)
    fields = template_columns.with_columns(row, reads)
    # Their own subject replaces the template's in a run: then it may be empty for them.
    required = not ((row["custom_subject"] or "").strip() or template_columns.lacks_columns(row, reads))
    for index in range(len(variants)):
        template.render({**fields, "custom_subject": None, "custom_body": None}, settings, variant=index,
                        subject_required=required)
