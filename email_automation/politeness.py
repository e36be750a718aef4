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


@dataclass(frozen=True)
class Caps:
    """MAX_NEW_PER_COMPANY_PER_DAY and MAX_CONTACTS_PER_COMPANY, as the claim re-checks them."""

    per_day: int
    per_campaign: int

    @classmethod
    def from_settings(cls, settings) -> Caps:
        return cls(settings.max_new_per_company_per_day, settings.max_contacts_per_company)


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


# First messages (step 1) that may have gone out on a day (the daily limit's day), and people
# contacted: the two counts both the batch's pick and the claim compare with the limits.
_FIRST_TODAY = ("SELECT r.company, r.email FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
                " WHERE l.batch_date = ? AND l.step = 1 AND l.status IN ('sending', 'sent', 'unknown')")
_EVERY_CAMPAIGN = "campaign_id IN (SELECT id FROM campaigns)"  # lets the (campaign_id, ...) indexes serve
_SENT_FIRST_ON_DAY = ("EXISTS (SELECT 1 FROM send_log l WHERE l.recipient_id = recipients.id AND l.batch_date = ?"
                      " AND l.step = 1 AND l.status IN ('sending', 'sent', 'unknown'))")
_CONTACTED = "(status IN ('sending', 'sent', 'unknown') OR step > 1)"
# Not fresh (pending at step 1): the condition of both company indexes (migration 14), named in each
# query that should use them. Every row the claim counts is not fresh (the triggers of migration 14).
_NOT_FRESH = "(status != 'pending' OR step > 1)"


def limits_for(conn: sqlite3.Connection, day: str, *, per_day: int, per_campaign: int) -> CompanyLimits:
    """The counts so far: first messages on `day`, and people contacted per campaign and company."""
    today: Counter = Counter()
    for company, email in conn.execute(_FIRST_TODAY, (day,)):
        today[company_key(company, email)] += 1
    in_campaign: Counter = Counter()
    for campaign_id, company, email in conn.execute(f"SELECT campaign_id, company, email FROM recipients WHERE {_CONTACTED}"):
        in_campaign[(campaign_id, company_key(company, email))] += 1
    return CompanyLimits(per_day, per_campaign, today, in_campaign)


# The expressions of the indexes recipients_company and recipients_odd_company (migrations.py),
# written alike so that SQLite uses them: a row that is not odd has this key iff company_key's.
_FOLDED = ("(CASE WHEN trim(company) = '' THEN lower(substr(email, instr(email, '@') + 1))"
           " ELSE lower(trim(company)) END)")
_ODD = ("(company GLOB '*[^ -~]*' OR instr(company, '  ') > 0 OR email GLOB '*[^ -~]*'"
        " OR instr(substr(email, instr(email, '@') + 1), '@') > 0)")


def claim_refusal(conn: sqlite3.Connection, row, day: str, caps: Caps, *, counted_today: int | None = None) -> str | None:
    """Why the first message to `row` (its campaign_id, company and email) must wait, counted
    afresh for its company alone. `counted_today`: every attempt counted on `day` (the claim has
    just read it); a company's first messages are among them, so when they are fewer than
    MAX_NEW_PER_COMPANY_PER_DAY no company can be at that limit, and it is not counted.

    Called inside the claim's write transaction, so two runs (or a run and a copy started without
    the run lock) see each other's claims and together never exceed the limits. People contacted
    in the campaign are counted through two indexes: by folded company, and the odd rows that
    only Python's `company_key` compares exactly.
    """
    key = company_key(row["company"], row["email"])
    if not key:
        return None
    # The company's people in every campaign, through the same two indexes (a Python pass over every
    # send of the day, per claim, made a run's claims quadratic).
    if counted_today is not None and counted_today < caps.per_day:
        today = 0  # at most counted_today: below the limit, which is all the comparison asks
    else:
        today = conn.execute(
            f"SELECT count(*) FROM recipients WHERE {_EVERY_CAMPAIGN} AND {_FOLDED} = ? AND NOT {_ODD}"
            f" AND {_NOT_FRESH} AND {_SENT_FIRST_ON_DAY}", (key, day)).fetchone()[0] + sum(
            company_key(company, email) == key for company, email in conn.execute(
                f"SELECT company, email FROM recipients WHERE {_EVERY_CAMPAIGN} AND {_ODD} AND {_NOT_FRESH}"
                f" AND {_SENT_FIRST_ON_DAY}",
                (day,)))
    campaign = row["campaign_id"]
    in_campaign = conn.execute(
        f"SELECT count(*) FROM recipients WHERE campaign_id = ? AND {_FOLDED} = ? AND NOT {_ODD} AND {_NOT_FRESH}"
        f" AND {_CONTACTED}",
        (campaign, key)).fetchone()[0] + sum(company_key(company, email) == key for company, email in conn.execute(
            f"SELECT company, email FROM recipients WHERE campaign_id = ? AND {_ODD} AND {_NOT_FRESH} AND {_CONTACTED}",
            (campaign,)))
    return CompanyLimits(caps.per_day, caps.per_campaign, Counter({key: today}),
                         Counter({(campaign, key): in_campaign})).refusal(row)


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
