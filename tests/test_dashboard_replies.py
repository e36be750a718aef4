"""The dashboard's Replies tab (AppTest over a database filled by reading the corpus)."""

from __future__ import annotations

import email
from contextlib import closing
from datetime import timedelta

import pytest

from email_automation import dashboard, inbox_store
from email_automation.database import connect
from email_automation.mail_classify import classify
from tests.mail_corpus import load, seed_sends
from tests.test_dashboard import PASSWORD, _fresh_cache, as_read, frame, page, unlock  # noqa: F401 - _fresh_cache: autouse fixture



@pytest.fixture
def filled(db, clock):
    """The corpus as the inbox watcher stores it, one UID per message in file order."""
    seed_sends(db, clock() - timedelta(days=2))
    names = ["gmail_reply.eml", "outlook_reply.eml", "gmail_vacation.eml", "postfix_bounce.eml", "newsletter.eml"]
    for uid, name in enumerate(names, start=1):
        found = classify(email.message_from_bytes(load(name)), inbox_store.DbSentLookup(db))
        inbox_store.store(db, inbox_store.Position("box", 1, uid), inbox_store.dedupe_key(found.message_id, b""),
                          found, now=clock())
    return db


def test_replies_are_listed_newest_first_with_who_and_what_they_said(settings, clock, filled):
    at = page(settings, clock, tab="Replies")
    assert not at.exception
    replies = frame(at, "snippet")
    assert list(replies.columns) == list(dashboard.REPLY_COLUMNS)
    assert replies[["date", "from", "company", "application"]].values.tolist() == [
        ["2026-11-25 09:15", "carol@globex.example", "Globex", "replied"],  # on the user's clock (Berlin)
        ["2026-11-24 18:02", "bob@acme.example", "Acme", "replied"]]
    assert replies["snippet"][1].startswith("Hi Jane, Thanks for reaching out")
    assert "Replies (2)" in [h.value for h in at.subheader]


def test_auto_replies_and_bounces_are_shown_apart_and_newsletters_not_at_all(settings, clock, filled):
    other = frame(page(settings, clock, tab="Replies"), "kind")
    assert sorted(other[["kind", "recipient"]].values.tolist()) == [
        ["auto-reply", "erin@hooli.example"], ["bounce", "gone@stark.example"]]


def test_the_funnel_per_campaign(settings, clock, filled):
    funnel = frame(page(settings, clock, tab="Replies"), "reply rate")
    assert funnel.values.tolist() == [["default", 10, 2, "20.00%", 0, 0, 0, 0, 0]]


def test_the_application_status_is_updated_in_place_once_unlocked_and_confirmed(settings, clock, filled):
    at = unlock(page(settings, clock, password=PASSWORD, tab="Replies"))
    at.text_input(key="act_mark_email").input("Bob@Acme.example")
    at.selectbox(key="act_mark_status").set_value("interview")
    at.text_input(key="act_mark_note").input("Thursday 10:00")
    at.checkbox(key="act_mark_sure").check()
    at.button(key="act_mark_go").click().run()
    assert "bob@acme.example: application status 'interview' (1 recipient(s))." in [s.value for s in at.success]
    apps = frame(at, "set_by")
    assert apps[apps.email == "bob@acme.example"][["status", "note", "set_by", "changed_at"]].values.tolist() == [
        ["interview", "Thursday 10:00", "manual", "2026-11-25 08:00"]]  # 07:00 UTC, on the user's clock (Berlin)
    with closing(connect(settings.db_path, readonly=True)) as conn:
        assert [tuple(r) for r in conn.execute("SELECT actor, action, target FROM admin_log WHERE actor = 'dashboard'")] == [
            ("dashboard", "mark", "bob@acme.example")]


def test_setting_a_status_back_to_none_points_to_the_dashboards_skip_not_a_command(settings, clock, filled):
    at = unlock(page(settings, clock, password=PASSWORD, tab="Replies"))
    at.text_input(key="act_mark_email").input("bob@acme.example")
    at.selectbox(key="act_mark_status").set_value("none")
    at.checkbox(key="act_mark_sure").check()
    at.button(key="act_mark_go").click().run()
    [said] = [s.value for s in at.success]
    assert said.startswith("bob@acme.example: application status 'none' (1 recipient(s)).")
    assert "email-automation" not in said and "Admin tab's 'Skip a pending or failed recipient'" in said


def test_the_application_status_cannot_be_changed_while_locked(settings, clock, filled):
    at = page(settings, clock, password=PASSWORD, tab="Replies")
    assert at.button(key="act_mark_go").disabled and at.text_input(key="act_mark_email").disabled
    for widget in (at.text_input(key="act_mark_email"), at.checkbox(key="act_mark_sure"), at.button(key="act_mark_go")):
        widget.proto.disabled = False  # as a crafted websocket message would send them
    at.text_input(key="act_mark_email").input("bob@acme.example")
    at.checkbox(key="act_mark_sure").check()
    at.button(key="act_mark_go").click().run()
    assert not [s for s in at.success if "application status" in s.value]
    with closing(connect(settings.db_path, readonly=True)) as conn:
        assert conn.execute("SELECT application_status FROM recipients WHERE email = 'bob@acme.example'").fetchone()[0] == "replied"


def _old_database(path) -> None:
    """A database as the previous version left it: the migrations before the replies one."""
    from email_automation import database

    conn = database.connect(path, create=True)
    for number, script in enumerate(database.MIGRATIONS[:3], start=1):
        for statement in database._statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.close()


def test_an_older_database_is_one_clear_line_on_the_page_not_a_traceback(settings, clock):
    _old_database(settings.db_path)
    at = page(settings, clock, tab="Replies")
    assert not at.exception
    assert [as_read(e.value) for e in at.error] == [
        f"{settings.db_path}: the database is from an older version; run `email-automation init` (or any command) "
        "to upgrade it, then reload"]


def test_the_dashboard_command_upgrades_an_older_database_before_the_page_reads_it(settings, monkeypatch):
    from typer.testing import CliRunner

    from email_automation.cli import app
    from email_automation.cli import dashboard as cli_dashboard
    from email_automation.database import SCHEMA_VERSION, schema_version

    _old_database(settings.db_path)
    monkeypatch.setattr(cli_dashboard, "_run_until_stopped", lambda command, env: 0)
    result = CliRunner().invoke(app, ["dashboard", "--db", str(settings.db_path), "--port", "18599"])
    assert result.exit_code == 0, result.output
    with closing(connect(settings.db_path, readonly=True)) as conn:
        assert schema_version(conn) == SCHEMA_VERSION


def test_a_reply_set_back_to_none_leaves_the_per_step_count_as_it_leaves_the_funnel(settings, clock, filled):
    """After `mark bob none` the funnel said 1 replied and the per-step table still 2."""
    from email_automation import applications
    from email_automation.sequences import add_step, step_summary

    add_step(filled, "default", after_days=3, html="<p>Following up</p>", now=clock())

    def replied() -> int:
        summary = step_summary(filled, now=clock(), tz=settings.tz, holidays=frozenset(), stop_company=True)
        return summary["default"]["1"]["replied"]

    assert replied() == 2
    applications.mark(filled, "bob@acme.example", "none", now=clock())
    assert replied() == 1
    applications.record_reply(filled, filled.execute("SELECT id FROM recipients WHERE email = 'bob@acme.example'"
                                                     ).fetchone()[0], now=clock(), note="a real one")
    assert replied() == 2  # bob answered after all: he counts again
