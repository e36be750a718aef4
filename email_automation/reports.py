"""Read-only queries behind `email-automation status` and the dashboard.

Aggregation happens in SQL so both stay quick on a million send_log rows; nothing here writes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from .database import COUNTED_LOG_STATUSES, RECIPIENT_STATUSES
from .ledger import batch_date, counted_today


@dataclass(frozen=True)
class CampaignStatus:
    name: str
    state: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class StatusSummary:
    campaigns: list[CampaignStatus]
    today: str
    counted_today: int
    daily_limit: int
    suppressed: int

    @property
    def remaining_today(self) -> int:
        return max(0, self.daily_limit - self.counted_today)

    def as_dict(self) -> dict:
        return {
            "campaigns": {c.name: {"state": c.state, **c.counts} for c in self.campaigns},
            "today": self.today,
            "sent_today": self.counted_today,
            "daily_limit": self.daily_limit,
            "remaining_today": self.remaining_today,
            "suppressed": self.suppressed,
        }


def status_summary(conn: sqlite3.Connection, *, now: datetime, tz, daily_limit: int) -> StatusSummary:
    """Recipients by status per campaign, and today's counted attempts against the limit."""
    counts: dict[int, dict[str, int]] = {}
    for row in conn.execute("SELECT campaign_id, status, count(*) FROM recipients GROUP BY campaign_id, status"):
        counts.setdefault(row[0], {})[row[1]] = row[2]
    campaigns = [
        CampaignStatus(c["name"], c["status"], {s: counts.get(c["id"], {}).get(s, 0) for s in RECIPIENT_STATUSES})
        for c in conn.execute("SELECT id, name, status FROM campaigns ORDER BY id")
    ]
    day = batch_date(now, tz)
    suppressed = conn.execute("SELECT count(*) FROM suppressions").fetchone()[0]
    return StatusSummary(campaigns, day, counted_today(conn, day), daily_limit, suppressed)


def unknown_recipients(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Recipients whose last send may or may not have gone out: each needs a person's decision."""
    return conn.execute(
        "SELECT r.email, c.name AS campaign, r.last_error, r.updated_at FROM recipients r"
        " JOIN campaigns c ON c.id = r.campaign_id WHERE r.status = 'unknown' ORDER BY r.updated_at"
    ).fetchall()


__all__ = ["COUNTED_LOG_STATUSES", "StatusSummary", "status_summary", "unknown_recipients"]
