"""Changing a campaign's templates: checked against the campaign's recipients, then stored at once."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import attachments
from .database import ensure_campaign, transaction, update_campaign_templates
from .email_templates import CampaignTemplate, check_template
from .errors import TemplateRenderError


def campaign_columns(conn: sqlite3.Connection, campaign: str) -> set[str]:
    """Every extra CSV column imported into the campaign (empty for a new or empty campaign)."""
    # json_each: https://www.sqlite.org/json1.html#jeach
    rows = conn.execute(
        "SELECT DISTINCT j.key FROM campaigns c JOIN recipients r ON r.campaign_id = c.id,"
        " json_each(CASE WHEN NOT json_valid(r.fields) THEN '{}'"
        "                WHEN json_type(r.fields) = 'object' THEN r.fields ELSE '{}' END) j"
        " WHERE c.name = ?", (campaign,)).fetchall()
    return {row[0] for row in rows}


def set_templates(conn: sqlite3.Connection, campaign: str, *, subject: str | None = None,
                  html: str | None = None, text: str | None = None, settings: Any = None,
                  attach: Sequence[str | Path] | None = None) -> None:
    """Store the given templates (the others keep their value), creating the campaign if new.

    Each template must compile and read only variables every run can fill: the recipient fields,
    the built-ins and the CSV columns already imported into this campaign (so for a new campaign,
    import the CSV first if a template uses its extra columns). With `settings`, the templates
    are also rendered for the campaign's first recipient, as a run would, so a template that
    passes the render limits or fails at run time (`{{ 1 / 0 }}`) is refused now, not at 7 am.
    `attach` replaces the files every message of the campaign carries (an empty list removes them).

    Raises:
        TemplateRenderError: nothing to set, an empty template, a syntax error or an unknown
            variable, naming the template; nothing is saved.
        attachments.AttachmentError: a file to attach is missing, unreadable, of a type SES
            refuses, or the files alone exceed MAX_MESSAGE_BYTES; nothing is saved.
    """
    if subject is None and html is None and text is None and attach is None:
        raise TemplateRenderError("nothing to set: give --subject, --html, --text and/or --attach")
    for label, value in (("subject", subject), ("HTML body", html)):
        if value is not None and not value.strip():
            raise TemplateRenderError(f"campaign {campaign!r}: the {label} template is empty")
    check_template(subject, html, text, campaign=campaign, columns=campaign_columns(conn, campaign))
    if settings is not None:
        _render_first_recipient(conn, campaign, settings, subject=subject, html=html, text=text)
    files = _campaign_files(attach, settings) if attach else None
    with transaction(conn):
        ensure_campaign(conn, campaign)
        if attach is not None:
            conn.execute("UPDATE campaigns SET attachments = ? WHERE name = ?", (files, campaign))
    if subject is not None or html is not None or text is not None:
        update_campaign_templates(conn, campaign, subject=subject, html=html, text=text)


def _campaign_files(attach: Sequence[str | Path], settings: Any) -> str:
    """The JSON list to store for `attach`, checked as a run will check it."""
    stored = attachments.campaign_files(attach)
    limit = getattr(settings, "max_message_bytes", attachments.DEFAULT_MAX_MESSAGE_BYTES)
    total = attachments.encoded_total(attachments.stored_paths(stored))
    if total > limit:
        raise attachments.AttachmentError(attachments.too_big(total, limit))
    return stored


def _render_first_recipient(conn: sqlite3.Connection, campaign: str, settings: Any, **new: str | None) -> None:
    """Render the templates as they will be stored for the campaign's oldest recipient, if any."""
    row = conn.execute(
        "SELECT r.* FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE c.name = ?"
        " ORDER BY r.id LIMIT 1", (campaign,)).fetchone()
    if row is None:
        return
    stored = conn.execute("SELECT subject_template, html_template, text_template FROM campaigns WHERE name = ?",
                          (campaign,)).fetchone()
    template = CampaignTemplate(campaign, new["subject"] or stored[0], new["html"] or stored[1],
                                new["text"] if new["text"] is not None else stored[2])
    template.render({**dict(row), "custom_subject": None, "custom_body": None}, settings)
