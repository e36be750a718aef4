"""Render one recipient's message exactly as a run would, without claiming or sending."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from email.message import EmailMessage

from .addresses import lookup_form
from .config import Settings
from .database import get_campaign, utc_now
from .email_templates import CampaignTemplate, RenderedEmail
from .errors import NotFoundError
from .messages import build_message, recipient_name
from .reports import next_queued


@dataclass(frozen=True)
class Preview:
    email: str
    rendered: RenderedEmail
    message: EmailMessage


def render_preview(conn: sqlite3.Connection, settings: Settings, *, campaign: str, email: str | None = None) -> Preview:
    """The given recipient's message, or the next pending one's when no address is given."""
    row = get_campaign(conn, campaign)
    if email:
        recipient = conn.execute("SELECT * FROM recipients WHERE campaign_id = ? AND email = ?",
                                 (row["id"], lookup_form(email))).fetchone()
    else:  # the one the next run sends first; any pending one if the campaign is paused
        recipient = next_queued(conn, row["id"]) or conn.execute(
            "SELECT * FROM recipients WHERE campaign_id = ? AND status = 'pending' ORDER BY id LIMIT 1",
            (row["id"],)).fetchone()
    if recipient is None:
        raise NotFoundError(f"no {'recipient ' + lookup_form(email) if email else 'pending recipient'} in campaign {campaign!r}")
    rendered = CampaignTemplate.from_campaign(row).render(recipient, settings)
    message = build_message(rendered, to=recipient["email"], to_name=recipient_name(recipient), settings=settings,
                            now=utc_now())
    return Preview(recipient["email"], rendered, message)
