"""Attachments: named in the CSV or by `template set --attach`, checked at import and at send,
and received byte for byte through SMTP and SES."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import re
import sqlite3
import urllib.request
from contextlib import closing
from datetime import datetime, timezone

import boto3
import pytest

from email_automation import attachments
from email_automation.email_templates import RenderedEmail
from email_automation.errors import PermanentSendError
from email_automation.messages import build_message, build_wire
from tests.cli_helpers import cli
from tests.smtp_sink import SmtpSink

RENDERED = RenderedEmail(subject="Application", html="<p>Hello</p>", text="Hello\n")
CV_BYTES = bytes(range(256)) * 40 + b"%%EOF\r\n\x00"  # every byte value, CR LF and NUL included


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def received_files(message: email.message.EmailMessage) -> dict[str, bytes]:
    return {part.get_filename(): part.get_content() for part in message.iter_attachments()}


@pytest.fixture
def folder(tmp_path):
    """A CSV's folder with two CVs, a cover letter with a non-ASCII name and a blocked script."""
    files = tmp_path / "apply"
    files.mkdir()
    (files / "cv-backend.pdf").write_bytes(CV_BYTES)
    (files / "cv-data-engineer.pdf").write_bytes(CV_BYTES[::-1])
    (files / "Lettre de motivation – Zoë.pdf").write_bytes("lettre é".encode() * 100)
    (files / "setup.exe").write_bytes(b"MZ")
    return files


def write_csv(path, rows):
    path.write_text("email,first_name,attachments\n" + "".join(f"{e},{n},{a}\n" for e, n, a in rows), encoding="utf-8")
    return path


def db_env(tmp_path):
    db = str(tmp_path / "apply.db")
    assert cli("init", "--db", db).exit_code == 0
    return db


# --- the message ------------------------------------------------------------------------------

