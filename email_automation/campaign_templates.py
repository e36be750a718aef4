"""Changing a campaign's templates: checked against the campaign's recipients, then stored at once."""

from __future__ import annotations

import sqlite3

from .database import ensure_campaign, transaction, update_campaign_templates
from .email_templates import check_template
from .errors import TemplateRenderError


def campaign_columns(conn: sqlite3.Connection, campaign: str) -> set[str]:
    """Every extra CSV column imported into the campaign (empty for a new or empty campaign)."""
    # json_each: https://www.sqlite.org/json1.html#jeach
    rows = conn.execute(
        "SELECT DISTINCT j.key FROM campaigns c JOIN recipients r ON r.campaign_id = c.id,"
        " json_each(CASE WHEN json_valid(r.fields) THEN r.fields ELSE '{}' END) j"
        " WHERE c.name = ? AND json_type(r.fields) = 'object'", (campaign,)).fetchall()
    return {row[0] for row in rows}


def set_templates(conn: sqlite3.Connection, campaign: str, *, subject: str | None = None,
                  html: str | None = None, text: str | None = None) -> None:
    """Store the given templates (the others keep their value), creating the campaign if new.

    Each template must compile and read only variables every run can fill: the recipient fields,
    the built-ins and the CSV columns already imported into this campaign (so for a new campaign,
    import the CSV first if a template uses its extra columns).

    Raises:
        TemplateRenderError: nothing to set, an empty template, a syntax error or an unknown
            variable, naming the template; nothing is saved.
    """
    if subject is None and html is None and text is None:
        raise TemplateRenderError("nothing to set: give --subject, --html and/or --text")
    for label, value in (("subject", subject), ("HTML body", html)):
        if value is not None and not value.strip():
            raise TemplateRenderError(f"campaign {campaign!r}: the {label} template is empty")
    check_template(subject, html, text, campaign=campaign, columns=campaign_columns(conn, campaign))
    with transaction(conn):
        ensure_campaign(conn, campaign)
    update_campaign_templates(conn, campaign, subject=subject, html=html, text=text)
