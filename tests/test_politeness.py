"""Per-company politeness: one first message per company a day, three people per campaign."""

from __future__ import annotations

import threading
from contextlib import closing
from datetime import timedelta

import pytest

from email_automation import ledger, politeness
from email_automation.database import connect
from email_automation.politeness import Caps, company_key

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


@pytest.mark.parametrize("caps, reason", [
    (Caps(per_day=1, per_campaign=5), "1 first message(s) to acme today (MAX_NEW_PER_COMPANY_PER_DAY)"),
    (Caps(per_day=5, per_campaign=1), "1 people at acme contacted in this campaign (MAX_CONTACTS_PER_COMPANY)"),
])
def test_two_claims_racing_for_one_company_claim_only_one(settings, db, clock, caps, reason):
    # Two runs without the run lock between them (two connections), each with a batch that was
    # picked before either claimed: the claim itself must count the other's.
    db.executemany("INSERT INTO recipients (campaign_id, email, company, created_at) VALUES (1, ?, ?, 'x')",
                   [("a1@acme.com", "Acme"), ("a2@acme.com", " ACME ")])
    barrier, results = threading.Barrier(2, timeout=10), {}

    def claim(recipient_id: int) -> None:
        with closing(connect(settings.db_path)) as conn:
            barrier.wait()
            results[recipient_id] = ledger.claim(conn, recipient_id, now=clock(), tz=settings.tz, daily_limit=10,
                                                 subject="Hi", transport="smtp", companies=caps)

    threads = [threading.Thread(target=claim, args=(rid,)) for rid in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [r for r in results.values() if isinstance(r, ledger.Claim)]
    assert len(claimed) == 1
    assert [r for r in results.values() if not isinstance(r, ledger.Claim)] == [ledger.Held(f"company limit: {reason}")]
    assert sorted(r[0] for r in db.execute("SELECT status FROM recipients")) == ["pending", "sending"]


@pytest.mark.parametrize("colleagues, newcomer", [
    ([("e1@x.fr", "ÉCOLE  Polytechnique"), ("e2@y.fr", "école polytechnique")], ("e3@z.fr", " École Polytechnique")),
    ([("a1@acme.com", ""), ("a2@other.org", "ACME.com")], ("a3@acme.com", "   ")),
    ([("b1@beta.io", "Beta\tLabs"), ("b2@beta.io", "beta labs")], ("b3@beta.io", "BETA LABS")),
])
def test_the_claim_counts_colleagues_as_company_key_compares_them(settings, db, clock, colleagues, newcomer):
    # Accents, runs of spaces, tabs, a domain written as the company: folded by SQL or, where SQL
    # cannot fold as Python does, compared by company_key itself; the limit is reached either way.
    db.executemany("INSERT INTO recipients (campaign_id, email, company, status, created_at) VALUES (1, ?, ?, 'sent', 'x')",
                   colleagues)
    rid = db.execute("INSERT INTO recipients (campaign_id, email, company, created_at) VALUES (1, ?, ?, 'x')",
                     newcomer).lastrowid
    claim = ledger.claim(db, rid, now=clock(), tz=settings.tz, daily_limit=10, subject="Hi", transport="smtp",
                         companies=Caps(per_day=5, per_campaign=2))
    assert isinstance(claim, ledger.Held) and "2 people at" in claim.reason
    again = ledger.claim(db, rid, now=clock(), tz=settings.tz, daily_limit=10, subject="Hi", transport="smtp",
                         companies=Caps(per_day=5, per_campaign=3))
    assert isinstance(again, ledger.Claim)


def test_the_claims_company_count_goes_through_the_indexes(db):
    plans = [db.execute(f"EXPLAIN QUERY PLAN {sql}", args).fetchone()[3] for sql, args in (
        (f"SELECT count(*) FROM recipients WHERE campaign_id = ? AND {politeness._FOLDED} = ?"
         f" AND NOT {politeness._ODD} AND {politeness._NOT_FRESH} AND {politeness._CONTACTED}", (1, "acme")),
        (f"SELECT company, email FROM recipients WHERE campaign_id = ? AND {politeness._ODD}"
         f" AND {politeness._NOT_FRESH} AND {politeness._CONTACTED}", (1,)),
        (f"SELECT count(*) FROM recipients WHERE {politeness._EVERY_CAMPAIGN} AND {politeness._FOLDED} = ?"
         f" AND NOT {politeness._ODD} AND {politeness._NOT_FRESH} AND {politeness._SENT_FIRST_ON_DAY}",
         ("acme", "2026-11-30")),
        (f"SELECT company, email FROM recipients WHERE {politeness._EVERY_CAMPAIGN} AND {politeness._ODD}"
         f" AND {politeness._NOT_FRESH} AND {politeness._SENT_FIRST_ON_DAY}", ("2026-11-30",)))]
    assert plans == ["SEARCH recipients USING INDEX recipients_company (campaign_id=? AND <expr>=?)",
                     "SEARCH recipients USING INDEX recipients_odd_company (campaign_id=?)"] * 2


@pytest.mark.parametrize("colleague, newcomer", [
    (("e1@x.fr", "ÉCOLE  Polytechnique"), ("e2@y.fr", " école polytechnique")),  # only Python folds these alike
    (("a1@acme.com", "Acme"), ("a2@other.org", " ACME ")),  # SQL folds these
])
def test_the_claim_counts_todays_first_messages_to_the_company_in_any_campaign(settings, db, clock, colleague, newcomer):
    db.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at) SELECT 'other',"
               " subject_template, html_template, created_at FROM campaigns WHERE id = 1")
    first = db.execute("INSERT INTO recipients (campaign_id, email, company, created_at) VALUES (1, ?, ?, 'x')",
                       colleague).lastrowid
    second = db.execute("INSERT INTO recipients (campaign_id, email, company, created_at) VALUES (2, ?, ?, 'x')",
                        newcomer).lastrowid
    caps = Caps(per_day=1, per_campaign=5)
    assert isinstance(ledger.claim(db, first, now=clock(), tz=settings.tz, daily_limit=10, subject="Hi",
                                   transport="smtp", companies=caps), ledger.Claim)
    held = ledger.claim(db, second, now=clock(), tz=settings.tz, daily_limit=10, subject="Hi", transport="smtp",
                        companies=caps)
    assert isinstance(held, ledger.Held) and "first message(s) to" in held.reason and "today" in held.reason


