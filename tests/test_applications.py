"""Application status: set by hand or by the watcher, and a reply stops later mail (and the company's)."""

from __future__ import annotations

import email
import json
import random
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from email_automation import applications, ledger
from email_automation.cli import app
from email_automation.run_daily import run_daily
from tests.fakes import RecordingSleep, ScriptedTransport
from tests.imap_server import dovecot  # noqa: F401 - the session fixture
from tests.mail_corpus import add_recipient, load, seed_sends
from tests.smtp_sink import SmtpSink

ACME_SENT = [("bob@acme.example", "Acme", "<outreach-bob@example.com>")]


def _pending(db, clock, *rows):
    return {email: add_recipient(db, email, company, clock()) for email, company in rows}


def _run(settings, db, clock, **overrides):
    transport = ScriptedTransport()
    run_daily(settings.model_copy(update=overrides), db, transport, now=clock, sleep=RecordingSleep(),
              rng=random.Random(1))
    return transport.recipients


def _skips(db):
    return dict(db.execute("SELECT email, last_error FROM recipients WHERE status = 'skipped'"))


def test_a_reply_stops_the_colleagues_by_company_name_and_by_domain_but_not_free_mail(db, settings, clock):
    ids = seed_sends(db, clock(), ACME_SENT)
    _pending(db, clock, ("ann@acme.example", ""), ("zed@gmail.com", " acme "), ("pat@gmail.com", "Other"),
             ("una@unrelated.example", "Unrelated"))
    applications.record_reply(db, ids["bob@acme.example"], now=clock(), note="reply")
    assert sorted(_run(settings, db, clock)) == ["pat@gmail.com", "una@unrelated.example"]
    assert _skips(db) == {
        "ann@acme.example": "stopped by a reply: bob@acme.example at the same domain (acme.example) has application"
                            " status 'replied' (STOP_COMPANY_ON_REPLY)",
        "zed@gmail.com": "stopped by a reply: bob@acme.example at the same company (acme) has application status "
                         "'replied' (STOP_COMPANY_ON_REPLY)"}


def test_without_stop_company_only_the_person_who_replied_is_stopped(db, settings, clock):
    ids = seed_sends(db, clock(), ACME_SENT)
    _pending(db, clock, ("ann@acme.example", "Acme"))
    applications.record_reply(db, ids["bob@acme.example"], now=clock(), note="reply")
    assert _run(settings, db, clock, stop_company_on_reply=False) == ["ann@acme.example"]


def test_a_dry_run_previews_only_what_a_real_run_would_send(db, settings, clock):
    ids = seed_sends(db, clock(), ACME_SENT)
    _pending(db, clock, ("ann@acme.example", "Acme"), ("una@unrelated.example", "Unrelated"))
    applications.record_reply(db, ids["bob@acme.example"], now=clock(), note="reply")
    preview = ScriptedTransport(name="dry_run")
    run_daily(settings, db, preview, now=clock, sleep=RecordingSleep(), rng=random.Random(1))
    assert preview.recipients == ["una@unrelated.example"]
    assert _skips(db) == {}  # a dry run changes no status


def test_a_free_mail_reply_does_not_stop_everyone_at_gmail(db, settings, clock):
    ids = seed_sends(db, clock(), [("solo@gmail.com", "", "<o-solo@example.com>")])
    _pending(db, clock, ("other@gmail.com", ""))
    applications.record_reply(db, ids["solo@gmail.com"], now=clock(), note="reply")
    assert _run(settings, db, clock) == ["other@gmail.com"]


def test_the_claim_refuses_a_recipient_whose_company_replied_after_the_batch_was_picked(db, settings, clock):
    ids = seed_sends(db, clock(), ACME_SENT)
    ann = _pending(db, clock, ("ann@acme.example", "Acme"))["ann@acme.example"]
    applications.record_reply(db, ids["bob@acme.example"], now=clock(), note="reply")
    assert ledger.claim(db, ann, now=clock(), tz=settings.tz, daily_limit=10, subject="s", transport="smtp") is None
    assert db.execute("SELECT status FROM recipients WHERE id = ?", (ann,)).fetchone()[0] == "skipped"


