"""Dry run writes .eml files and nothing leaves the machine; make_transport picks the transport."""

from __future__ import annotations

import email
import email.policy
import re
import socket
from datetime import datetime

import pytest

from email_automation.email_templates import RenderedEmail
from email_automation.errors import ConfigError
from email_automation.messages import build_message
from email_automation.transports import make_transport
from email_automation.transports.dry_run import DryRunTransport
from email_automation.transports.ses import SesTransport
from email_automation.transports.smtp import SmtpTransport

RENDERED = RenderedEmail(subject="Grüße, Ada", html="<p>Hi Ada</p>", text="Hi Ada\n")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_dry_run_writes_a_parseable_eml_and_sends_nothing(settings, no_network):
    settings = settings.model_copy(update={"dry_run": True, "transport": "smtp"})
    transport = make_transport(settings)
    message = build_message(RENDERED, to="ada@example.org", settings=settings)

    message_id = transport.send(message, tags={"attempt_id": "a1"})
    transport.close()

    assert re.fullmatch(r"dry-run-[0-9a-f]{32}", message_id)
    [path] = sorted(settings.outbox_dir.glob("*/*.eml"))
    assert path.name == f"ada@example.org--{message_id}.eml"
    assert transport.written == [path]
    assert path.read_bytes() == message.as_bytes()
    saved = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert saved["Subject"] == "Grüße, Ada"
    assert saved["To"] == "ada@example.org"
    assert [p.get_content_type() for p in saved.iter_parts()] == ["text/plain", "text/html"]
    assert not list(settings.outbox_dir.glob("*/.tmp-*"))  # no half-written files left behind


def test_each_send_gets_its_own_file_and_id(settings):
    transport = DryRunTransport(settings)
    ids = {transport.send(build_message(RENDERED, to="ada@example.org", settings=settings), tags={}) for _ in range(3)}
    assert len(ids) == 3
    assert len(list(settings.outbox_dir.glob("*/*.eml"))) == 3


def test_each_run_writes_into_a_folder_of_its_own(settings):
    clock = lambda: datetime(2026, 11, 25, 7, 30, 5)  # noqa: E731
    first, second = DryRunTransport(settings, now=clock), DryRunTransport(settings, now=clock)
    for transport in (first, second):
        transport.send(build_message(RENDERED, to="ada@example.org", settings=settings), tags={})
    assert first.folder != second.folder  # same second, still apart
    assert re.fullmatch(r"2026-11-25_073005-[0-9a-f]{8}", first.folder.name)
    assert first.folder.parent == settings.outbox_dir
    assert [p.parent for p in first.written + second.written] == [first.folder, second.folder]


def test_an_outbox_that_cannot_be_written_is_a_configuration_error(settings):
    settings.outbox_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.outbox_dir.write_text("a file where the folder should be")
    transport = DryRunTransport(settings)
    with pytest.raises(ConfigError, match=r"^OUTBOX_DIR: cannot write .*: Not a directory$"):
        transport.send(build_message(RENDERED, to="ada@example.org", settings=settings), tags={})


@pytest.mark.parametrize(("setting", "flag", "expected"), [
    (True, None, DryRunTransport),
    (False, True, DryRunTransport),   # --dry-run wins over DRY_RUN=false
    (True, False, SesTransport),      # --send wins over DRY_RUN=true
    (False, None, SesTransport),
])
def test_dry_run_flag_overrides_the_setting(settings, setting, flag, expected):
    settings = settings.model_copy(update={"dry_run": setting})
    assert type(make_transport(settings, dry_run=flag)) is expected


def test_smtp_transport_when_configured(settings):
    settings = settings.model_copy(update={"dry_run": False, "transport": "smtp", "smtp_host": "127.0.0.1"})
    assert type(make_transport(settings)) is SmtpTransport


def test_real_send_without_sender_is_a_config_error(settings):
    settings = settings.model_copy(update={"dry_run": False, "sender_email": ""})
    with pytest.raises(ConfigError, match="^SENDER_EMAIL is not set"):
        make_transport(settings)
