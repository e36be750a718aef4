"""Render one recipient's message exactly as a run would, without claiming or sending."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from email.message import EmailMessage

from .addresses import lookup_form
from .attachments import for_recipient_or_refuse
from .config import Settings
from .database import get_campaign, utc_now
from .email_templates import RenderedEmail
from .errors import NotFoundError
from .messages import build_message, recipient_name
from .reports import next_queued
from .template_sets import CampaignTemplates


@dataclass(frozen=True)
class Preview:
    email: str
    rendered: RenderedEmail
    message: EmailMessage

    def attachment_lines(self) -> list[str]:
        """`name (type, size)` for each attached file, as `preview` lists them."""
        return [f"{part.get_filename()} ({part.get_content_type()}, {len(part.get_content()):,} bytes)"
                for part in self.message.iter_attachments()]


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
    rendered = CampaignTemplates(conn, row).render(recipient, settings)
    message = build_message(rendered, to=recipient["email"], to_name=recipient_name(recipient), settings=settings,
                            now=utc_now(), attachments=for_recipient_or_refuse(row, recipient))
    return Preview(recipient["email"], rendered, message)
