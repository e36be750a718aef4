"""SMTP transport against a real aiosmtpd server on 127.0.0.1 (tests/smtp_sink.py)."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


from email_automation.email_templates import RenderedEmail
from email_automation.errors import (
    AmbiguousSendError,
    FatalSendError,
    PermanentSendError,
    TransientSendError,
)
from email_automation.messages import build_message
from email_automation.transports.smtp import SmtpTransport
from tests.smtp_sink import SmtpSink, read_counts

RENDERED = RenderedEmail(subject="Hello Ada", html="<p>Hi Ada</p>", text="Hi Ada\n.\n.. a line that starts with a dot\n")


@pytest.fixture
def sink():
    with SmtpSink() as server:
        yield server


@pytest.fixture
def smtp_settings(settings, sink):
    return settings.model_copy(update={
        "smtp_host": "127.0.0.1", "smtp_port": sink.port, "smtp_starttls": False, "send_timeout_seconds": 2.0})


@pytest.fixture
def transport(smtp_settings):
    smtp = SmtpTransport(smtp_settings)
    yield smtp
    smtp.close()


def message_to(address, settings):
    return build_message(RENDERED, to=address, settings=settings)


def test_delivers_with_the_right_envelope_and_headers(sink, transport, smtp_settings):
    message = message_to("ada@example.org", smtp_settings)
    assert transport.send(message, tags={"attempt_id": "a1"}) == message["Message-ID"]

    [delivery] = sink.deliveries
    assert delivery.mail_from == "jane@example.com"
    assert delivery.rcpt_tos == ["ada@example.org"]
    received = delivery.message
    assert received["From"] == "Jane Sender <jane@example.com>"
    assert received["Subject"] == "Hello Ada"
    assert received["Message-ID"] == message["Message-ID"]
    text = list(received.iter_parts())[0].get_content().replace("\r\n", "\n")
    assert text == "Hi Ada\n.\n.. a line that starts with a dot\n"  # SMTP dot-stuffing undone


def test_one_connection_is_reused_for_the_whole_run(sink, transport, smtp_settings):
    for name in ("ada", "bob", "cy"):
        transport.send(message_to(f"{name}@example.org", smtp_settings), tags={})
    assert [d.rcpt_tos for d in sink.deliveries] == [["ada@example.org"], ["bob@example.org"], ["cy@example.org"]]
    assert sink.connections == 1


def test_a_connection_dropped_while_idle_is_reopened_transparently(sink, transport, smtp_settings):
    transport.send(message_to("ada@example.org", smtp_settings), tags={})
    sink.drop_connections()  # as a server does after its idle timeout
    transport.send(message_to("bob@example.org", smtp_settings), tags={})
    assert [d.rcpt_tos for d in sink.deliveries] == [["ada@example.org"], ["bob@example.org"]]
    assert sink.connections == 2


@pytest.mark.parametrize(("reply", "expected"), [
    ("550 5.1.1 No such user", PermanentSendError),
    ("450 4.2.1 Mailbox busy, try later", TransientSendError),
])
def test_refused_recipient(sink, transport, smtp_settings, reply, expected):
    sink.rcpt_replies["gone@example.org"] = reply
    with pytest.raises(expected) as info:
        transport.send(message_to("gone@example.org", smtp_settings), tags={})
    assert type(info.value) is expected
    assert str(info.value) == f"SMTP server refused recipient: gone@example.org: {reply}"
    assert info.value.code == reply[:3]
    assert not info.value.before_recipient, "a refusal of this recipient counts toward MAX_ATTEMPTS"
    # The refusal left the connection usable for the next recipient.
    transport.send(message_to("ada@example.org", smtp_settings), tags={})
    assert [d.rcpt_tos for d in sink.deliveries] == [["ada@example.org"]]
    assert sink.connections == 1


@pytest.mark.parametrize(("reply", "expected"), [
    ("554 5.6.0 Message content rejected", PermanentSendError),
    ("451 4.3.0 Queue full, try later", TransientSendError),
])
def test_refused_at_the_end_of_data(sink, transport, smtp_settings, reply, expected):
    sink.data_reply = reply
    with pytest.raises(expected, match=f"^SMTP server refused the message: {reply}$"):
        transport.send(message_to("ada@example.org", smtp_settings), tags={})
    assert sink.deliveries == []


@pytest.mark.parametrize(("reply", "expected"), [
    ("553 5.7.1 Sender not allowed", FatalSendError),
    ("421 4.7.0 Try again later", TransientSendError),
])
def test_refused_sender(sink, transport, smtp_settings, reply, expected):
    sink.mail_replies["jane@example.com"] = reply
    with pytest.raises(expected, match="^SMTP server refused sender jane@example.com: " + reply):
        transport.send(message_to("ada@example.org", smtp_settings), tags={})


def test_login_then_send(smtp_settings):
    with SmtpSink(auth={"jane": "s3cret"}) as server:
        settings = smtp_settings.model_copy(update={
            "smtp_port": server.port, "smtp_username": "jane", "smtp_password": "s3cret"})
        smtp = SmtpTransport(settings)
        smtp.send(message_to("ada@example.org", settings), tags={})
        smtp.close()
        assert len(server.deliveries) == 1


def test_rejected_login_stops_the_run(smtp_settings):
    with SmtpSink(auth={"jane": "s3cret"}) as server:
        settings = smtp_settings.model_copy(update={
            "smtp_port": server.port, "smtp_username": "jane", "smtp_password": "wrong"})
        with pytest.raises(FatalSendError) as info:
            SmtpTransport(settings).send(message_to("ada@example.org", settings), tags={})
        assert str(info.value).startswith(f"SMTP server 127.0.0.1:{server.port} rejected the login (535 ")
        assert str(info.value).endswith("check SMTP_USERNAME/SMTP_PASSWORD")
        assert info.value.code == "535"
        assert server.auth_failures >= 1 and server.deliveries == []


def test_starttls_required_but_not_offered_stops_the_run(sink, smtp_settings):
    settings = smtp_settings.model_copy(update={"smtp_starttls": True})
    with pytest.raises(FatalSendError, match=r"does not offer STARTTLS: use SMTP_SSL=true"):
        SmtpTransport(settings).send(message_to("ada@example.org", settings), tags={})
    assert sink.deliveries == []


def free_port() -> int:
    with socket.socket() as probe:  # free a moment ago, nothing listens on it now
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_refused_is_transient(settings):
    settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": free_port(), "smtp_starttls": False})
    with pytest.raises(TransientSendError) as info:
        SmtpTransport(settings).send(message_to("ada@example.org", settings), tags={})
    assert str(info.value).startswith(
        f"could not connect to SMTP server 127.0.0.1:{settings.smtp_port} (connection never opened): ConnectionRefusedError")
    assert info.value.before_recipient, "the relay, not the recipient, is at fault: not counted against them"


def test_server_stalling_after_data_is_ambiguous(sink, smtp_settings):
    settings = smtp_settings.model_copy(update={"send_timeout_seconds": 0.3})
    sink.stall_after_data = 3
    smtp = SmtpTransport(settings)
    started = time.monotonic()
    with pytest.raises(AmbiguousSendError) as info:
        smtp.send(message_to("ada@example.org", settings), tags={})
    assert time.monotonic() - started < 2
    assert str(info.value).startswith("no reply from the SMTP server after the message was sent")
    assert "not resent automatically" in str(info.value)
    assert sink.counts() == {"ada@example.org": 1}  # the server did get it: resending would duplicate
    # The next send opens a fresh connection instead of reusing the broken one.
    sink.stall_after_data = 0
    smtp.send(message_to("bob@example.org", settings), tags={})
    assert sink.connections == 2
    smtp.close()


class DropsAfterMail(smtplib.SMTP):
    """A client whose server hangs up when MAIL FROM is sent on a fresh connection."""

    def putcmd(self, cmd, args=""):
        if cmd.lower() != "mail":
            return super().putcmd(cmd, args)
        self.close()
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


def test_disconnect_before_data_on_a_fresh_connection_is_transient(sink, smtp_settings):
    smtp = SmtpTransport(smtp_settings, smtp_factory=DropsAfterMail)
    with pytest.raises(TransientSendError, match="^SMTP connection lost before the message was sent"):
        smtp.send(message_to("ada@example.org", smtp_settings), tags={})
    assert sink.deliveries == []


# --- the sink as a separate process (used by the kill test and the benchmark) ---------------------

def test_standalone_sink_counts_deliveries_for_other_processes(tmp_path, settings):
    counts, ready = tmp_path / "counts.sqlite", tmp_path / "port.txt"
    script = Path(__file__).with_name("smtp_sink.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--count-file", str(counts), "--ready-file", str(ready),
         "--rcpt-reply", "gone@example.org=550"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        port = int(ready.read_text())
        settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False})
        smtp = SmtpTransport(settings)
        for address in ("ada@example.org", "Ada@example.org", "bob@example.org"):
            smtp.send(message_to(address, settings), tags={})
        with pytest.raises(PermanentSendError):
            smtp.send(message_to("gone@example.org", settings), tags={})
        smtp.close()
        assert read_counts(counts) == {"ada@example.org": 2, "bob@example.org": 1}
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert out == f"listening on 127.0.0.1:{port}\n"
    assert read_counts(counts) == {"ada@example.org": 2, "bob@example.org": 1}


def test_sink_json_count_file(tmp_path, smtp_settings):
    counts = tmp_path / "counts.json"
    with SmtpSink(count_file=counts) as server:
        settings = smtp_settings.model_copy(update={"smtp_port": server.port})
        smtp = SmtpTransport(settings)
        smtp.send(message_to("ada@example.org", settings), tags={})
        smtp.send(message_to("ada@example.org", settings), tags={})
        smtp.close()
        assert read_counts(counts) == {"ada@example.org": 2}


# --- SEND_TIMEOUT_SECONDS is a deadline for the whole send -----------------------------------------
# The sink drips a "250-still thinking" line every 0.1 s for 10 s: each read is far quicker than the
# 0.5 s limit, so only a deadline for the whole send ends it in time. The margin is generous so a
# loaded machine cannot make these fail; without the deadline each send would last the full 10 s.
DEADLINE, MARGIN = 0.5, 2.5


@pytest.fixture
def dripping(sink, smtp_settings):
    sink.drip_every, sink.drip_for = 0.1, 10.0
    return smtp_settings.model_copy(update={"send_timeout_seconds": DEADLINE})


def timed_send(transport, message):
    started = time.monotonic()
    try:
        with pytest.raises(Exception) as info:
            transport.send(message, tags={})
    finally:
        elapsed = time.monotonic() - started
    return info.value, elapsed


@pytest.mark.parametrize(("stage", "late"), [
    ("greeting", "SMTP server 127.0.0.1:{port} did not complete its greeting"),
    ("EHLO", "SMTP server 127.0.0.1:{port} did not complete EHLO, STARTTLS and login"),
    ("MAIL", "SMTP server did not answer MAIL FROM"),
    ("RCPT", "SMTP server did not answer RCPT TO"),
    ("DATA", "SMTP server did not answer DATA"),
])
def test_a_reply_dripped_before_the_content_is_cut_at_the_deadline_and_retried_later(sink, dripping, stage, late):
    sink.drip_at = stage
    smtp = SmtpTransport(dripping)
    error, elapsed = timed_send(smtp, message_to("ada@example.org", dripping))
    assert elapsed < DEADLINE + MARGIN
    assert type(error) is TransientSendError  # nothing was sent: safe to try again
    assert str(error) == (late.format(port=sink.port) + " within SEND_TIMEOUT_SECONDS (0.5 s); the message "
                          "was not sent, so it is tried again later")
    assert error.code == "SendTimeout"
    assert sink.drips >= 1 and sink.deliveries == []
    # The next send opens a fresh connection and goes through.
    sink.drip_at = None
    smtp.send(message_to("bob@example.org", dripping), tags={})
    assert sink.counts() == {"bob@example.org": 1}
    smtp.close()


def test_a_reply_dripped_after_the_content_is_ambiguous_at_the_deadline(sink, dripping):
    sink.drip_at = "END"
    smtp = SmtpTransport(dripping)
    error, elapsed = timed_send(smtp, message_to("ada@example.org", dripping))
    assert elapsed < DEADLINE + MARGIN
    assert type(error) is AmbiguousSendError
    assert str(error) == ("no reply from the SMTP server after the message was sent (no complete reply within "
                          "SEND_TIMEOUT_SECONDS (0.5 s)); it may have been accepted, so it is not resent automatically")
    assert sink.counts() == {"ada@example.org": 1}  # the server has it: resending would duplicate
    smtp.close()


def test_the_deadline_is_per_send_not_per_connection(sink, dripping):
    # Three sends on one connection take longer together than one deadline, and all go through.
    settings = dripping.model_copy(update={"send_timeout_seconds": 1.0})
    sink.drip_for = 0.4  # each MAIL reply takes 0.4 s of a 1 s deadline
    smtp = SmtpTransport(settings)
    for name in ("ada", "bob", "cy"):
        sink.drip_at = "MAIL"
        smtp.send(message_to(f"{name}@example.org", settings), tags={})
    smtp.close()
    assert len(sink.deliveries) == 3 and sink.connections == 1


def test_sends_that_ended_in_time_do_not_pile_up_until_their_deadline(sink, transport, smtp_settings):
    # Each send is watched until its deadline (2 s here, 30 s or more in a run); a run sends
    # thousands within that time, and holding each one's watchdog until then grew with the batch.
    from email_automation.transports.deadline import _WATCHER

    for n in range(300):
        transport.send(message_to(f"p{n}@example.org", smtp_settings), tags={})
    assert len(sink.deliveries) == 300
    assert len(_WATCHER._queue) <= 2, "only the last send's watchdog (and one being cut) may remain"


def test_closing_does_not_wait_for_a_server_that_drips_its_goodbye(sink, dripping):
    smtp = SmtpTransport(dripping)
    smtp.send(message_to("ada@example.org", dripping), tags={})
    sink.drip_at = "QUIT"
    started = time.monotonic()
    smtp.close()
    assert time.monotonic() - started < DEADLINE + MARGIN
    assert sink.counts() == {"ada@example.org": 1}


class SmallSendBuffer(smtplib.SMTP):
    """A client whose socket holds little unsent data, so a stalled server blocks its writes."""

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return sock


def test_content_cut_off_before_its_end_is_retried_later_not_unknown(sink, dripping):
    # Without the final "." line the server has no message to deliver (RFC 5321 §4.1.1.4).
    sink.stall_before_content = 5.0
    big = RenderedEmail(subject="Big", html="<p>Hi</p>", text="0123456789abcdef" * 4 * 32 * 1024)  # 2 MB
    smtp = SmtpTransport(dripping, smtp_factory=SmallSendBuffer)
    error, elapsed = timed_send(smtp, build_message(big, to="ada@example.org", settings=dripping))
    assert elapsed < DEADLINE + MARGIN
    assert type(error) is TransientSendError
    assert str(error) == ("the message content could not be sent in full within SEND_TIMEOUT_SECONDS (0.5 s); "
                          "the message was not sent, so it is tried again later")
    assert sink.deliveries == []