def test_the_watcher_never_overwrites_a_status_set_by_hand(db, clock):
    ids = seed_sends(db, clock(), ACME_SENT)
    applications.mark(db, "Bob@Acme.example", "not_interested", now=clock(), note="said no on the phone")
    assert applications.record_reply(db, ids["bob@acme.example"], now=clock() + timedelta(hours=1), note="r") is False
    row = db.execute("SELECT application_status, application_note, application_source FROM recipients").fetchone()
    assert tuple(row) == ("not_interested", "said no on the phone", "manual")


def test_a_reply_after_a_status_set_back_to_none_by_hand_still_counts(db, settings, clock):
    """`mark EMAIL none` undoes a reply read by mistake; it kept the watcher from ever seeing a
    real one later, so the follow-ups went on to someone who had answered."""
    ids = seed_sends(db, clock(), ACME_SENT)
    applications.record_reply(db, ids["bob@acme.example"], now=clock(), note="an auto-reply taken for one")
    result = _cli("mark", "bob@acme.example", "none", "--db", str(settings.db_path))
    assert result.stdout == ("bob@acme.example: application status 'none' (1 recipient(s)). A reply read later counts "
                             "again; `email-automation skip EMAIL` stops mail for good.\n")
    assert applications.record_reply(db, ids["bob@acme.example"], now=clock() + timedelta(days=2), note="r") is True
    assert db.execute("SELECT application_status, application_source FROM recipients WHERE email = 'bob@acme.example'"
                      ).fetchone()[:] == ("replied", "inbox")


def test_mark_none_lets_go_on_what_the_reply_read_by_mistake_had_stopped(db, settings, clock):
    """A run after the reply recorded the stops: bob's follow-up and ann, his colleague, skipped.
    `mark bob none` said mail would go out again, but neither went out; now both do, and a
    colleague skipped for another reply stays skipped."""
    from email_automation.sequences import add_step

    add_step(db, "default", after_days=1, html="<p>Following up</p>", now=clock())
    ids = seed_sends(db, clock(), ACME_SENT + [("cy@initech.example", "Initech", "<outreach-cy@example.com>")])
    _pending(db, clock, ("ann@acme.example", "Acme"), ("dan@initech.example", "Initech"))
    applications.record_reply(db, ids["bob@acme.example"], now=clock(), note="an auto-reply taken for one")
    applications.record_reply(db, ids["cy@initech.example"], now=clock(), note="a real reply")
    assert _run(settings, db, clock) == []
    assert db.execute("SELECT sequence_stopped FROM recipients WHERE email = 'bob@acme.example'").fetchone()[0]
    assert set(_skips(db)) == {"ann@acme.example", "dan@initech.example"}
    result = _cli("mark", "bob@acme.example", "none", "--db", str(settings.db_path))
    assert result.stdout == ("bob@acme.example: application status 'none' (1 recipient(s)). That reply had stopped 1 "
                             "sequence(s) and skipped 1 recipient(s): they go on at the next run, unless something "
                             "else stops them. A reply read later counts again; `email-automation skip EMAIL` stops "
                             "mail for good.\n")
    clock.current += timedelta(days=2)
    assert sorted(_run(settings, db, clock)) == ["ann@acme.example", "bob@acme.example"]
    assert set(_skips(db)) == {"dan@initech.example"}


def test_mark_keeps_the_history_of_each_change(db, clock):
    seed_sends(db, clock(), ACME_SENT)
    for hours, status in enumerate(["replied", "interview", "offer"]):
        applications.mark(db, "bob@acme.example", status, now=clock() + timedelta(hours=hours))
    history = db.execute("SELECT status, source, changed_at FROM application_changes ORDER BY id").fetchall()
    assert [tuple(h) for h in history] == [
        ("replied", "manual", "2026-11-25T07:00:00.000000Z"), ("interview", "manual", "2026-11-25T08:00:00.000000Z"),
        ("offer", "manual", "2026-11-25T09:00:00.000000Z")]


def test_funnel_counts_each_stage_and_the_reply_rate(db, clock):
    from email_automation.reports import funnel

    seed_sends(db, clock(), [(f"p{i}@c{i}.example", f"C{i}", f"<o{i}@example.com>") for i in range(4)])
    applications.mark(db, "p0@c0.example", "interview", now=clock())
    applications.mark(db, "p0@c0.example", "rejected", now=clock())  # reached an interview, then a no
    applications.mark(db, "p1@c1.example", "offer", now=clock())
    [f] = funnel(db)
    assert f.as_dict() == {"contacted": 4, "replied": 2, "interview": 2, "offer": 1, "rejected": 1,
                           "not_interested": 0, "reply_rate": 0.5, "not_mailed": 0}


