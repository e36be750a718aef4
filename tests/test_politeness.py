"""Per-company politeness: one first message per company a day, three people per campaign."""

from __future__ import annotations

from datetime import timedelta

from email_automation.politeness import company_key

from .fakes import ScriptedTransport
from .test_run_daily import run


def test_a_company_is_its_name_or_else_a_domain_that_is_not_free_mail():
    assert company_key("  ACME   Inc ", "x@y.org") == "acme inc"
    assert company_key("", "ada@acme.com") == "acme.com"
    assert company_key("", "ada@gmail.com") == ""


def test_first_messages_to_a_company_are_spread_over_days_and_capped_per_campaign(settings, db, clock):
    settings = settings.model_copy(update={"max_new_per_company_per_day": 1, "max_contacts_per_company": 3})
    people = [("a1@acme.com", "Acme"), ("a2@acme.com", "ACME "), ("b1@beta.io", ""), ("a3@other.com", "acme"),
              ("p1@gmail.com", ""), ("p2@gmail.com", ""), ("b2@beta.io", ""), ("a4@acme.com", "Acme")]
    db.executemany("INSERT INTO recipients (campaign_id, email, company, created_at) VALUES (1, ?, ?, 'x')", people)
    transport = ScriptedTransport()
    sent_per_day = []
    for _ in range(4):
        before = len(transport.delivered)
        run(settings, db, transport, clock)
        sent_per_day.append(transport.recipients[before:])
        clock.current += timedelta(days=1)
    assert sent_per_day == [["a1@acme.com", "b1@beta.io", "p1@gmail.com", "p2@gmail.com"],
                            ["a2@acme.com", "b2@beta.io"], ["a3@other.com"], []]
    # a4@acme.com would be the fourth person at Acme in this campaign
    assert db.execute("SELECT status FROM recipients WHERE email = 'a4@acme.com'").fetchone()[0] == "pending"
