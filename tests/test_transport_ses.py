"""SES transport: the request SES receives, and what every failure means for the run."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import threading
import time

import pytest
from botocore.exceptions import ConnectionClosedError, NoCredentialsError
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from email_automation.email_templates import RenderedEmail
from email_automation.errors import (
    AmbiguousSendError,
    ConfigError,
    FatalSendError,
    PermanentSendError,
    TransientSendError,
)
from email_automation.messages import build_message
from email_automation.transports.ses import SesTransport, make_ses_client, sanitize_tag
from tests.drip_http import DrippingHttp

RENDERED = RenderedEmail(subject="Hello Ada", html="<p>Hi Ada</p>", text="Hi Ada\n")
TAGS = {"attempt_id": "0f1e2d3c4b5a", "campaign": "Été 2026 / outreach"}


@pytest.fixture
def message(settings):
    return build_message(RENDERED, to="ada@example.org", settings=settings)


# --- against moto -----------------------------------------------------------------------------

@pytest.fixture
def moto_ses():
    with mock_aws():
        yield ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]


def test_sends_the_raw_message_to_ses(settings, message, moto_ses):
    settings = settings.model_copy(update={"ses_configuration_set": "outreach"})
    client = make_ses_client(settings)
    client.create_email_identity(EmailIdentity="example.com")
    message_id = SesTransport(settings, client).send(message, tags=TAGS)

    [sent] = moto_ses.sent_messages
    assert message_id == sent.id
    assert sent.source == "jane@example.com"
    assert sent.destinations == ["ada@example.org"]  # once: no Destination next to the To header
    received = email.message_from_string(sent.raw_data, policy=email.policy.default)
    assert received["From"] == "Jane Sender <jane@example.com>"
    assert received["To"] == "ada@example.org"
    assert received["Subject"] == "Hello Ada"
    assert received["Message-ID"] == message["Message-ID"]


def test_unverified_sender_in_moto_stops_the_run(settings, message, moto_ses):
    with pytest.raises(FatalSendError) as info:
        SesTransport(settings, make_ses_client(settings)).send(message, tags=TAGS)
    assert str(info.value).startswith(
        "SENDER_EMAIL jane@example.com is not verified in SES region us-east-1: verify the address or its domain")
    assert info.value.code == "MessageRejected"
    assert moto_ses.sent_messages == []


# --- the request, via Stubber -----------------------------------------------------------------

def stubbed(settings):
    client = make_ses_client(settings)
    return client, Stubber(client)


@pytest.mark.parametrize("config_set", ["", "outreach"])
def test_request_has_sanitized_tags_and_config_set_only_when_set(settings, message, config_set):
    settings = settings.model_copy(update={"ses_configuration_set": config_set})
    client, stub = stubbed(settings)
    expected = {
        "FromEmailAddress": "jane@example.com",
        "Content": {"Raw": {"Data": message.as_bytes()}},
        "EmailTags": [{"Name": "attempt_id", "Value": "0f1e2d3c4b5a"},
                      {"Name": "campaign", "Value": "_t__2026___outreach"}],
    }
    if config_set:
        expected["ConfigurationSetName"] = config_set
    stub.add_response("send_email", {"MessageId": "ses-id-1"}, expected_params=expected)
    with stub:
        assert SesTransport(settings, client).send(message, tags=TAGS) == "ses-id-1"
    stub.assert_no_pending_responses()


def test_tags_are_limited_to_what_ses_accepts():
    assert sanitize_tag("a b/c:d-é_1") == "a_b_c_d-__1"
    assert sanitize_tag("x" * 300) == "x" * 256
    assert sanitize_tag("") == "_"


SANDBOX = ("Email address is not verified. The following identities failed the check in region "
           "US-EAST-1: ada@example.org")
SENDER_UNVERIFIED = ("Email address is not verified. The following identities failed the check in region "
                     "US-EAST-1: jane@example.com, ada@example.org")

ERRORS = [
    # (code, HTTP status, SES message, expected class, start of our message)
    ("TooManyRequestsException", 429, "Maximum sending rate exceeded.", TransientSendError,
     "SES is throttling this account"),
    ("ThrottlingException", 400, "Rate exceeded", TransientSendError, "SES is throttling this account"),
    ("LimitExceededException", 400, "Too many", TransientSendError, "SES is throttling this account"),
    ("TooManyRequestsException", 429, "Daily message quota exceeded.", FatalSendError,
     "the SES daily sending quota is used up"),
    ("SendingPausedException", 400, "Sending paused", FatalSendError, "sending is paused for this SES account"),
    ("AccountSuspendedException", 400, "Suspended", FatalSendError, "this SES account may no longer send email"),
    ("AccessDeniedException", 403, "not authorized to perform ses:SendRawEmail", FatalSendError,
     "the AWS credentials may not send with SES: allow ses:SendEmail and ses:SendRawEmail"),
    ("NotFoundException", 404, "Configuration set does not exist", FatalSendError,
     "SES does not know the configuration set or sender identity"),
    ("MailFromDomainNotVerifiedException", 400, "MAIL FROM not verified", FatalSendError,
     "the custom MAIL FROM domain of the sender identity is not verified"),
    ("UnrecognizedClientException", 403, "The security token included in the request is invalid", FatalSendError,
     "AWS rejected the credentials"),
    ("ExpiredTokenException", 403, "The security token included in the request is expired", FatalSendError,
     "AWS rejected the credentials"),
    ("RequestExpired", 400, "Request has expired.", FatalSendError, "AWS refused a request signed with a clock"),
    ("MessageRejected", 400, SENDER_UNVERIFIED, FatalSendError,
     "SENDER_EMAIL jane@example.com is not verified in SES region us-east-1"),
    ("MessageRejected", 400, SANDBOX, FatalSendError,
     "the SES account is in the sandbox in region us-east-1: it may only send to verified addresses; "
     "verify the recipient or request production access"),
    ("MessageRejected", 400, "Did not have authority to send from email jane@example.com", FatalSendError,
     "SENDER_EMAIL jane@example.com is not verified"),
    ("MessageRejected", 400, "Message contains a virus", PermanentSendError, "SES rejected this message"),
    ("BadRequestException", 400, "Illegal address", PermanentSendError, "SES rejected this message"),
    ("InternalServiceErrorException", 500, "Internal failure", AmbiguousSendError, "unexpected answer from SES"),
    ("ServiceUnavailable", 503, "", AmbiguousSendError, "unexpected answer from SES"),
    ("SomethingNew", 400, "?", AmbiguousSendError, "unexpected answer from SES"),
]


@pytest.mark.parametrize(("code", "status", "text", "expected", "starts"), ERRORS)
def test_ses_errors_are_classified_by_code(settings, message, code, status, text, expected, starts):
    client, stub = stubbed(settings)
    stub.add_client_error("send_email", service_error_code=code, service_message=text, http_status_code=status)
    with stub, pytest.raises(expected) as info:
        SesTransport(settings, client).send(message, tags=TAGS)
    assert type(info.value) is expected
    assert str(info.value).startswith(starts)
    assert info.value.code == code
    assert info.value.__cause__ is not None  # raised "from" the botocore error
    # Throttling is the account's, not the recipient's: it does not use up their MAX_ATTEMPTS.
    assert info.value.before_recipient == starts.startswith("SES is throttling")


class FailingClient:
    """A client whose send_email raises a botocore exception that Stubber cannot produce."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def send_email(self, **request):
        self.calls += 1
        raise self.error


