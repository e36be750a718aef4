"""Amazon SES (API v2) transport: one raw MIME message per `send_email` call, SDK retries off.

SES has no idempotency token, and botocore's default retry mode re-sends a request whose answer
timed out, so the client makes exactly one attempt and every failure is classified here into
Transient (refused, safe to retry), Permanent, Fatal (stop the run) or Ambiguous (may have been
accepted: never resend automatically). Errors: https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
and https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html; retries: https://docs.aws.amazon.com/boto3/latest/guide/retries.html.

SEND_TIMEOUT_SECONDS bounds each whole call. botocore's read_timeout bounds one socket read only,
so an endpoint that answers a byte at a time would hold a send for as long as it drips; the call
runs in a worker thread instead, and the send stops waiting at the deadline (Ambiguous: the
request has left). boto3 clients are thread-safe ("Multithreading or multiprocessing with
clients", https://boto3.amazonaws.com/v1/documentation/api/latest/guide/clients.html).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from ..ses_contacts import list_management_options
from ..errors import (
    AmbiguousSendError,
    ConfigError,
    EmailAutomationError,
    FatalSendError,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from ..wire import WireMessage, as_wire
from .aws import BoundedClient, CallTimedOut, one_line

log = logging.getLogger("email_automation.ses")

CONNECT_TIMEOUT_SECONDS = 5

_THROTTLING = {"TooManyRequestsException", "ThrottlingException", "Throttling", "LimitExceededException"}
_CREDENTIALS = {
    "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId", "IncompleteSignature",
    "MissingAuthenticationToken", "InvalidSignatureException",
}
_CREDENTIALS_HINT = (
    "AWS rejected the credentials: check the EC2 instance role, or AWS_ACCESS_KEY_ID/"
    "AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN (a stray variable or ~/.aws/credentials overrides the role)"
)
_FATAL_HINTS = {
    "SendingPausedException": "sending is paused for this SES account or configuration set: "
    "check the reputation dashboard in the SES console and re-enable sending",
    "AccountSendingPausedException": "sending is paused for this SES account: "
    "check the reputation dashboard in the SES console and re-enable sending",
    "ConfigurationSetSendingPausedException": "sending is paused for configuration set "
    "SES_CONFIGURATION_SET: re-enable it in the SES console",
    "AccountSuspendedException": "this SES account may no longer send email: "
    "contact AWS support from the SES console",
    "MailFromDomainNotVerifiedException": "the custom MAIL FROM domain of the sender identity is "
    "not verified (SES cannot read its MX record): fix its DNS records in the SES console",
    "AccessDeniedException": "the AWS credentials may not send with SES: allow ses:SendEmail and "
    "ses:SendRawEmail on the sender identity ARN and on the configuration set ARN",
    "AccessDenied": "the AWS credentials may not send with SES: allow ses:SendEmail and "
    "ses:SendRawEmail on the sender identity ARN and on the configuration set ARN",
    "NotFoundException": "SES does not know the configuration set or sender identity: "
    "check SES_CONFIGURATION_SET, SENDER_EMAIL and AWS_REGION",
    "ConfigurationSetDoesNotExist": "the configuration set does not exist: check "
    "SES_CONFIGURATION_SET and AWS_REGION",
    "RequestExpired": "AWS refused a request signed with a clock that is off: fix the machine's "
    "time (chrony/NTP)",
    "RequestTimeTooSkewed": "AWS refused a request signed with a clock that is off: fix the machine's "
    "time (chrony/NTP)",
    **dict.fromkeys(_CREDENTIALS, _CREDENTIALS_HINT),
}
_PERMANENT = {"MessageRejected", "BadRequestException", "InvalidParameterValue", "InvalidParameterValueException"}
# Text SES uses when an identity (sender, or in the sandbox a recipient) is not verified.
_NOT_VERIFIED = re.compile(
    r"not verified|did not have authority to send|not authorized to send from", re.IGNORECASE
)
_EMAILISH = re.compile(r"[^\s,:;<>\"'`]+@[^\s,:;<>\"'`]+|(?<![\w.-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\.?(?![\w@-])")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def make_ses_client(settings: Any, *, endpoint_url: str | None = None) -> Any:
    """The boto3 `sesv2` client for a run: explicit region, one attempt per call, send timeout.

    `total_max_attempts=1`: `max_attempts=1` would still mean two attempts (botocore PR #1972).
    boto3 honours AWS_ENDPOINT_URL(_SESV2) itself when `endpoint_url` is not given. Connecting
    gets at most half the send's time, so an endpoint that cannot be reached is told apart
    (nothing sent) before the deadline of the whole call (maybe sent) passes.

    Raises:
        ConfigError: no region is configured anywhere.
    """
    region = settings.aws_region or boto3.session.Session().region_name
    if not region:
        raise ConfigError(
            "no AWS region configured: set AWS_REGION (e.g. AWS_REGION=us-east-1) in .env or the "
            "crontab, the region where your SES identity is verified"
        )
    config = Config(
        retries={"total_max_attempts": 1},
        connect_timeout=min(CONNECT_TIMEOUT_SECONDS, settings.send_timeout_seconds / 2),
        read_timeout=settings.send_timeout_seconds,
    )
    return boto3.client("sesv2", region_name=region, endpoint_url=endpoint_url, config=config)


def sanitize_tag(value: str) -> str:
    """An SES tag name or value: only [A-Za-z0-9_-], at most 256 characters, never empty."""
    return (_TAG_UNSAFE.sub("_", str(value)) or "_")[:256]


@dataclass(frozen=True)
class SendingCapacity:
    """What SES itself allows right now (GetAccount), to stay inside it rather than hit it."""

    remaining_24h: int | None  # None: the account has no daily quota
    min_interval: float  # seconds between two sends at the account's MaxSendRate


class QuotaUnknownError(EmailAutomationError):
    """SES's GetAccount could not be read (denied, unreachable, timed out, or not implemented)."""


class SesTransport:
    """Sends through `sesv2.send_email` with Raw content; one client per run."""

    name = "ses"

    def __init__(self, settings: Any, client: Any = None) -> None:
        self._settings = settings
        self._client = client if client is not None else make_ses_client(settings)
        self._bounded = BoundedClient(self._client, settings.send_timeout_seconds)

    def send(self, message: EmailMessage | WireMessage, *, tags: dict[str, str]) -> str:
        """Hand one message to SES and return SES's MessageId.

        Raises:
            SendError: Transient, Permanent, Fatal or Ambiguous (see module docstring).
        """
        wire = as_wire(message)
        sender = wire.sender or self._settings.sender_email
        request: dict[str, Any] = {
            "FromEmailAddress": sender,
            # No Destination: SES takes the recipients from the To/Cc headers of the raw message
            # (and moto would count each recipient twice if both were given).
            "Content": {"Raw": {"Data": wire.data}},
            "EmailTags": [{"Name": sanitize_tag(k), "Value": sanitize_tag(v)} for k, v in tags.items()],
        }
        if self._settings.ses_configuration_set:
            request["ConfigurationSetName"] = self._settings.ses_configuration_set
        lists = list_management_options(self._settings)
        # SES-hosted one-click unsubscribe for outreach; the run summary to the user (marked
        # Auto-Submitted, RFC 3834) is no list mail.
        if lists and not wire.auto_submitted:
            request["ListManagementOptions"] = lists
        to = wire.to
        try:
            response = self._bounded.send_email(**request, on_late=lambda value, error: _tell_late(to, value, error))
        except (CallTimedOut, ReadTimeoutError) as err:  # whichever of the two limits came first
            raise AmbiguousSendError(
                f"no complete answer from SES within SEND_TIMEOUT_SECONDS ({self._settings.send_timeout_seconds:g} s); "
                "the message may have been accepted, so it is not resent automatically", code="SendTimeout") from err
        except (ClientError, BotoCoreError) as err:
            raise classify_ses_error(err, sender=sender, region=self._region()) from err
        return response["MessageId"]

    @property
    def client(self) -> Any:
        """The sesv2 client for the account-level calls around the sends (suppression and contact
        lists), each bounded by SEND_TIMEOUT_SECONDS like the sends (CallTimedOut is a BotoCoreError)."""
        return self._bounded

    def sending_capacity(self) -> SendingCapacity | None:
        """The account's remaining 24-hour quota and send rate; None when this endpoint cannot tell.

        Raises:
            FatalSendError: SES says the account may not send at all (paused or shut down).
        """
        try:
            return self.account_capacity()
        except QuotaUnknownError as err:
            # moto has no GetAccount, a tight IAM policy may deny it, a network blip: the sends
            # themselves still report every real problem, so this is only a lost optimisation.
            log.warning("%s; DAILY_LIMIT and DELAY_SECONDS alone apply", err)
            return None

    def account_capacity(self) -> SendingCapacity:
        """GetAccount's SendQuota, within SEND_TIMEOUT_SECONDS like every call of the run.
        https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_GetAccount.html

        Raises:
            QuotaUnknownError: the call failed or timed out (the message says why, in one line).
            FatalSendError: SES says the account may not send at all (paused or shut down).
        """
        try:
            account = self._bounded.get_account()
        except (NotImplementedError, ClientError, BotoCoreError) as err:
            raise QuotaUnknownError(f"SES account quota not read ({type(err).__name__}: {one_line(err)})") from err
        if not account.get("SendingEnabled", True) or account.get("EnforcementStatus") == "SHUTDOWN":
            raise FatalSendError(
                f"SES says this account may not send (SendingEnabled={account.get('SendingEnabled')}, "
                f"EnforcementStatus={account.get('EnforcementStatus', '?')}): open the SES console's "
                "reputation dashboard and re-enable sending", code="SendingDisabled")
        quota = account.get("SendQuota", {})
        most = quota.get("Max24HourSend", -1)
        remaining = None if most < 0 else max(0, int(most - quota.get("SentLast24Hours", 0)))
        rate = quota.get("MaxSendRate", 0) or 0
        return SendingCapacity(remaining, 1 / rate if rate > 0 else 0.0)

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    @property
    def region(self) -> str | None:
        """The region SES sends from: it names the domain of the Message-ID the recipient gets."""
        region = self._region()
        return None if region == "?" else region

    def _region(self) -> str:
        meta = getattr(self._client, "meta", None)
        return getattr(meta, "region_name", None) or self._settings.aws_region or "?"


def _tell_late(to: str, value: Any, error: BaseException | None) -> None:
    """A send given up on at the deadline was answered after all: say so where a person looks."""
    if error is None and isinstance(value, dict) and value.get("MessageId"):
        log.warning("%s: SES accepted the message after SEND_TIMEOUT_SECONDS after all (MessageId %s); it stays "
                    "unknown until its SES events settle it, or `email-automation resolve %s --sent`",
                    to, value["MessageId"], to)
    else:
        log.info("%s: the SES call given up on at SEND_TIMEOUT_SECONDS ended later with %s", to,
                 f"{type(error).__name__}: {error}" if error else "no MessageId")


def classify_ses_error(err: Exception, *, sender: str, region: str) -> SendError:
    """Turn a botocore exception from `send_email` into the SendError that says what to do."""
    if isinstance(err, ClientError):
        return _classify_client_error(err, sender=sender, region=region)
    name = type(err).__name__
    if isinstance(err, (EndpointConnectionError, ConnectTimeoutError)):
        return TransientSendError(f"could not connect to SES (connection never opened): {one_line(err)}", code=name,
                                  before_recipient=True)
    if isinstance(err, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return FatalSendError(
            f"no usable AWS credentials ({one_line(err)}): attach an instance role to the EC2 machine, or set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", code=name)
    if isinstance(err, NoRegionError):
        return FatalSendError("no AWS region configured: set AWS_REGION (e.g. us-east-1)", code=name)
    if isinstance(err, ParamValidationError):
        # Rejected by botocore before anything left the machine.
        return PermanentSendError(f"SES request is invalid: {one_line(err)}", code=name)
    # ReadTimeoutError, ConnectionClosedError, other connection errors after the request left.
    return AmbiguousSendError(
        f"no answer from SES ({name}: {one_line(err)}); the message may have been accepted, so it is not "
        "resent automatically", code=name)


def _classify_client_error(err: ClientError, *, sender: str, region: str) -> SendError:
    error = err.response.get("Error", {})
    code = str(error.get("Code", ""))
    text = one_line(error.get("Message", ""), limit=1000)  # the identities SES lists are parsed from it
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    detail = f"(SES {code}: {text})" if text else f"(SES {code})"
    if code in _THROTTLING or status == 429:
        if re.search(r"daily", text, re.IGNORECASE):
            return FatalSendError(
                f"the SES daily sending quota is used up {detail}: the run stops; send again after "
                "the 24-hour window, or request a higher quota in the SES console", code=code)
        return TransientSendError(f"SES is throttling this account {detail}: retry later", code=code,
                                  before_recipient=True)
    if code in _FATAL_HINTS:
        return FatalSendError(f"{_FATAL_HINTS[code]} {detail}", code=code)
    if code in _PERMANENT and _NOT_VERIFIED.search(text):
        return _unverified_identity(text, code=code, sender=sender, region=region, detail=detail)
    if code in _PERMANENT:
        return PermanentSendError(f"SES rejected this message {detail}", code=code)
    return AmbiguousSendError(
        f"unexpected answer from SES {detail}; the message may have been accepted, so it is not "
        "resent automatically", code=code or str(status))


def _unverified_identity(text: str, *, code: str, sender: str, region: str, detail: str) -> SendError:
    """Sender not verified, or (sandbox) recipient not verified: both stop the run.

    SES says "Email address is not verified. The following identities failed the check in region
    US-EAST-1: a@x.com, b@y.com" for either case, so look at which identities are listed.
    """
    sender = sender.lower()
    if "failed the check" in text.lower():
        listed = {item.lower().rstrip(".") for item in _EMAILISH.findall(text.split(":", 1)[-1])}
    else:  # "Email address not verified <sender>", "Did not have authority to send from ..."
        listed = set()
    if listed and not (listed & {sender, sender.rpartition("@")[2]}):
        return FatalSendError(
            f"the SES account is in the sandbox in region {region}: it may only send to verified "
            "addresses; verify the recipient or request production access in the SES console "
            f"{detail}", code=code)
    return FatalSendError(
        f"SENDER_EMAIL {sender} is not verified in SES region {region}: verify the address or its "
        f"domain in the SES console (or set AWS_REGION to the region where it is verified) {detail}",
        code=code)