def test_a_recipient_whose_first_message_may_have_gone_is_never_pending_again(settings, db, clock):
    """The claim counts the day's first messages through indexes that leave out fresh rows (pending
    at step 1), so that an import of new people writes neither: the database itself refuses any
    write that would make a counted recipient fresh again, rather than let the count miss it."""
    import sqlite3

    db.execute("INSERT INTO recipients (campaign_id, email, company, created_at) VALUES (1, 'a1@acme.com', 'Acme', 'x')")
    claim = ledger.claim(db, 1, now=clock(), tz=settings.tz, daily_limit=10, subject="Hi", transport="smtp",
                         companies=Caps(per_day=1, per_campaign=5))
    assert isinstance(claim, ledger.Claim)
    with pytest.raises(sqlite3.IntegrityError, match="cannot be pending again"):
        db.execute("UPDATE recipients SET status = 'pending' WHERE id = 1")
    db.execute("INSERT INTO recipients (campaign_id, email, company, created_at) VALUES (1, 'a2@acme.com', 'Acme', 'x')")
    with pytest.raises(sqlite3.IntegrityError, match="logged before its recipient is claimed"):
        db.execute("INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, transport, step)"
                   " VALUES (2, 'x', '2026-11-30', 'now', 'sent', 'smtp', 1)")
    # Still counted: a colleague's first message waits for tomorrow.
    later = ledger.claim(db, 2, now=clock(), tz=settings.tz, daily_limit=10, subject="Hi", transport="smtp",
                         companies=Caps(per_day=1, per_campaign=5))
    assert later == ledger.Held("company limit: 1 first message(s) to acme today (MAX_NEW_PER_COMPANY_PER_DAY)")
