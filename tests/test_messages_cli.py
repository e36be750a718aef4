"""The message a recipient gets, driven the way a user does: import a CSV, `preview --out x.eml`, `run`."""

from __future__ import annotations

import email
import email.policy
import textwrap

import pytest
from typer.testing import CliRunner

from email_automation.cli import app
from email_automation.database import connect

runner = CliRunner()
SUBJECT = "Offre de partenariat : Caisse d'Épargne Île-de-France, Société Générale et Crédit Agricole Süd"


def cli(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def db_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    monkeypatch.setenv("SENDER_NAME", "Jane Sender")
    monkeypatch.setenv("REPLY_TO", "replies@example.com")
    monkeypatch.setenv("DELAY_SECONDS", "0")
    monkeypatch.setenv("TIMEZONE", "UTC")
    path = tmp_path / "cli.db"
    assert cli("init", "--db", str(path)).exit_code == 0
    csv = tmp_path / "people.csv"
    csv.write_text(textwrap.dedent(f"""\
        email,first_name,last_name,company,custom_subject,custom_body
        ada@example.org,Ada,Lovelace,Analytical Engines,"{SUBJECT}","Dear Ada,\n\nA short note."
        bob@example.org,Bob,Babbage,Difference Engines,,
        """), encoding="utf-8")
    assert cli("import", str(csv), "--db", str(path)).exit_code == 0
    return path


def preview_eml(db_path, tmp_path, env=None) -> tuple[bytes, email.message.EmailMessage]:
    out = tmp_path / "ada.eml"
    result = cli("preview", "--db", str(db_path), "--email", "ada@example.org", "--out", str(out), env=env)
    assert result.exit_code == 0, result.output
    raw = out.read_bytes()
    return raw, email.message_from_bytes(raw, policy=email.policy.default)


def test_a_long_accented_subject_and_the_recipients_name_arrive_exactly(db_path, tmp_path):
    raw, received = preview_eml(db_path, tmp_path)
    assert received["Subject"] == SUBJECT
    assert received["To"] == "Ada Lovelace <ada@example.org>"
    assert received["From"] == "Jane Sender <jane@example.com>"
    header_lines = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert max(len(line) for line in header_lines) <= 78
    assert not [line for line in header_lines if line != line.rstrip()]


def test_mime_version_only_at_the_top(db_path, tmp_path):
    _, received = preview_eml(db_path, tmp_path)
    assert received["MIME-Version"] == "1.0"
    assert [part.get("MIME-Version") for part in received.iter_parts()] == [None, None]


def test_a_custom_body_without_unsubscribe_url_still_says_how_to_opt_out(db_path, tmp_path):
    _, received = preview_eml(db_path, tmp_path)
    text, html = (part.get_content() for part in received.iter_parts())
    assert 'Reply "unsubscribe" and you will not hear from me again.' in text
    assert 'Reply "unsubscribe" and you will not hear from me again.' in html
    # ... and the mailto: unsubscribe goes where replies go.
    assert received["List-Unsubscribe"] == "<mailto:replies@example.com?subject=unsubscribe>"


def test_the_text_part_shows_the_unsubscribe_link_plainly_and_one_click_is_offered(db_path, tmp_path):
    env = {"UNSUBSCRIBE_URL": "https://example.com/unsubscribe?email={email}"}
    _, received = preview_eml(db_path, tmp_path, env=env)
    text = next(received.iter_parts()).get_content()
    assert "Unsubscribe <https://example.com/unsubscribe?email=ada%40example.org> and you will not hear" in text
    assert "](" not in text  # no Markdown link syntax
    assert received["List-Unsubscribe"] == ("<https://example.com/unsubscribe?email=ada%40example.org>, "
                                            "<mailto:replies@example.com?subject=unsubscribe>")
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize(("name", "value", "line"), [
    ("DELAY_SECONDS", "inf", "Error: invalid setting DELAY_SECONDS=inf: expected a number of seconds from 0 to 3600"),
    ("DELAY_SECONDS", "1e300", "Error: invalid setting DELAY_SECONDS=1e300: expected a number of seconds from 0 to 3600"),
    ("SENDER_NAME", "Jane\rBcc: x@example.net",
     "Error: invalid setting SENDER_NAME=Jane\\rBcc: x@example.net: has a control character U+000D at position 5"),
    ("UNSUBSCRIBE_URL", "https://example.com/unsubscribe",
     "Error: invalid setting UNSUBSCRIBE_URL=https://example.com/unsubscribe: must contain {email}, "
     "so that each recipient gets their own link"),
])
def test_a_bad_setting_stops_the_run_before_anything_with_one_line(db_path, name, value, line):
    result = cli("run", "--db", str(db_path), env={name: value})
    assert (result.exit_code, result.stderr.strip()) == (2, line)
    assert "Traceback" not in result.output
    assert connect(db_path).execute("SELECT count(*) FROM send_log").fetchone()[0] == 0


def test_a_control_character_in_a_stored_subject_fails_only_that_recipient(db_path):
    # The import refuses control characters; rows stored before that still reach the builder.
    conn = connect(db_path)
    conn.execute("UPDATE recipients SET custom_subject = 'Hello \x1b[31mAda' WHERE email = 'ada@example.org'")
    conn.commit()
    result = cli("run", "--db", str(db_path))
    assert result.exit_code == 0, result.output
    assert ("ada@example.org failed (recipient ada@example.org: the subject has a control character U+001B "
            "at position 7; a header cannot carry it)") in result.stdout
    assert "Dry run: 1 message(s) written" in result.stdout  # Bob's
    assert "\x1b" not in result.output


def test_preview_prints_the_headers_the_message_is_sent_with(db_path, tmp_path, monkeypatch):
    """The README's promise: the preview shows the message as it will be sent, To with the name too."""
    from .smtp_sink import SmtpSink

    shown = cli("preview", "--db", str(db_path), "ada@example.org")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("From: Jane Sender <jane@example.com>\nTo: Ada Lovelace <ada@example.org>\n"
                                   f"Reply-To: replies@example.com\nSubject: {SUBJECT}\n\n--- text ---\n")
    _, written = preview_eml(db_path, tmp_path)
    for name, value in {"SMTP_HOST": "127.0.0.1", "SMTP_STARTTLS": "false", "TRANSPORT": "smtp"}.items():
        monkeypatch.setenv(name, value)
    with SmtpSink() as sink:
        monkeypatch.setenv("SMTP_PORT", str(sink.port))
        assert cli("run", "--send", "--db", str(db_path)).exit_code == 0
        sent = next(d.message for d in sink.deliveries if d.rcpt_tos == ["ada@example.org"])
    for message in (written, sent):
        assert shown.stdout.startswith("".join(f"{name}: {message[name]}\n" for name in ("From", "To", "Reply-To", "Subject")))