def test_connection_closed_after_sending_is_ambiguous(settings, message):
    client = FailingClient(ConnectionClosedError(endpoint_url="https://email.us-east-1.amazonaws.com"))
    with pytest.raises(AmbiguousSendError, match="the message may have been accepted") as info:
        SesTransport(settings, client).send(message, tags=TAGS)
    assert info.value.code == "ConnectionClosedError"


def test_missing_credentials_stop_the_run(settings, message):
    with pytest.raises(FatalSendError, match="^no usable AWS credentials .*attach an instance role"):
        SesTransport(settings, FailingClient(NoCredentialsError())).send(message, tags=TAGS)


# --- the client ---------------------------------------------------------------------------------

def test_client_makes_one_attempt_per_call_in_the_configured_region(settings):
    settings = settings.model_copy(update={"aws_region": "eu-west-1", "send_timeout_seconds": 12.5})
    client = make_ses_client(settings)
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.config.retries["total_max_attempts"] == 1
    assert client.meta.config.read_timeout == 12.5
    assert client.meta.config.connect_timeout == 5
    # Connecting never takes the whole send's time, so "never connected" (nothing sent, retried)
    # is told before the deadline of the whole call (maybe sent, never retried).
    short = make_ses_client(settings.model_copy(update={"send_timeout_seconds": 4}))
    assert short.meta.config.connect_timeout == 2


def test_client_falls_back_to_the_aws_default_region(settings):
    client = make_ses_client(settings.model_copy(update={"aws_region": ""}))
    assert client.meta.region_name == "us-east-1"  # AWS_DEFAULT_REGION from conftest


def test_no_region_anywhere_is_a_config_error(settings, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError, match="^no AWS region configured: set AWS_REGION"):
        make_ses_client(settings.model_copy(update={"aws_region": ""}))


