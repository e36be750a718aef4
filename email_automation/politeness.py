"""Per-company politeness: few first messages to one company a day, few people per campaign.

A company is the `company` value (case- and space-insensitive) or, when it is empty, the
address's domain unless that is a free-mail domain; a free-mail address without a company is
a person of their own, and no limit applies to it.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .applications import company_domain


def company_key(company: str | None, email: str) -> str:
    """Who a recipient works for, as the limits compare it ("" when unknown)."""
    name = " ".join((company or "").split()).lower()
    return name or company_domain(email)


@dataclass
class CompanyLimits:
    """What was already used today and per campaign; `admits` counts each recipient it lets through."""

    per_day: int
    per_campaign: int
    today: Counter
    in_campaign: Counter

    def admits(self, row) -> bool:
        return self.refusal(row) is None

    def refusal(self, row) -> str | None:
        """Why this recipient's first message must wait, or None (then it is counted as sent)."""
        key = company_key(row["company"], row["email"])
        if not key:
            return None
        campaign = (row["campaign_id"], key)
        if self.today[key] >= self.per_day:
            return f"{self.today[key]} first message(s) to {key} today (MAX_NEW_PER_COMPANY_PER_DAY)"
        if self.in_campaign[campaign] >= self.per_campaign:
            return f"{self.in_campaign[campaign]} people at {key} contacted in this campaign (MAX_CONTACTS_PER_COMPANY)"
        self.today[key] += 1
        self.in_campaign[campaign] += 1
        return None


def limits_for(conn: sqlite3.Connection, day: str, *, per_day: int, per_campaign: int) -> CompanyLimits:
    """The counts so far: first messages (step 1) that may have gone out on `day` (the daily
    limit's day), and people contacted per campaign and company."""
    today: Counter = Counter()
    for company, email in conn.execute(
            "SELECT r.company, r.email FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
            " WHERE l.batch_date = ? AND l.step = 1 AND l.status IN ('sending', 'sent', 'unknown')", (day,)):
        today[company_key(company, email)] += 1
    in_campaign: Counter = Counter()
    for campaign_id, company, email in conn.execute(
            "SELECT campaign_id, company, email FROM recipients"
            " WHERE status IN ('sending', 'sent', 'unknown') OR step > 1"):
        in_campaign[(campaign_id, company_key(company, email))] += 1
    return CompanyLimits(per_day, per_campaign, today, in_campaign)


def first_admitted(rows: Iterable, limits: CompanyLimits, size: int) -> Iterator:
    """The first `size` rows the limits admit, in the queue's order."""
    if size <= 0:
        return
    for row in rows:
        if limits.admits(row):
            yield row
            size -= 1
            if size == 0:
                return