def _cli(*args, env=None):
    return CliRunner().invoke(app, list(args), env=env)


def test_mark_through_the_cli_stops_a_pending_recipient_who_answered_on_linkedin(db, settings, clock):
    _pending(db, clock, ("kim@soylent.example", "Soylent"))
    result = _cli("mark", "kim@soylent.example", "replied", "--note", "answered on LinkedIn",
                  "--db", str(settings.db_path))
    assert (result.exit_code, result.stdout) == (0, "kim@soylent.example: application status 'replied' (1 recipient(s)).\n")
    assert _run(settings, db, clock) == []


def test_mark_with_an_unknown_status_is_exit_2_and_one_line(db, settings):
    result = _cli("mark", "kim@soylent.example", "hired", "--db", str(settings.db_path))
    assert result.exit_code == 2
    assert result.stderr == ("Error: unknown status 'hired': use one of none, replied, interview, offer, rejected, "
                             "not_interested\n")


def test_mark_for_an_unknown_address_is_exit_2_and_one_line(db, settings):
    result = _cli("mark", "nobody@x.example", "replied", "--campaign", "default", "--db", str(settings.db_path))
    assert (result.exit_code, result.stderr) == (2, "Error: nobody@x.example: no recipient with that address in campaign 'default'\n")


def test_mark_in_a_campaign_that_does_not_exist_says_so(db, settings):
    """A mistyped campaign read as "no recipient with that address in campaign 'defualt'"."""
    result = _cli("mark", "nobody@x.example", "replied", "--campaign", "defualt", "--db", str(settings.db_path))
    assert (result.exit_code, result.stderr) == (2, "Error: no campaign named 'defualt'\n")


def test_status_shows_the_funnel_and_the_latest_replies(db, settings, clock):
    from email_automation import inbox_store
    from email_automation.mail_classify import classify

    seed_sends(db, clock(), [("bob@acme.example", "Acme", "0100018f-1111-2222-3333-444455556666-000000"),
                             ("carol@globex.example", "Globex", "<o-carol@example.com>")])
    found = classify(email.message_from_bytes(load("gmail_reply.eml")), inbox_store.DbSentLookup(db))
    inbox_store.store(db, inbox_store.Position("box", 1, 1), "k1", found, now=clock())
    applications.mark(db, "bob@acme.example", "interview", now=clock())
    text = _cli("status", "--db", str(settings.db_path), env={"TIMEZONE": "America/New_York"}).stdout.splitlines()
    at = text.index("Replies in default: 2 contacted -> 1 replied (50%) -> 1 interview -> 0 offer.")
    assert text[at:at + 2] == ["Replies in default: 2 contacted -> 1 replied (50%) -> 1 interview -> 0 offer.",
                         "  2026-11-24 12:02 bob@acme.example (Acme): Re: Application: Backend developer at Acme"]
    data = json.loads(_cli("status", "--db", str(settings.db_path), "--json").stdout)
    assert data["funnel"]["default"]["reply_rate"] == 0.5


@pytest.fixture
def sink():
    with SmtpSink() as server:
        yield server


def _run_env(settings, sink, box=None, **extra):
    env = {"DB_PATH": str(settings.db_path), "DRY_RUN": "false", "TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
           "SMTP_PORT": str(sink.port), "SMTP_STARTTLS": "false", "SENDER_EMAIL": "jane@example.com",
           "DELAY_SECONDS": "0", "DAILY_LIMIT": "10"}
    if box is not None:
        env |= {k.upper(): str(v).lower() if isinstance(v, bool) else str(v) for k, v in box.settings().items()}
    return env | extra


def test_a_reply_in_the_inbox_before_the_run_stops_that_person_and_their_colleagues(
        dovecot, db, settings, clock, sink):  # noqa: F811
    seed_sends(db, clock(), [("bob@acme.example", "Acme", "0100018f-1111-2222-3333-444455556666-000000")])
    _pending(db, clock, ("ann@acme.example", "Acme"), ("una@unrelated.example", "Unrelated"))
    db.execute("INSERT INTO recipients (campaign_id, email, company, created_at) VALUES"
               " ((SELECT id FROM campaigns WHERE name = 'default'), 'bob2@acme.example', 'Acme', '2026-11-25')")
    box = dovecot.mailbox()
    box.append(load("gmail_reply.eml"))  # Bob answered overnight
    result = _cli("run", "--json", env=_run_env(settings, sink, box))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sent"] == 1
    assert [d.rcpt_tos for d in sink.deliveries] == [["una@unrelated.example"]]
    assert db.execute("SELECT application_status FROM recipients WHERE email = 'bob@acme.example'").fetchone()[0] == "replied"
    assert set(_skips(db)) == {"ann@acme.example", "bob2@acme.example"}


