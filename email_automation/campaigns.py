"""Changing a campaign's templates: checked first, then stored, so a broken one never lands."""

from __future__ import annotations

import sqlite3

from .database import ensure_campaign, transaction, update_campaign_templates
from .email_templates import check_template


def store_templates(conn: sqlite3.Connection, campaign: str, *, subject: str | None = None,
                    html: str | None = None, text: str | None = None) -> None:
    """Compile the new templates, create the campaign if new, then store them (unset ones stay).

    Raises:
        TemplateRenderError: naming the part and line of the first syntax error; nothing is stored.
    """
    check_template(subject or "", html or "", text)
    with transaction(conn):
        ensure_campaign(conn, campaign)  # a new campaign starts from the default templates
    update_campaign_templates(conn, campaign, subject=subject, html=html, text=text)