def test_a_message_with_files_is_mixed_around_the_alternative_with_the_bytes_on_disk(settings, folder):
    files = attachments.load([str(folder / "cv-backend.pdf"), str(folder / "Lettre de motivation – Zoë.pdf")])
    message = build_message(RENDERED, to="ada@example.org", settings=settings, attachments=files)

    received = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert received.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in received.iter_parts()] == ["multipart/alternative", "application/pdf",
                                                                     "application/pdf"]
    assert received.get_body(("plain",)).get_content() == "Hello\r\n"
    got = received_files(received)
    assert sha256(got["cv-backend.pdf"]) == sha256(CV_BYTES)
    assert got["Lettre de motivation – Zoë.pdf"] == "lettre é".encode() * 100
    raw = message.as_bytes()
    assert re.search(rb"filename\*(0\*)?=utf-8''Lettre%20de%20motivation", raw)  # RFC 2231 section 4
    assert raw.count(b"MIME-Version") == 1
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_content_type_comes_from_the_name():
    assert attachments.content_type("cv.pdf") == "application/pdf"
    assert attachments.content_type("cv.docx") == (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document")
    assert attachments.content_type("portfolio.tar.gz") == "application/gzip"
    assert attachments.content_type("README") == "application/octet-stream"


def test_a_message_one_byte_over_max_message_bytes_is_refused_and_one_at_the_limit_is_not(settings, folder,
                                                                                        monkeypatch):
    from email_automation import messages

    monkeypatch.setattr(messages, "make_msgid", lambda domain: f"<fixed@{domain}>")  # a size to the byte
    files = attachments.load([str(folder / "cv-backend.pdf")])
    size = len(build_wire(RENDERED, to="ada@example.org", settings=settings, attachments=files).data)

    at_limit = settings.model_copy(update={"max_message_bytes": size})
    assert len(build_wire(RENDERED, to="ada@example.org", settings=at_limit, attachments=files).data) == size
    with pytest.raises(PermanentSendError) as info:
        build_wire(RENDERED, to="ada@example.org", settings=settings.model_copy(update={"max_message_bytes": size - 1}),
                   attachments=files)
    assert info.value.code == "MessageTooLarge"
    assert str(info.value) == (f"recipient ada@example.org: with its attachments the message is {size:,} bytes, more "
                               f"than MAX_MESSAGE_BYTES ({size - 1:,}); send a smaller file or a link")


def test_the_default_limit_is_10_mb_of_message_not_of_file(settings, tmp_path):
    limit = settings.max_message_bytes
    assert limit == 10 * 1024 * 1024
    cv = tmp_path / "cv.pdf"
    cv.write_bytes(b"x" * 3)
    overhead = len(build_message(RENDERED, to="a@example.org", settings=settings,
                                 attachments=attachments.load([str(cv)])).as_bytes()) - attachments.encoded_size(3)
    fits = 3 * ((limit - overhead - 200) * 76 // 78 // 4)  # base64 in lines of 76 + CRLF, 200 bytes to spare
    cv.write_bytes(b"x" * fits)
    size = len(build_message(RENDERED, to="a@example.org", settings=settings,
                             attachments=attachments.load([str(cv)])).as_bytes())
    assert limit - 400 < size <= limit
    cv.write_bytes(b"x" * (fits + 300))  # 400 more base64 characters: over the limit
    with pytest.raises(PermanentSendError, match=f"more than MAX_MESSAGE_BYTES \\({limit:,}\\)"):
        build_message(RENDERED, to="a@example.org", settings=settings, attachments=attachments.load([str(cv)]))


# --- import -----------------------------------------------------------------------------------

def test_import_checks_each_row_s_files_and_rejects_with_the_reason(tmp_path, folder):
    db = db_env(tmp_path)
    (folder / "locked.pdf").write_bytes(b"x")
    (folder / "locked.pdf").chmod(0)
    csv = write_csv(folder / "people.csv", [
        ("ada@example.org", "Ada", "cv-backend.pdf"),
        ("bob@example.org", "Bob", "cv-data-engineer.pdf; Lettre de motivation – Zoë.pdf"),
        ("cy@example.org", "Cy", "setup.exe"),
        ("di@example.org", "Di", "missing.pdf"),
        ("ed@example.org", "Ed", "../outside.pdf"),
        ("fa@example.org", "Fa", "/etc/hostname"),
        ("gil@example.org", "Gil", ""),
        ("hal@example.org", "Hal", "contacts.pdf"),
    ])
    with closing(sqlite3.connect(folder / "contacts.pdf")) as conn:  # a database, whatever its name
        conn.execute("CREATE TABLE t (x)")
    (tmp_path / "outside.pdf").write_bytes(b"x")

    result = cli("import", str(csv), "--db", db)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"{csv}: 3 added to campaign 'default'" in out
    assert f"{csv}:4: 'attachments': setup.exe: SES does not send .exe files (executables and scripts are refused)" in out
    assert f"{csv}:5: 'attachments': {folder / 'missing.pdf'}: no such file" in out
    assert f"{csv}:6: 'attachments': ../outside.pdf: leads outside ATTACHMENTS_DIR ({folder}); put the file there" in out
    assert f"{csv}:7: 'attachments': /etc/hostname: give a path relative to ATTACHMENTS_DIR ({folder}), not an absolute one" in out
    assert f"{csv}:9: 'attachments': {folder / 'contacts.pdf'}: an SQLite database is never attached" in out
    conn = sqlite3.connect(db)
    stored = dict(conn.execute("SELECT email, attachments FROM recipients"))
    assert json.loads(stored["bob@example.org"]) == [str(folder / "cv-data-engineer.pdf"),
                                                     str(folder / "Lettre de motivation – Zoë.pdf")]
    assert stored["gil@example.org"] is None
    fields = dict(conn.execute("SELECT email, fields FROM recipients"))
    assert json.loads(fields["ada@example.org"]) == {}  # not a template variable


def test_attachments_dir_and_max_message_bytes_apply_at_import(tmp_path, folder, monkeypatch):
    db = db_env(tmp_path)
    csv = write_csv(tmp_path / "people.csv", [("ada@example.org", "Ada", "cv-backend.pdf")])
    monkeypatch.setenv("ATTACHMENTS_DIR", str(folder))
    monkeypatch.setenv("MAX_MESSAGE_BYTES", "65536")
    (folder / "big.pdf").write_bytes(b"x" * 60000)
    write_csv(csv, [("ada@example.org", "Ada", "cv-backend.pdf"), ("bob@example.org", "Bob", "big.pdf")])

    result = cli("import", str(csv), "--db", db)

    assert "1 added" in result.stdout
    assert (f"{csv}:3: 'attachments': the attachments make the message 0.1 MB, more than MAX_MESSAGE_BYTES "
            "(65,536 bytes); send a smaller file or a link") in result.stdout


def test_a_file_named_twice_or_also_by_the_campaign_counts_once_toward_the_size(tmp_path, folder, monkeypatch):
    """The row was rejected as too big although the message, which carries each file once, fit."""
    db = db_env(tmp_path)
    monkeypatch.setenv("MAX_MESSAGE_BYTES", "65536")
    (folder / "cv.pdf").write_bytes(b"x" * 30000)
    assert cli("template", "set", "--db", db, "--attach", str(folder / "cv.pdf")).exit_code == 0
    csv = write_csv(folder / "people.csv", [("ada@example.org", "Ada", "cv.pdf;cv.pdf"), ("bob@example.org", "Bob", "cv.pdf")])

    result = cli("import", str(csv), "--db", db)

    assert "2 added" in result.stdout and "invalid" not in result.stdout.replace("0 invalid", ""), result.stdout


# --- template set --attach --------------------------------------------------------------------

def test_template_set_attach_checks_stores_and_shows_the_campaign_files(tmp_path, folder):
    db = db_env(tmp_path)
    blocked = cli("template", "set", "--db", db, "--attach", str(folder / "setup.exe"))
    assert blocked.exit_code == 2
    assert blocked.stderr.strip() == "Error: setup.exe: SES does not send .exe files (executables and scripts are refused)"
    missing = cli("template", "set", "--db", db, "--attach", str(folder / "nope.pdf"))
    assert (missing.exit_code, missing.stderr.strip()) == (2, f"Error: {folder / 'nope.pdf'}: no such file")
    assert sqlite3.connect(db).execute("SELECT attachments FROM campaigns").fetchone()[0] is None

    ok = cli("template", "set", "--db", db, "--attach", str(folder / "cv-backend.pdf"))
    assert ok.exit_code == 0, ok.output
    assert f"--- attachments ---\n{folder / 'cv-backend.pdf'}\n" in cli("template", "show", "--db", db).stdout
    assert cli("template", "set", "--db", db, "--subject", "Hello {{ first_name }}").exit_code == 0
    assert f"--- attachments ---\n{folder / 'cv-backend.pdf'}\n" in cli("template", "show", "--db", db).stdout  # kept
    assert cli("template", "set", "--db", db, "--no-attachments").exit_code == 0
    assert "--- attachments ---\n(none)" in cli("template", "show", "--db", db).stdout


def test_template_set_attach_refuses_files_that_make_a_waiting_recipients_message_too_big(tmp_path, folder, monkeypatch):
    """It said "updated", and the next run failed every recipient whose own CV no longer fit."""
    db = db_env(tmp_path)
    monkeypatch.setenv("MAX_MESSAGE_BYTES", "65536")
    (folder / "cv.pdf").write_bytes(b"x" * 30000)
    (folder / "portfolio.pdf").write_bytes(b"y" * 30000)
    csv = write_csv(folder / "people.csv", [("ada@example.org", "Ada", "cv.pdf"), ("bob@example.org", "Bob", "")])
    assert cli("import", str(csv), "--db", db).exit_code == 0

    result = cli("template", "set", "--db", db, "--attach", str(folder / "portfolio.pdf"))

    assert result.exit_code == 2
    assert result.stderr == ("Error: with ada@example.org's own files, the attachments make the message 0.1 MB, more "
                             "than MAX_MESSAGE_BYTES (65,536 bytes); send a smaller file or a link\n")
    assert sqlite3.connect(db).execute("SELECT attachments FROM campaigns").fetchone()[0] is None
    assert cli("template", "set", "--db", db, "--attach", str(folder / "cv.pdf")).exit_code == 0  # sent once


def test_template_set_attach_counts_a_file_named_twice_once_and_not_for_follow_ups(tmp_path, folder, monkeypatch):
    """A cell naming cv.pdf twice counted it twice, and a recipient already sent step 1 (whose
    follow-ups carry no attachment) was checked too: both refused a file every message could carry."""
    from email_automation.database import connect
    from email_automation.sequences import add_step

    db = db_env(tmp_path)
    monkeypatch.setenv("MAX_MESSAGE_BYTES", "65536")
    (folder / "cv.pdf").write_bytes(b"x" * 20000)
    (folder / "big-cv.pdf").write_bytes(b"z" * 30000)
    (folder / "portfolio.pdf").write_bytes(b"y" * 20000)
    csv = write_csv(folder / "people.csv", [("ada@example.org", "Ada", "cv.pdf;cv.pdf"),
                                            ("bob@example.org", "Bob", "big-cv.pdf")])
    assert cli("import", str(csv), "--db", db).exit_code == 0
    conn = connect(db)
    add_step(conn, "default", after_days=2, html="<p>Following up</p>", now=datetime.now(timezone.utc))
    with conn:  # bob's first message went out with his CV
        conn.execute("UPDATE recipients SET status = 'sent' WHERE email = 'bob@example.org'")

    result = cli("template", "set", "--db", db, "--attach", str(folder / "portfolio.pdf"))

    assert result.exit_code == 0, result.stderr
    assert (folder / "portfolio.pdf").name in conn.execute("SELECT attachments FROM campaigns").fetchone()[0]


# --- end to end -------------------------------------------------------------------------------

def _prepare(tmp_path, folder, db):
    csv = write_csv(folder / "people.csv", [
        ("ada@example.org", "Ada", "cv-backend.pdf"),
        ("bob@example.org", "Bob", "cv-data-engineer.pdf"),
    ])
    assert cli("import", str(csv), "--db", db).exit_code == 0
    assert cli("template", "set", "--db", db, "--attach", str(folder / "Lettre de motivation – Zoë.pdf")).exit_code == 0


def test_preview_and_a_dry_run_include_the_files(tmp_path, folder, monkeypatch):
    db = db_env(tmp_path)
    _prepare(tmp_path, folder, db)
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")

    shown = cli("preview", "--db", db, "--email", "ada@example.org", "--out", str(tmp_path / "ada.eml"))
    assert shown.exit_code == 0, shown.output
    assert ("--- attachments ---\nLettre de motivation – Zoë.pdf (application/pdf, 900 bytes)\n"
            f"cv-backend.pdf (application/pdf, {len(CV_BYTES):,} bytes)\n") in shown.stdout
    eml = email.message_from_bytes((tmp_path / "ada.eml").read_bytes(), policy=email.policy.default)
    assert sha256(received_files(eml)["cv-backend.pdf"]) == sha256(CV_BYTES)

    run = cli("run", "--db", db, "--json", env={"DRY_RUN": "true", "OUTBOX_DIR": str(tmp_path / "outbox")})
    assert run.exit_code == 0, run.output
    [bob] = (tmp_path / "outbox").glob("*/bob@example.org--*.eml")
    got = received_files(email.message_from_bytes(bob.read_bytes(), policy=email.policy.default))
    assert sorted(got) == ["Lettre de motivation – Zoë.pdf", "cv-data-engineer.pdf"]
    assert sha256(got["cv-data-engineer.pdf"]) == sha256(CV_BYTES[::-1])


def test_smtp_delivers_the_files_byte_for_byte_and_a_vanished_file_fails_only_its_recipient(tmp_path, folder,
                                                                                                monkeypatch):
    db = db_env(tmp_path)
    _prepare(tmp_path, folder, db)
    (folder / "cv-data-engineer.pdf").unlink()  # gone between import and run
    with SmtpSink() as sink:
        for name, value in sink.run_settings().items():
            monkeypatch.setenv(name, value)
        run = cli("run", "--db", db, "--json")

    assert run.exit_code == 0, run.output
    assert (json.loads(run.stdout)["sent"], json.loads(run.stdout)["failed"]) == (1, 1)
    [delivery] = sink.deliveries
    got = received_files(delivery.message)
    assert sha256(got["cv-backend.pdf"]) == sha256(CV_BYTES)
    assert got["Lettre de motivation – Zoë.pdf"] == "lettre é".encode() * 100
    status, error = sqlite3.connect(db).execute(
        "SELECT status, last_error FROM recipients WHERE email = 'bob@example.org'").fetchone()
    assert status == "failed"
    assert error.endswith(f"recipient bob@example.org: cannot attach {folder / 'cv-data-engineer.pdf'}: no such file")


def test_ses_receives_the_files_byte_for_byte(tmp_path, folder, moto_url, monkeypatch):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10)
    boto3.client("sesv2", region_name="us-east-1", endpoint_url=moto_url).create_email_identity(EmailIdentity="example.com")
    for name, value in {"AWS_ENDPOINT_URL": moto_url, "AWS_REGION": "us-east-1", "DRY_RUN": "false",
                        "TRANSPORT": "ses", "SENDER_EMAIL": "jane@example.com", "DELAY_SECONDS": "0",
                        "TIMEZONE": "UTC", "SES_SUPPRESSION_CHECK": "false"}.items():
        monkeypatch.setenv(name, value)
    db = db_env(tmp_path)
    _prepare(tmp_path, folder, db)

    run = cli("run", "--db", db, "--json")

    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["sent"] == 2
    received = [email.message_from_string(m.raw_data, policy=email.policy.default)
                for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages]
    got = received_files(next(m for m in received if m["To"] == "Bob <bob@example.org>"))
    assert sha256(got["cv-data-engineer.pdf"]) == sha256(CV_BYTES[::-1])
    assert got["Lettre de motivation – Zoë.pdf"] == "lettre é".encode() * 100


@pytest.mark.parametrize("name", [
    "Curriculum vitæ – Zoë Ñúñez-Åkerström (ingénieure données senior, Genève).pdf",
    'a "quoted" name; with semicolons and a rather long tail to fold over.pdf',
    "履歴書.pdf",
])
def test_long_and_non_ascii_file_names_round_trip(settings, name):
    message = build_message(RENDERED, to="ada@example.org", settings=settings,
                            attachments=[attachments.Attachment(name, "application/pdf", b"%PDF")])
    raw = message.as_bytes()
    assert all(len(line) <= 78 for line in raw.split(b"\r\n") if not line.startswith(b"--"))
    [part] = email.message_from_bytes(raw, policy=email.policy.default).iter_attachments()
    assert (part.get_filename(), part.get_content()) == (name, b"%PDF")


@pytest.mark.parametrize("problem", ["missing", "too big"])
def test_preview_of_a_recipient_whose_file_cannot_be_sent_is_bad_input(tmp_path, folder, monkeypatch, problem):
    """It exited 1, where the README's exit codes make a file that is not there (or too big) bad input, 2."""
    db = db_env(tmp_path)
    _prepare(tmp_path, folder, db)
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    if problem == "missing":
        (folder / "cv-backend.pdf").unlink()
        reason = f"cannot attach {folder / 'cv-backend.pdf'}: no such file"
    else:
        monkeypatch.setenv("MAX_MESSAGE_BYTES", "65536")
        (folder / "cv-backend.pdf").write_bytes(CV_BYTES * 8)  # grown since the import
        reason = "more than MAX_MESSAGE_BYTES (65,536"

    shown = cli("preview", "--db", db, "--email", "ada@example.org")

    assert shown.exit_code == 2
    assert shown.stderr.startswith("Error: recipient ada@example.org: ") and reason in shown.stderr
    assert shown.stderr.count("\n") == 1