def test_a_failing_inbox_is_a_warning_unless_required(db, settings, clock, sink):
    _pending(db, clock, ("una@unrelated.example", "Unrelated"))
    down = {"IMAP_HOST": "127.0.0.1", "IMAP_PORT": "1", "IMAP_USERNAME": "me", "IMAP_PASSWORD": "pw", "IMAP_SSL": "false"}
    required = _cli("run", "--require-inbox", env=_run_env(settings, sink, **down))
    assert required.exit_code == 3 and sink.deliveries == []
    assert required.stderr.startswith("Error: inbox not read, nothing sent (--require-inbox): IMAP 127.0.0.1:1: cannot connect:")
    warned = _cli("run", env=_run_env(settings, sink, **down))
    assert warned.exit_code == 0, warned.output
    assert "inbox: replies not read (IMAP 127.0.0.1:1: cannot connect:" in warned.stdout
    assert [d.rcpt_tos for d in sink.deliveries] == [["una@unrelated.example"]]


def test_people_marked_by_hand_but_never_mailed_are_not_counted_as_contacted(db, settings, clock):
    """Three marks before any send read "3 contacted -> 3 replied (100%)"; after a run that mailed
    six others, "9 contacted -> 3 replied (33%)"."""
    from email_automation.import_csv import import_csv
    from tests.cli_helpers import EXAMPLE

    import_csv(db, EXAMPLE, campaign="spring")
    for address, status in [("sarah.klein@example.com", "interview"), ("priya.nair@example.com", "replied"),
                            ("emma.dubois@example.com", "rejected")]:
        applications.mark(db, address, status, now=clock(), campaign="spring")
    apart = "; 3 more with a status but never mailed (not counted)."
    status = _cli("status", "--db", str(settings.db_path)).stdout.splitlines()
    assert f"Replies in spring: 0 contacted -> 0 replied (0%) -> 0 interview -> 0 offer{apart}" in status
    assert len(_run(settings, db, clock)) == 6
    applications.mark(db, "maria.gonzalez@example.org", "interview", now=clock())  # mailed, then answered
    status = _cli("status", "--db", str(settings.db_path)).stdout.splitlines()
    assert f"Replies in spring: 6 contacted -> 1 replied (17%) -> 1 interview -> 0 offer{apart}" in status
    data = json.loads(_cli("status", "--db", str(settings.db_path), "--json").stdout)["funnel"]["spring"]
    assert (data["contacted"], data["replied"], data["reply_rate"], data["not_mailed"]) == (6, 1, 0.1667, 3)


def test_answers_read_once_give_each_recipient_the_words_of_stop_reason(db, clock):
    """`run --plan` names whom a reply stops from one read (`Answers`), the claim asks per
    recipient (`stop_reason`): the same words, the company's name before the domain, the earliest first."""
    rows = [("ann@acme.example", " ACME "), ("bob@acme.example", "Acme"), ("cy@acme.example", "Other"),
            ("dee@gmail.com", "acme"), ("eve@gmail.com", "Solo"), ("fay@globex.example", ""),
            ("gus@globex.example", ""), ("hal@initech.example", "Initech")]
    _pending(db, clock, *rows)
    applications.mark(db, "bob@acme.example", "replied", now=clock())
    applications.mark(db, "cy@acme.example", "interview", now=clock())
    applications.mark(db, "fay@globex.example", "offer", now=clock())
    answers = applications.Answers(db)
    for stop_company in (True, False):
        for email_address, company in rows:
            assert answers.stop_reason(email_address, company, stop_company=stop_company) == applications.stop_reason(
                db, email_address, company, stop_company=stop_company), (email_address, stop_company)
    assert answers.stop_reason("ann@acme.example", " ACME ", stop_company=True) == (
        "bob@acme.example at the same company (ACME) has application status 'replied' (STOP_COMPANY_ON_REPLY)")
