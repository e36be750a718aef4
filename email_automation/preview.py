"""Render one recipient's message exactly as a run would, without claiming or sending."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from email.message import EmailMessage

from .attachments import AttachmentError, for_recipient_or_refuse
from .config import Settings
from .database import get_campaign, utc_now
from .email_templates import RenderedEmail
from .errors import NotFoundError, PermanentSendError
from .messages import build_message, recipient_name
from .reports import next_queued
from .sequences import FIRST_STEP, Thread, render_step, thread_of
from .template_sets import CampaignTemplates


# How a run refuses a recipient for its files (attachments.for_recipient_or_refuse, messages.build_wire).
_FILE_PROBLEMS = frozenset({"AttachmentError", "MessageTooLarge"})

# The headers `preview` prints, in the message's order.
SHOWN_HEADERS = ("From", "To", "Reply-To", "Subject", "In-Reply-To", "References")


@dataclass(frozen=True)
class Preview:
    email: str
    rendered: RenderedEmail
    message: EmailMessage

    def header_lines(self) -> list[str]:
        """`Name: value` for the headers of SHOWN_HEADERS that the message has, decoded: read from
        the built message, so the preview shows what is sent (To with the name, the subject on one line)."""
        return [f"{name}: {self.message[name]}" for name in SHOWN_HEADERS if self.message[name]]

    def attachment_lines(self) -> list[str]:
        """`name (type, size)` for each attached file, as `preview` lists them."""
        return [f"{part.get_filename()} ({part.get_content_type()}, {len(part.get_content()):,} bytes)"
                for part in self.message.iter_attachments()]


def render_preview(conn: sqlite3.Connection, settings: Settings, *, campaign: str, email: str | None = None,
                   step: int = FIRST_STEP) -> Preview:
    """The given recipient's message at `step`, or the next one's to get that step when no address is given.

    Raises:
        NotFoundError: no such campaign, recipient or step.
        AttachmentError: a file of the message is missing, unreadable or makes it too big: bad
            input to fix (exit code 2), where a run fails only that recipient (PermanentSendError).
    """
    row = get_campaign(conn, campaign)
    if step != FIRST_STEP:
        _step_exists(conn, row, step)
    if email:
        from .addresses import lookup_form  # email-validator: loaded for a lookup by address, not with the page

        recipient = conn.execute("SELECT * FROM recipients WHERE campaign_id = ? AND email = ?",
                                 (row["id"], lookup_form(email))).fetchone()
    elif step != FIRST_STEP:  # the first whose sequence has reached that step, else the first of all
        recipient = conn.execute(
            "SELECT * FROM recipients WHERE campaign_id = ? ORDER BY (status = 'sent' AND step = ?)"
            " OR (status = 'pending' AND step = ?) DESC, id LIMIT 1", (row["id"], step - 1, step)).fetchone()
    else:  # the one the next run sends first; any pending one if the campaign is paused
        recipient = next_queued(conn, row["id"], stop_company=settings.stop_company_on_reply) or conn.execute(
            "SELECT * FROM recipients WHERE campaign_id = ? AND status = 'pending' ORDER BY id LIMIT 1",
            (row["id"],)).fetchone()
    if recipient is None:
        raise NotFoundError(f"no {'recipient ' + lookup_form(email) if email else 'pending recipient'} in campaign {campaign!r}")
    templates = CampaignTemplates(conn, row)
    if step == FIRST_STEP:
        rendered = templates.render(recipient, settings)
        try:
            message = build_message(rendered, to=recipient["email"], to_name=recipient_name(recipient),
                                    settings=settings, now=utc_now(), attachments=for_recipient_or_refuse(row, recipient))
        except PermanentSendError as err:
            if err.code not in _FILE_PROBLEMS:
                raise
            raise AttachmentError(str(err)) from err  # the run's own wording, with the exit code of a file to fix
        return Preview(recipient["email"], rendered, message)
    thread = follow_up_thread(conn, settings, templates, recipient)
    rendered = render_step(conn, recipient, campaign, step, settings, thread, {})
    message = build_message(rendered, to=recipient["email"], to_name=recipient_name(recipient), settings=settings,
                            now=utc_now(), thread=thread.message_ids)
    return Preview(recipient["email"], rendered, message)


def follow_up_thread(conn: sqlite3.Connection, settings: Settings, templates: CampaignTemplates, recipient) -> Thread:
    """The thread a follow-up to `recipient` answers: the messages sent to them, or before step 1
    was sent, no message yet and the subject step 1 would have."""
    thread = thread_of(conn, recipient["id"], region=settings.aws_region or None)
    if thread is not None:
        return thread
    return Thread(templates.render(recipient, settings, derive_text=False).subject, ())


def _step_exists(conn: sqlite3.Connection, campaign_row, step: int) -> None:
    last = conn.execute("SELECT MAX(step) FROM campaign_steps WHERE campaign_id = ?", (campaign_row["id"],)).fetchone()[0]
    if step < FIRST_STEP or step > (last or FIRST_STEP):
        has = f"steps 1 to {last}" if last else "only step 1 (no follow-up step)"
        raise NotFoundError(f"campaign {campaign_row['name']!r} has no step {step} (it has {has})")
