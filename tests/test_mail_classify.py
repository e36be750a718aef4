"""Classification of the fixture corpus: the shapes Gmail, Outlook/Exchange and Postfix send."""

from __future__ import annotations

import email
from datetime import datetime, timezone

import pytest

from email_automation import dsn
from email_automation.inbox_store import DbSentLookup, delivered_id_forms
from email_automation.mail_classify import classify, normalize_subject
from tests.mail_corpus import EXPECTED, SES_BOB, load, seed_sends

WHEN = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def lookup(db):
    seed_sends(db, WHEN)
    return DbSentLookup(db)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_corpus_message_gets_its_kind_and_send(lookup, name):
    found = classify(email.message_from_bytes(load(name)), lookup)
    kind, address = EXPECTED[name]
    assert (found.kind, found.sent.email if found.sent else None) == (kind, address), found.detail


def test_a_reply_keeps_the_senders_own_words_not_the_quote(lookup):
    found = classify(email.message_from_bytes(load("gmail_reply.eml")), lookup)
    assert found.snippet == "Hi Jane, Thanks for reaching out — could you do a call on Thursday at 10? Bob"
    assert found.from_email == "bob@acme.example"
    assert found.message_id == "<CAF=gmail-reply-bob-1@mail.gmail.com>"
    assert found.date == datetime(2026, 11, 24, 17, 2, 11, tzinfo=timezone.utc)


def test_outlook_latin1_reply_is_decoded_and_stops_at_the_original_message(lookup):
    found = classify(email.message_from_bytes(load("outlook_reply.eml")), lookup)
    assert found.snippet == "Dear Jane, We would be happy to meet you. Our office is in München. Kind regards, Carol"


def test_a_postfix_bounce_names_the_failed_address_and_its_status(lookup):
    found = classify(email.message_from_bytes(load("postfix_bounce.eml")), lookup)
    [bounce] = found.bounces
    assert (bounce.status.email, bounce.status.action, bounce.status.status, bounce.status.permanent) == \
        ("gone@stark.example", "failed", "5.1.1", True)


def test_a_delayed_report_is_not_permanent(lookup):
    [bounce] = classify(email.message_from_bytes(load("delayed_dsn.eml")), lookup).bounces
    assert (bounce.status.action, bounce.status.status, bounce.status.permanent) == ("delayed", "4.4.1", False)


def test_exim_plain_bounce_with_x_failed_recipients(lookup):
    raw = (b"From: Mail Delivery System <Mailer-Daemon@mx.example.net>\r\nTo: jane@example.com\r\n"
           b"Subject: Mail delivery failed: returning message to sender\r\nX-Failed-Recipients: gone@stark.example\r\n"
           b"Auto-Submitted: auto-replied\r\nMessage-Id: <E1exim@mx.example.net>\r\n\r\n"
           b"This message was created automatically by mail delivery software.\r\n\r\n  gone@stark.example\r\n"
           b"    No Such User Here\r\n\r\n------ This is a copy of the message, including all the headers. ------\r\n\r\n"
           b"Message-ID: <outreach-gone@example.com>\r\nSubject: Application\r\n")
    found = classify(email.message_from_bytes(raw), lookup)
    assert (found.kind, found.sent.email, found.bounces[0].status.permanent) == ("bounce", "gone@stark.example", True)


def test_a_reply_is_not_taken_for_an_unsubscribe_when_it_only_mentions_the_word(lookup):
    raw = load("gmail_reply.eml").replace(b"Hi Jane,", b"Hi Jane, no need to unsubscribe me,")
    assert classify(email.message_from_bytes(raw), lookup).kind == "reply"


def test_remove_me_as_the_first_line_is_an_unsubscribe(lookup):
    raw = load("gmail_reply.eml").replace(b"Hi Jane,\r\n", b"Remove me.\r\n", 1)
    assert classify(email.message_from_bytes(raw), lookup).kind == "unsubscribe"


@pytest.mark.parametrize("line", ["Unsubscribe me", "Please unsubscribe me.", "Remove me from your mailing list",
                                  "Please take me off your list", "Take me off your email list, thanks", "Opt out",
                                  "opt-out please", "Stop emailing me", "Please stop contacting me!"])
