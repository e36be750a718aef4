"""Reading a real IMAP server (Dovecot on loopback): classify, store once, never touch the mailbox."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from email_automation import inbox
from email_automation.cli import app
from email_automation.config import load_settings
from email_automation.database import iso
from email_automation.inbox_store import read_mark
from tests.imap_server import dovecot  # noqa: F401 - the session fixture
from tests.mail_corpus import EXPECTED, load, seed_sends

WHEN = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)
ZERO = {"replies": 0, "auto_replies": 0, "bounces": 0, "unsubscribes": 0, "ignored": 0}


def _reply(n: int, to_id: str = "<outreach-carol@example.com>") -> bytes:
    return (f"From: carol@globex.example\r\nTo: jane@example.com\r\nSubject: Re: hi {n}\r\n"
            f"Message-ID: <extra-{n}@globex.example>\r\nIn-Reply-To: {to_id}\r\n"
            f"Date: Wed, 25 Nov 2026 1{n % 10}:00:00 +0000\r\n\r\nReply number {n}.\r\n").encode()


@pytest.fixture
def box(dovecot, db, settings):  # noqa: F811
    seed_sends(db, WHEN)
    return dovecot.mailbox()


def _settings(settings, box, **extra):
    return load_settings(**{**settings.model_dump(), **box.settings(), **extra})


def _read(db, settings, box, **extra):
    return inbox.read_inbox(_settings(settings, box, **extra), db, now=lambda: WHEN + timedelta(days=1))


def test_the_corpus_is_counted_applied_and_left_unread_in_the_mailbox(db, settings, box):
    box.append(*(load(name) for name in sorted(EXPECTED)))
    report = _read(db, settings, box)
    assert report.as_dict() == {"replies": 5, "auto_replies": 2, "bounces": 3, "unsubscribes": 1, "ignored": 3}
    status = dict(db.execute("SELECT email, application_status FROM recipients"))
    assert [e for e, s in status.items() if s == "replied"] == [
        "bob@acme.example", "carol@globex.example", "dave@initech.example", "grace@soylent.example"]
    # auto-replies never count as an answer; a hard bounce and an unsubscribe suppress, a delay does not
    assert status["erin@hooli.example"] == status["frank@umbrella.example"] == "none"
    assert dict(db.execute("SELECT email, reason FROM suppressions")) == {
        "gone@stark.example": "bounce", "nobody@wayne.example": "bounce", "heidi@cyberdyne.example": "unsubscribe"}
    # each failed delivery report is a hard bounce the circuit breaker counts, tied to the send it answers
    assert sorted(tuple(r) for r in db.execute(
        "SELECT b.email, b.kind, b.source FROM bounces b JOIN send_log l ON l.attempt_id = b.attempt_id")) == [
        ("gone@stark.example", "hard", "inbox"), ("nobody@wayne.example", "hard", "inbox")]
    assert dict(db.execute("SELECT r.email, l.bounce_status FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
                           " WHERE l.bounced_at IS NOT NULL")) == {
        "gone@stark.example": "5.1.1 smtp; 550 5.1.1 <gone@stark.example>: Recipient address rejected: User unknown",
        "nobody@wayne.example": "5.1.10 smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"}
    # BODY.PEEK in a read-only EXAMINE: not one message was flagged \Seen, deleted or moved
    flags = box.flags()
    assert len(flags) == len(EXPECTED) and all(set(f) <= {b"\\Recent"} for f in flags.values()), flags


def test_reading_again_classifies_nothing_twice(db, settings, box):
    box.append(load("gmail_reply.eml"), load("postfix_bounce.eml"))
    assert _read(db, settings, box).as_dict() == ZERO | {"replies": 1, "bounces": 1}
    assert _read(db, settings, box).as_dict() == ZERO
    box.append(_reply(1))
    assert _read(db, settings, box).as_dict() == ZERO | {"replies": 1}
    assert db.execute("SELECT count(*) FROM application_changes").fetchone()[0] == 2


def test_unsubscribe_me_suppresses_the_address_and_is_not_counted_as_a_reply(db, settings, box):
    box.append(load("gmail_reply.eml").replace(b"Hi Jane,\r\n", b"Please unsubscribe me.\r\n", 1))
    assert _read(db, settings, box).as_dict() == ZERO | {"unsubscribes": 1}
    assert dict(db.execute("SELECT email, reason FROM suppressions")) == {"bob@acme.example": "unsubscribe"}
    assert db.execute("SELECT count(*) FROM recipients WHERE application_status != 'none'").fetchone()[0] == 0


def test_our_own_follow_up_in_the_folder_read_is_not_taken_for_the_recipients_reply(db, settings, box):
    """A copy of our own message (a folder such as Gmail's All Mail, a forward to ourselves) names
    our earlier send in its thread headers: it was counted as the recipient replying, which
    stopped their follow-ups and their colleagues' and showed in the funnel."""
    follow_up = (b"From: Jane Sender <Jane@Example.com>\r\nTo: dave@initech.example\r\n"
                 b"Subject: Re: Application: Backend developer at Initech\r\nMessage-ID: <step2-dave@example.com>\r\n"
                 b"In-Reply-To: <outreach-dave@example.com>\r\nReferences: <outreach-dave@example.com>\r\n"
                 b"Date: Wed, 25 Nov 2026 09:00:00 +0000\r\n\r\nJust following up on my note.\r\n")
    forward = follow_up.replace(b"To: dave@initech.example", b"To: friend@elsewhere.example").replace(
        b"Subject: Re:", b"Subject: Fwd:").replace(b"<step2-dave@", b"<fwd-dave@")
    box.append(follow_up, forward)
    assert _read(db, settings, box, sender_email="jane@example.com").as_dict() == ZERO | {"ignored": 2}
    assert db.execute("SELECT count(*) FROM recipients WHERE application_status != 'none'").fetchone()[0] == 0


def test_an_answer_to_a_send_of_unknown_outcome_settles_it_as_sent(dovecot, db, settings):  # noqa: F811
    """A send that timed out waits for a person's decision; a reply to it, or a bounce report
    about it, shows it went out. Not when another send of the same subject may be the one answered."""
    from email_automation import ledger
    from email_automation.errors import AmbiguousSendError
    from tests.mail_corpus import add_recipient, subject_for

    def timed_out(email, company, step=1):
        rid = db.execute("SELECT id FROM recipients WHERE email = ?", (email,)).fetchone()
        rid = rid[0] if rid else add_recipient(db, email, company, WHEN)
        claim = ledger.claim(db, rid, now=WHEN, tz=timezone.utc, daily_limit=100, subject=subject_for(company)
                             if step == 1 else "Re: " + subject_for(company), transport="ses", step=step)
        ledger.record_failure(db, claim, AmbiguousSendError("timed out"), now=WHEN, max_attempts=3)

    timed_out("ivan@newco.example", "Newco")
    timed_out("gone@stark.example", "Stark")
    seed_sends(db, WHEN, [("judy@umbrella.example", "Umbrella", "<outreach-judy@example.com>")])
    timed_out("judy@umbrella.example", "Umbrella", step=2)  # her follow-up: "Re: " + the same subject
    box = dovecot.mailbox()
    ses_id = "<0100018f-9999-8888-7777-666655554444-000000@email.amazonses.com>"  # SES's, never learnt
    for who, company in (("ivan@newco.example", "Newco"), ("judy@umbrella.example", "Umbrella")):
        box.append((f"From: {who}\r\nTo: jane@example.com\r\nSubject: Re: {subject_for(company)}\r\n"
                    f"Message-ID: <answer-{company}@example.net>\r\nIn-Reply-To: {ses_id}\r\n"
                    "Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nHappy to talk.\r\n").encode())
    box.append(load("postfix_bounce.eml"))
    assert _read(db, settings, box).as_dict() == ZERO | {"replies": 2, "bounces": 1}
    assert dict(db.execute("SELECT email, status FROM recipients")) == {
        "ivan@newco.example": "sent", "gone@stark.example": "sent", "judy@umbrella.example": "unknown"}
    assert [r[0] for r in db.execute("SELECT email FROM suppressions")] == ["gone@stark.example"]
    assert dict(db.execute("SELECT r.email, l.status FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
                           " WHERE l.step = 1")) == {
        "ivan@newco.example": "sent", "gone@stark.example": "sent", "judy@umbrella.example": "sent"}
    assert db.execute("SELECT sent_at FROM recipients WHERE email = 'ivan@newco.example'").fetchone()[0] == iso(WHEN)
    assert {r[0] for r in db.execute("SELECT detail FROM admin_log WHERE action = 'resolve-sent'")} == {
        "resolved as sent by inbox: a reply answered it", "resolved as sent by inbox: a delivery report answered it"}


def test_an_answer_dated_before_a_send_of_unknown_outcome_does_not_settle_it(dovecot, db, settings):  # noqa: F811
    """An out-of-office written before the attempt answers something else: it proves nothing."""
    from email_automation import ledger
    from email_automation.errors import AmbiguousSendError
    from tests.mail_corpus import add_recipient, subject_for

    rid = add_recipient(db, "erin@hooli.example", "Hooli", WHEN)
    claim = ledger.claim(db, rid, now=WHEN + timedelta(days=2), tz=timezone.utc, daily_limit=100,
                         subject=subject_for("Hooli"), transport="ses")
    ledger.record_failure(db, claim, AmbiguousSendError("timed out"), now=WHEN + timedelta(days=2), max_attempts=3)
    box = dovecot.mailbox()
    box.append(load("gmail_vacation.eml"))  # dated the day after WHEN: before the attempt
    assert _read(db, settings, box).as_dict() == ZERO | {"auto_replies": 1}
    assert db.execute("SELECT status FROM recipients WHERE id = ?", (rid,)).fetchone()[0] == "unknown"


def test_a_uidvalidity_reset_rereads_the_folder_without_counting_twice(db, settings, box):
    box.append(load("gmail_reply.eml"), load("outlook_reply.eml"), folder="Jobs")
    assert _read(db, settings, box, imap_folder="Jobs").replies == 2
    before = read_mark(db, inbox.mailbox_key(_settings(settings, box, imap_folder="Jobs")))
    box.recreate("Jobs")  # a server restore or migration: every UID is new
    box.append(load("gmail_reply.eml"), load("outlook_reply.eml"), _reply(2), folder="Jobs")
    assert _read(db, settings, box, imap_folder="Jobs").as_dict() == ZERO | {"replies": 1}
    after = read_mark(db, inbox.mailbox_key(_settings(settings, box, imap_folder="Jobs")))
    assert after[0] != before[0] and after[1] == 3


def test_bad_messages_are_ignored_and_the_read_goes_on(db, settings, box):
    huge = (b"From: bob@acme.example\r\nTo: jane@example.com\r\nSubject: Re: Application: Backend developer at Acme\r\n"
            b"Message-ID: <huge-1@acme.example>\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
            b"Content-Type: text/plain\r\n\r\nMy portfolio is attached.\r\n--B\r\nContent-Type: application/pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + (b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n" * 400_000)
            + b"--B--\r\n")
    assert len(huge) > 30_000_000
    box.append(load("malformed_mime.eml"), huge, load("undecodable_charset_reply.eml"), load("dsn_unknown_address.eml"),
               _reply(3))
    report = _read(db, settings, box)
    # the 30 MB reply is read from its headers and first part: still a reply, nothing held in memory
    assert report.as_dict() == ZERO | {"replies": 3, "ignored": 2}
    assert read_mark(db, inbox.mailbox_key(_settings(settings, box)))[1] == 5
    snippet = db.execute("SELECT snippet FROM inbox_messages WHERE message_id = '<charset-bob-2@acme.example>'").fetchone()[0]
    assert snippet.startswith("Gr") and "one more thing" in snippet


