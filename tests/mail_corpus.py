"""The fixture corpus in tests/data/mail and the sends its messages answer.

`seed_sends(conn, when)` records one real send per address below (through the ledger, as a run
does), with the id send_log keeps: SES's MessageId for SES sends, our Message-ID for SMTP ones.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from email_automation import ledger
from email_automation.database import iso

MAIL_DIR = Path(__file__).parent / "data" / "mail"
SES_BOB = "0100018f-1111-2222-3333-444455556666-000000"
SES_WAYNE = "0100018f-aaaa-bbbb-cccc-ddddeeeeffff-000000"

# (email, company, id kept in send_log)
SENDS = [
    ("bob@acme.example", "Acme", SES_BOB),
    ("carol@globex.example", "Globex", "<outreach-carol@example.com>"),
    ("dave@initech.example", "Initech", "<outreach-dave@example.com>"),
    ("erin@hooli.example", "Hooli", "<outreach-erin@example.com>"),
    ("frank@umbrella.example", "Umbrella", "<outreach-frank@example.com>"),
    ("gone@stark.example", "Stark", "<outreach-gone@example.com>"),
    ("nobody@wayne.example", "Wayne", SES_WAYNE),
    ("late@oscorp.example", "Oscorp", "<outreach-late@example.com>"),
    ("heidi@cyberdyne.example", "Cyberdyne", "<outreach-heidi@example.com>"),
    ("grace@soylent.example", "Soylent", "<outreach-grace@example.com>"),
]

# file -> (kind, address whose send it concerns)
EXPECTED = {
    "gmail_reply.eml": ("reply", "bob@acme.example"),
    "outlook_reply.eml": ("reply", "carol@globex.example"),
    "reply_without_in_reply_to.eml": ("reply", "dave@initech.example"),
    "gmail_vacation.eml": ("auto_reply", "erin@hooli.example"),
    "exchange_auto_reply.eml": ("auto_reply", "frank@umbrella.example"),
    "postfix_bounce.eml": ("bounce", "gone@stark.example"),
    "exchange_ndr.eml": ("bounce", "nobody@wayne.example"),
    "delayed_dsn.eml": ("bounce", "late@oscorp.example"),
    "unsubscribe_reply.eml": ("unsubscribe", "heidi@cyberdyne.example"),
    "colleague_reply.eml": ("reply", "grace@soylent.example"),
    "newsletter.eml": ("ignored", None),
    "malformed_mime.eml": ("ignored", None),
    "undecodable_charset_reply.eml": ("reply", "bob@acme.example"),
    "dsn_unknown_address.eml": ("ignored", None),
}


def subject_for(company: str) -> str:
    return f"Application: Backend developer at {company}"


def load(name: str) -> bytes:
    """A corpus message with CRLF line ends, as it travels (IMAP APPEND wants them)."""
    return (MAIL_DIR / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def add_recipient(conn: sqlite3.Connection, email: str, company: str, when: datetime, campaign_id: int = 1) -> int:
    return conn.execute(
        "INSERT INTO recipients (campaign_id, email, company, created_at) VALUES (?, ?, ?, ?)",
        (campaign_id, email, company, iso(when)),
    ).lastrowid


def seed_sends(conn: sqlite3.Connection, when: datetime, sends=SENDS) -> dict[str, int]:
    """One recorded send per (email, company, id); returns recipient ids by address."""
    ids = {}
    for email, company, message_id in sends:
        rid = add_recipient(conn, email, company, when)
        claim = ledger.claim(conn, rid, now=when, tz=ZoneInfo("UTC"), daily_limit=10_000,
                             subject=subject_for(company), transport="smtp")
        ledger.record_sent(conn, claim, message_id, now=when)
        ids[email] = rid
    return ids