def test_aws_endpoint_url_is_honoured(settings, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert make_ses_client(settings).meta.endpoint_url == "http://127.0.0.1:4566"


# --- real sockets ---------------------------------------------------------------------------------

def test_read_timeout_is_ambiguous_and_the_request_is_never_repeated(settings, message):
    # botocore's default retries would send this request again (https://docs.aws.amazon.com/boto3/latest/guide/retries.html).
    with DrippingHttp(part="silence", drip_for=5) as slow:  # far longer than the client's read timeout
        settings = settings.model_copy(update={"send_timeout_seconds": 0.3})
        transport = SesTransport(settings, make_ses_client(settings, endpoint_url=slow.url))
        with pytest.raises(AmbiguousSendError) as info:
            transport.send(message, tags=TAGS)
        assert slow.requests == 1
        assert info.value.code == "SendTimeout"
        assert str(info.value) == ("no complete answer from SES within SEND_TIMEOUT_SECONDS (0.3 s); the message "
                                   "may have been accepted, so it is not resent automatically")


# An endpoint that drips its answer: every read is quick, so only the deadline per send ends it.
# Without it each send would last the whole 10 s drip; the margin is generous for a loaded machine.
DEADLINE, MARGIN = 0.5, 2.5


@pytest.mark.parametrize("part", ["headers", "body"])
def test_an_answer_dripped_past_the_deadline_is_ambiguous_and_sent_once(settings, message, part):
    settings = settings.model_copy(update={"send_timeout_seconds": DEADLINE})
    with DrippingHttp(part=part) as server:
        transport = SesTransport(settings, make_ses_client(settings, endpoint_url=server.url))
        started = time.monotonic()
        with pytest.raises(AmbiguousSendError) as info:
            transport.send(message, tags=TAGS)
        assert time.monotonic() - started < DEADLINE + MARGIN
        assert server.requests == 1  # the request left: never resent automatically
    assert info.value.code == "SendTimeout"
    assert str(info.value) == ("no complete answer from SES within SEND_TIMEOUT_SECONDS (0.5 s); the message "
                               "may have been accepted, so it is not resent automatically")


def test_an_answer_that_comes_after_the_deadline_is_logged(settings, message, caplog):
    settings = settings.model_copy(update={"send_timeout_seconds": DEADLINE})
    told = threading.Event()
    handler = logging.Handler()
    handler.emit = lambda record: told.set() if "after all" in record.getMessage() else None
    logging.getLogger("email_automation.ses").addHandler(handler)
    try:
        with DrippingHttp(part="body", drip_for=1.0) as server, caplog.at_level(logging.WARNING):
            transport = SesTransport(settings, make_ses_client(settings, endpoint_url=server.url))
            with pytest.raises(AmbiguousSendError):
                transport.send(message, tags=TAGS)
            assert told.wait(10)
    finally:
        logging.getLogger("email_automation.ses").removeHandler(handler)
    assert ("ada@example.org: SES accepted the message after SEND_TIMEOUT_SECONDS after all (MessageId late-id); it "
            "stays unknown until its SES events settle it, or `email-automation resolve ada@example.org --sent`"
            ) in caplog.messages


def test_get_account_dripped_past_the_deadline_means_no_cap(settings, caplog):
    settings = settings.model_copy(update={"send_timeout_seconds": DEADLINE})
    with DrippingHttp(part="body") as server:
        transport = SesTransport(settings, make_ses_client(settings, endpoint_url=server.url))
        started = time.monotonic()
        assert transport.sending_capacity() is None
        assert time.monotonic() - started < DEADLINE + MARGIN
    assert "SES account quota not read (CallTimedOut: no complete answer from sesv2 within 0.5 s)" in caplog.text


def test_connection_refused_is_transient(settings, message):
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_ses_client(settings, endpoint_url=f"http://127.0.0.1:{port}")
    with pytest.raises(TransientSendError, match=r"^could not connect to SES \(connection never opened\)") as info:
        SesTransport(settings, client).send(message, tags=TAGS)
    assert info.value.code == "EndpointConnectionError"
    assert info.value.before_recipient


# --- the account's own limits (GetAccount) --------------------------------------------------------

def account(*, enabled=True, status="HEALTHY", most=200.0, sent=195.0, rate=1.0):
    return {"SendQuota": {"Max24HourSend": most, "MaxSendRate": rate, "SentLast24Hours": sent},
            "SendingEnabled": enabled, "EnforcementStatus": status, "ProductionAccessEnabled": False,
            "DedicatedIpAutoWarmupEnabled": False}


def test_capacity_is_what_is_left_of_the_24_hour_quota_at_the_send_rate(settings):
    client, stub = stubbed(settings)
    stub.add_response("get_account", account(most=200.0, sent=195.0, rate=2.0))
    with stub:
        capacity = SesTransport(settings, client=client).sending_capacity()
    assert (capacity.remaining_24h, capacity.min_interval) == (5, 0.5)


def test_an_unlimited_quota_has_no_cap(settings):
    client, stub = stubbed(settings)
    stub.add_response("get_account", account(most=-1.0, sent=1e6, rate=14.0))
    with stub:
        assert SesTransport(settings, client=client).sending_capacity().remaining_24h is None


@pytest.mark.parametrize("enabled, status", [(False, "HEALTHY"), (True, "SHUTDOWN")])
def test_an_account_that_may_not_send_is_fatal_before_any_send(settings, enabled, status):
    client, stub = stubbed(settings)
    stub.add_response("get_account", account(enabled=enabled, status=status))
    with stub, pytest.raises(FatalSendError, match="SES says this account may not send"):
        SesTransport(settings, client=client).sending_capacity()


def test_no_get_account_in_moto_means_no_cap(settings, moto_ses):
    assert SesTransport(settings, client=make_ses_client(settings)).sending_capacity() is None


def test_get_account_denied_means_no_cap(settings):
    client, stub = stubbed(settings)
    stub.add_client_error("get_account", service_error_code="AccessDeniedException", http_status_code=403)
    with stub:
        assert SesTransport(settings, client=client).sending_capacity() is None