class _DropsAfter:
    """An IMAPClient whose connection dies at the n-th FETCH (a network cut half-way through a read)."""

    def __init__(self, client, fetches: int) -> None:
        self.client, self.left = client, fetches

    def fetch(self, *args, **kwargs):
        self.left -= 1
        if self.left < 0:
            raise ConnectionResetError("connection reset by peer")
        return self.client.fetch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_connection_lost_mid_read_keeps_what_was_read(db, settings, box, monkeypatch):
    box.append(*(_reply(n) for n in range(4)))
    monkeypatch.setattr(inbox, "FETCH_BATCH", 1)
    config = _settings(settings, box)
    client = _DropsAfter(box.client(), fetches=4)  # size + body for two messages, then the cut
    with pytest.raises(inbox.InboxError, match="connection reset by peer"):
        inbox.read_inbox(config, db, now=lambda: WHEN, client=client)
    assert db.execute("SELECT count(*) FROM inbox_messages").fetchone()[0] == 2
    assert inbox.read_inbox(config, db, now=lambda: WHEN).replies == 2


def test_a_first_read_before_anything_was_sent_starts_at_the_end(dovecot, db, settings):  # noqa: F811
    box = dovecot.mailbox()
    box.append(_reply(1), _reply(2))
    assert _read(db, settings, box).as_dict() == ZERO
    assert read_mark(db, inbox.mailbox_key(_settings(settings, box)))[1] == 2


