"""Signed unsubscribe links: an opaque token instead of the address, and `unsubscribe` applying one."""

from __future__ import annotations

import email
import email.policy
import json
import re

import pytest
from typer.testing import CliRunner

from email_automation.cli import app
from email_automation.database import connect

runner = CliRunner()
SECRET = "0123456789abcdef0123456789abcdef"


def cli(*args, env=None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def db(tmp_path, monkeypatch):
    for name, value in {"SENDER_EMAIL": "jane@example.com", "UNSUBSCRIBE_URL": "https://example.org/unsub?u={email}",
                        "UNSUBSCRIBE_SECRET": SECRET, "TIMEZONE": "UTC"}.items():
        monkeypatch.setenv(name, value)
    path = str(tmp_path / "u.db")
    cli("init", "--db", path)
    (tmp_path / "r.csv").write_text("email,first_name\nann@example.org,Ann\nbob@example.org,Bob\n")
    assert cli("import", str(tmp_path / "r.csv"), "--db", path).exit_code == 0
    return path


def link_in_message(db, tmp_path, to: str) -> str:
    out = tmp_path / f"{to}.eml"
    assert cli("preview", "--db", db, "--email", to, "--out", str(out)).exit_code == 0
    message = email.message_from_bytes(out.read_bytes(), policy=email.policy.default)
    return re.search(r"<(https://[^>]+)>", str(message["List-Unsubscribe"])).group(1)


def test_the_link_carries_a_token_not_the_address_and_unsubscribe_applies_it(db, tmp_path):
    link = link_in_message(db, tmp_path, "ann@example.org")
    assert "ann" not in link and re.fullmatch(r"https://example\.org/unsub\?u=u1[A-Za-z0-9_-]{27}", link)
    assert link != link_in_message(db, tmp_path, "bob@example.org")

    result = cli("unsubscribe", link, "--db", db)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ann@example.org unsubscribed; 1 pending recipient(s) skipped."
    conn = connect(db)
    assert tuple(conn.execute("SELECT reason, source FROM suppressions").fetchone()) == ("unsubscribe", "unsubscribe-link")
    assert conn.execute("SELECT status FROM recipients WHERE email = 'bob@example.org'").fetchone()[0] == "pending"
    again = cli("unsubscribe", link.rsplit("=", 1)[1], "--db", db, "--json")  # the token alone works too
    assert json.loads(again.stdout) == {"email": "ann@example.org", "suppressed": False, "reason": "unsubscribe", "skipped": 0}


def test_a_forged_or_foreign_token_is_refused_in_one_line(db, tmp_path):
    link = link_in_message(db, tmp_path, "ann@example.org")
    forged = link[:-4] + ("AAAA" if not link.endswith("AAAA") else "BBBB")
    result = cli("unsubscribe", forged, "--db", db)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"Error: {forged}: no recipient has this unsubscribe token "
                                     "(was UNSUBSCRIBE_SECRET changed?)")
    assert connect(db).execute("SELECT count(*) FROM suppressions").fetchone()[0] == 0


def test_links_with_the_plain_address_still_work_for_mail_sent_before_the_secret(db):
    result = cli("unsubscribe", "https://example.org/unsub?u=bob%40example.org", "--db", db)
    assert result.stdout.strip() == "bob@example.org unsubscribed; 1 pending recipient(s) skipped."


def test_nothing_usable_is_bad_input(db):
    result = cli("unsubscribe", "https://example.org/unsub", "--db", db)
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: https://example.org/unsub: neither an unsubscribe link, a token nor an email address"


def test_a_short_secret_is_refused_without_showing_it(tmp_path):
    result = cli("status", "--db", str(tmp_path / "x.db"), env={"UNSUBSCRIBE_SECRET": "short"})
    assert result.exit_code == 2
    assert result.stderr.strip() == ("Error: invalid setting UNSUBSCRIBE_SECRET=********: expected a random string of "
                                     "at least 16 characters (e.g. the output of `openssl rand -hex 32`)")
