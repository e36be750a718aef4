"""Which template and subject a recipient gets: the named template of their `template` column
(else the campaign's own), and one of its subject variants.

The variant is the recipient's rank among the recipients of the same campaign and template, in
import order, modulo the number of variants: stable across runs (a recipient keeps its rank), and
balanced, since the queue sends in that same order (with two variants, any run of consecutive
recipients of a segment splits half and half). Only templates with several variants pay for the
rank's count, which the `recipients_segment` index answers.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from .attachments import Attachment, for_recipient_or_refuse
from .email_templates import CampaignTemplate, RenderedEmail
from .errors import TemplateRenderError


class CampaignTemplates:
    """A campaign's own template and its named ones, compiled once (per run or preview)."""

    def __init__(self, conn: sqlite3.Connection, campaign_row: Any, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._conn = conn
        self.campaign = campaign_row["name"]
        self.campaign_row = campaign_row
        self._campaign_id = campaign_row["id"]
        self.default = CampaignTemplate.from_campaign(campaign_row, clock=clock)
        self.named = {
            row["name"]: CampaignTemplate.from_campaign(campaign_row, clock=clock, template_row=row)
            for row in conn.execute("SELECT * FROM templates WHERE campaign_id = ? ORDER BY id", (self._campaign_id,))
        }

    def pick(self, recipient_row: Any) -> CampaignTemplate:
        """The recipient's named template, else the campaign's own.

        Raises:
            TemplateRenderError: the recipient names a template the campaign no longer has.
        """
        name = _column(recipient_row, "template")
        if not name:
            return self.default
        if name not in self.named:
            raise TemplateRenderError(
                f"campaign {self.campaign!r}: recipient {recipient_row['email']} uses template {name!r}, which the "
                f"campaign does not have; add it with `template add {name}`")
        return self.named[name]

    def render(self, recipient_row: Any, settings: Any, *, derive_text: bool = True) -> RenderedEmail:
        """Render the recipient's template with their subject variant (`derive_text`: see CampaignTemplate)."""
        template = self.pick(recipient_row)
        variant = self.rank(recipient_row) if len(template.subject_variants) > 1 else 0
        return template.render(recipient_row, settings, derive_text=derive_text, variant=variant)

    def attachments(self, recipient_row: Any) -> list[Attachment]:
        """The files of the recipient's message, read now (see attachments.for_recipient_or_refuse)."""
        return for_recipient_or_refuse(self.campaign_row, recipient_row)

    def rank(self, recipient_row: Any) -> int:
        """How many recipients of the same campaign and template were imported before this one."""
        return self._conn.execute(
            "SELECT count(*) FROM recipients WHERE campaign_id = ? AND template IS ? AND id < ?",
            (self._campaign_id, _column(recipient_row, "template"), recipient_row["id"])).fetchone()[0]


def _column(row: Any, key: str) -> Any:
    return row[key] if key in row.keys() else None