def test_a_wrong_password_is_one_clear_error(db, settings, box):
    with pytest.raises(inbox.InboxError) as caught:
        _read(db, settings, box, imap_password="wrong")
    assert str(caught.value).startswith(f"IMAP 127.0.0.1:{box.server.port}: login as {box.user} failed:")
    assert "AUTHENTICATIONFAILED" in str(caught.value) and "b'" not in str(caught.value)


def test_a_missing_folder_is_one_clear_error(db, settings, box):
    with pytest.raises(inbox.InboxError, match="IMAP folder 'Nope' cannot be opened"):
        _read(db, settings, box, imap_folder="Nope")


def _env(monkeypatch, settings, box):
    for name, value in {**box.settings(), "db_path": settings.db_path, "sender_email": "jane@example.com"}.items():
        monkeypatch.setenv(name.upper(), str(value).lower() if isinstance(value, bool) else str(value))


def test_inbox_json_prints_exactly_the_five_counts(db, settings, box, monkeypatch):
    box.append(load("gmail_reply.eml"), load("gmail_vacation.eml"), load("newsletter.eml"))
    _env(monkeypatch, settings, box)
    result = CliRunner().invoke(app, ["inbox", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"replies": 1, "auto_replies": 1, "bounces": 0, "unsubscribes": 0, "ignored": 1}
    again = CliRunner().invoke(app, ["inbox"])
    assert again.stdout.strip() == "Inbox INBOX: 0 replies, 0 auto-reply(ies), 0 bounce(s), 0 unsubscribe(s), 0 ignored."


def test_inbox_text_says_who_answered(db, settings, box, monkeypatch):
    box.append(load("gmail_reply.eml"))
    _env(monkeypatch, settings, box)
    result = CliRunner().invoke(app, ["inbox"])
    assert result.stdout.splitlines() == [
        "Inbox INBOX: 1 reply, 0 auto-reply(ies), 0 bounce(s), 0 unsubscribe(s), 0 ignored.",
        "  bob@acme.example replied: Re: Application: Backend developer at Acme"]


def test_inbox_without_imap_settings_is_exit_2_and_one_line(db, settings, monkeypatch):
    monkeypatch.setenv("DB_PATH", str(settings.db_path))
    result = CliRunner().invoke(app, ["inbox"])
    assert result.exit_code == 2
    assert result.stderr == ("Error: IMAP_HOST is not set: set IMAP_HOST, IMAP_USERNAME and IMAP_PASSWORD "
                             "to read replies from your mailbox\n")


def test_inbox_without_a_password_names_the_missing_setting(db, settings, monkeypatch):
    """It tried to log in without one and said only "Authentication failed", exit 1."""
    monkeypatch.setenv("DB_PATH", str(settings.db_path))
    for name, value in {"IMAP_HOST": "127.0.0.1", "IMAP_PORT": "1", "IMAP_USERNAME": "me", "IMAP_SSL": "false"}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["inbox"])
    assert (result.exit_code, result.stderr) == (2, "Error: IMAP_PASSWORD is not set: set IMAP_HOST, IMAP_USERNAME "
                                                    "and IMAP_PASSWORD to read replies from your mailbox\n")