def test_the_usual_ways_to_ask_to_be_removed_are_unsubscribes_not_replies(lookup, line):
    """Counted as a reply, such an answer showed in the funnel as interest, left the address
    unsuppressed and stopped the person's colleagues too."""
    raw = load("gmail_reply.eml").replace(b"Hi Jane,\r\n", line.encode() + b"\r\n", 1)
    assert classify(email.message_from_bytes(raw), lookup).kind == "unsubscribe"


@pytest.mark.parametrize("line", ["Please don't unsubscribe me, I'd like to talk", "Opt out of what?",
                                  "Stop by our office on Monday", "Remove me from the loop and add Sam instead"])
def test_a_first_line_that_only_starts_like_an_opt_out_is_a_reply(lookup, line):
    raw = load("gmail_reply.eml").replace(b"Hi Jane,\r\n", line.encode() + b"\r\n", 1)
    assert classify(email.message_from_bytes(raw), lookup).kind == "reply"


def test_ses_ids_match_whatever_the_region_domain():
    assert SES_BOB in delivered_id_forms(f"<{SES_BOB}@email.amazonses.com>")
    assert SES_BOB in delivered_id_forms(f"<{SES_BOB}@eu-west-1.amazonses.com>")
    assert SES_BOB not in delivered_id_forms(f"<{SES_BOB}@attacker.example>")


@pytest.mark.parametrize("subject", ["Re: Hello", "AW: Hello", "RE:  re: hello", "Antw: Hello", "SV: Hello",
                                     "Fwd: Re: Hello", "Re[2]: Hello"])
def test_reply_prefixes_are_ignored_when_comparing_subjects(subject):
    assert normalize_subject(subject) == "hello"


def test_a_dsn_without_status_but_a_5xx_diagnostic_is_permanent():
    raw = (b"Content-Type: multipart/report; report-type=delivery-status; boundary=X\r\n\r\n--X\r\n"
           b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n\r\n"
           b"Final-Recipient: rfc822; <A@B.example>\r\nAction: failed\r\nDiagnostic-Code: smtp; 550 no such user\r\n--X--\r\n")
    [status] = dsn.parse_report(email.message_from_bytes(raw)).recipients
    assert (status.email, status.status, status.permanent) == ("a@b.example", "5.0.0", True)


def test_a_subject_in_an_unknown_charset_is_still_read(lookup):
    found = classify(email.message_from_bytes(load("undecodable_charset_reply.eml")), lookup)
    assert found.subject == "Re: Application: Backend developer at Acme"
    assert found.snippet == "Gr\ufffd\ufffde \ufffd\ufffd, one more thing: here is my number."


def test_a_bounce_from_a_forwarding_address_is_matched_by_the_returned_message(lookup):
    raw = load("postfix_bounce.eml").replace(b"rfc822; gone@stark.example", b"rfc822; gone.forwarded@mail.stark.example")
    found = classify(email.message_from_bytes(raw), lookup)
    assert (found.kind, found.sent.email) == ("bounce", "gone@stark.example")


def test_a_reply_through_a_group_at_our_address_is_the_writers_reply(lookup):
    """REPLY_TO a Google Group: for a sender whose domain has a strict DMARC policy the group
    rewrites From to itself and names the writer in Reply-To; that was ignored as our own message,
    so the follow-ups went on to someone who had answered."""
    raw = (b'From: "Dave via Jobs" <jobs@example.com>\r\nReply-To: Dave <dave@initech.example>\r\n'
           b"To: jobs@example.com\r\nSubject: Re: Application: Backend developer at Initech\r\n"
           b"Message-ID: <group-dave@example.com>\r\nIn-Reply-To: <outreach-dave@example.com>\r\n"
           b"Date: Wed, 25 Nov 2026 09:00:00 +0000\r\n\r\nHappy to talk next week.\r\n")
    own = {"jane@example.com", "jobs@example.com"}
    found = classify(email.message_from_bytes(raw), lookup, own)
    assert (found.kind, found.from_email, found.sent.email) == ("reply", "dave@initech.example", "dave@initech.example")
    ours = raw.replace(b"Reply-To: Dave <dave@initech.example>\r\n", b"Reply-To: jobs@example.com\r\n")
    assert classify(email.message_from_bytes(ours), lookup, own).kind == "ignored"