def test_inbox_with_a_down_server_is_exit_1_and_one_line(db, settings, monkeypatch):
    monkeypatch.setenv("DB_PATH", str(settings.db_path))
    for name, value in {"IMAP_HOST": "127.0.0.1", "IMAP_PORT": "1", "IMAP_USERNAME": "me", "IMAP_PASSWORD": "pw",
                        "IMAP_SSL": "false"}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["inbox"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: IMAP 127.0.0.1:1: cannot connect:") and result.stderr.count("\n") == 1


def test_doctor_checks_the_login_and_the_folder(db, settings, box):
    from email_automation import doctor

    box.append(_reply(1))
    ok = doctor.check_inbox(_settings(settings, box))
    assert (ok.status, ok.detail) == ("OK", f"logged in to 127.0.0.1 as {box.user}; folder 'INBOX' holds 1 message(s)")
    bad = doctor.check_inbox(_settings(settings, box, imap_folder="Nope"))
    assert bad.status == "FAIL" and bad.detail.startswith("IMAP folder 'Nope' cannot be opened")
    wrong = doctor.check_inbox(_settings(settings, box, imap_password="wrong"))
    assert wrong.status == "FAIL" and "app password" in wrong.hint


def test_doctors_inbox_check_gives_up_within_send_timeout_seconds_on_a_server_that_never_greets(db, settings, box):
    """SEND_TIMEOUT_SECONDS "also bounds doctor's checks": the IMAP check waited 60 s regardless."""
    import socket
    import time

    from email_automation import doctor

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        check = doctor.check_inbox(_settings(settings, box, imap_port=silent.getsockname()[1], send_timeout_seconds=1))
        elapsed = time.monotonic() - started
    assert check.status == "FAIL" and "timed out" in check.detail
    assert elapsed < 10, elapsed


def test_doctor_has_no_inbox_line_without_imap_host(settings):
    from email_automation import doctor

    checks = doctor.run_checks(settings.model_copy(update={"transport": "smtp", "smtp_port": 1}))
    assert "inbox (IMAP)" not in [c.name for c in checks]


def test_imap_ssl_and_starttls_together_are_one_clear_configuration_error(monkeypatch):
    monkeypatch.setenv("IMAP_STARTTLS", "true")
    result = CliRunner().invoke(app, ["inbox"])
    assert result.exit_code == 2
    assert result.stderr == ("Error: invalid settings: IMAP_SSL and IMAP_STARTTLS are both true: set one "
                             "(IMAP_SSL for port 993, IMAP_STARTTLS for port 143)\n")


def test_a_bad_imap_port_names_the_variable(monkeypatch):
    monkeypatch.setenv("IMAP_PORT", "99999")
    result = CliRunner().invoke(app, ["inbox"])
    assert (result.exit_code, result.stderr) == (
        2, "Error: invalid setting IMAP_PORT=99999: expected a port number 1-65535 (993 with IMAP_SSL, 143 with IMAP_STARTTLS)\n")


@pytest.mark.parametrize("mode", ["ssl", "starttls"])
def test_tls_and_starttls_verify_the_servers_certificate(db, settings, box, monkeypatch, mode):
    box.append(load("gmail_reply.eml"))
    tls = {"imap_ssl": True, "imap_port": box.server.tls_port} if mode == "ssl" else {"imap_starttls": True}
    with pytest.raises(inbox.InboxError, match="CERTIFICATE_VERIFY_FAILED"):
        _read(db, settings, box, **tls)  # a self-signed certificate nobody said to trust
    monkeypatch.setenv("SSL_CERT_FILE", str(box.server.cert_file))
    assert _read(db, settings, box, **tls).replies == 1


def test_an_unsubscribe_keeps_the_reason_of_an_address_already_suppressed(db, clock):
    import email as email_lib

    from email_automation import admin, inbox_store
    from email_automation.mail_classify import classify

    seed_sends(db, WHEN)
    admin.suppress(db, "heidi@cyberdyne.example", reason="complaint", now=clock())
    found = classify(email_lib.message_from_bytes(load("unsubscribe_reply.eml")), inbox_store.DbSentLookup(db))
    assert inbox_store.store(db, inbox_store.Position("box", 1, 1), "k", found, now=clock()) == [
        "heidi@cyberdyne.example suppressed (unsubscribe, already listed); 0 pending recipient(s) skipped"]
    assert [tuple(r) for r in db.execute("SELECT reason FROM suppressions")] == [("complaint",)]
