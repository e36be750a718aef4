"""An optional plain-text summary of each real run, mailed to REPORT_EMAIL.

Sent through the run's own transport, so it needs no extra setup. It is a convenience: a failure
to send it is logged and never changes the run's outcome or exit code.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from . import headers
from .config import Settings
from .messages import POLICY
from .run_daily import RunReport
from .transports.base import Transport

log = logging.getLogger("email_automation.summary")

# Lines listed per problem kind; the rest is counted. `email-automation status` shows everything.
MAX_LISTED = 20


def summary_subject(report: RunReport, day: str) -> str:
    problems = (" - NEEDS ATTENTION" if report.fatal_error or report.unknown or report.failed or report.paused
                or report.template_errors else "")
    return (f"email-automation {day}: sent {report.sent}, failed {report.failed}, "
            f"unknown {report.unknown}, {report.remaining_today} left today{problems}")


def summary_text(report: RunReport, *, day: str, host: str, workdir: str) -> str:
    """The body: counts, then each failed and unknown address with what to do about it."""
    lines = [
        f"Run on {host} in {workdir} for {day}.",
        "",
        f"Sent:      {report.sent}",
        f"Failed:    {report.failed}",
        f"Unknown:   {report.unknown}",
        f"Deferred:  {report.deferred}",
        f"Skipped:   {report.skipped}",
        f"Remaining today: {report.remaining_today}",
    ]
    if report.window:  # cron.log's "Nothing sent: outside the send window (...)"
        lines += ["", f"Nothing sent: {report.window.removesuffix(': nothing sent now')}."]
    if report.recovered:
        lines.append(f"Left mid-send by an interrupted earlier run (now unknown): {report.recovered}")
    if report.paused:
        lines += ["", "Paused by the circuit breaker (bounce or complaint rate too high):",
                  *(f"  {line}" for line in report.paused)]
    if report.template_errors:  # the run's exit code 2: these campaigns sent nothing, their recipients wait
        lines += ["", "Held back by a template error (their recipients stay pending; fix the template with "
                  "`email-automation template set`):", *(f"  {problem}" for problem in report.template_errors)]
    if report.fatal_error:
        lines += ["", f"The run stopped early: {report.fatal_error}",
                  "Run `email-automation doctor` on the server to find the cause."]
    lines += _listed(report, "failed", "Failed (see `email-automation status`; "
                     "`email-automation retry-failed` queues them again):")
    lines += _listed(report, "unknown", "Unknown: may or may not have been delivered. Decide with "
                     "`email-automation resolve EMAIL --sent` or `--pending`:")
    return "\n".join(lines) + "\n"


def _listed(report: RunReport, status: str, heading: str) -> list[str]:
    rows = [o for o in report.outcomes if o.status == status]
    if not rows:
        return []
    shown = [f"  {o.email}" + (f"  ({o.error})" if o.error else "") for o in rows[:MAX_LISTED]]
    more = [f"  ... and {len(rows) - MAX_LISTED} more"] if len(rows) > MAX_LISTED else []
    return ["", heading, *shown, *more]


def build_summary(settings: Settings, report: RunReport, *, now: datetime) -> EmailMessage:
    """The summary message from SENDER_EMAIL to REPORT_EMAIL (plain text, UTF-8)."""
    day = now.astimezone(settings.tz).date().isoformat()
    msg = EmailMessage(policy=POLICY)
    # Folded by `headers`, as for every outreach message: a long accented SENDER_NAME decodes exactly.
    headers.set_folded(msg, "From", headers.mailbox("From", settings.sender_name, settings.sender_email))
    msg["To"] = Address(addr_spec=settings.report_email)
    msg["Subject"] = summary_subject(report, day)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=headers.ascii_domain(settings.sender_email.rpartition("@")[2] or "localhost"))
    # Keeps auto-responders (out of office) from answering a machine's report.
    msg["Auto-Submitted"] = "auto-generated"
    body = summary_text(report, day=day, host=socket.gethostname(), workdir=os.getcwd())
    msg.set_content(body, subtype="plain", charset="utf-8", cte="quoted-printable")
    return msg


def idle(report: RunReport) -> bool:
    """A run outside the send window that sent, failed, recovered and stopped nothing: with an
    hourly cron most runs are such, and a summary of each would bury the ones that matter."""
    return bool(report.window) and not (report.sent or report.failed or report.unknown or report.deferred
                                        or report.skipped or report.recovered or report.fatal_error
                                        or report.paused or report.template_errors)


def send_summary(settings: Settings, report: RunReport, transport: Transport, *, now: datetime) -> str | None:
    """Mail the summary after a real run; returns the message id, or None when nothing was sent.

    Nothing is sent for a dry run, without REPORT_EMAIL, or for a run that found the send window
    closed and did nothing else (`idle`). Never raises: any failure is logged.
    """
    if report.dry_run or not settings.report_email or idle(report):
        return None
    try:
        message = build_summary(settings, report, now=now)
        # SES EmailTags allow only [A-Za-z0-9_-]; the tags mark this as no outreach message.
        message_id = transport.send(message, tags={"campaign": "run-summary", "attempt_id": uuid.uuid4().hex})
    except Exception as err:  # noqa: BLE001 - a report must never fail the run it reports on
        log.warning("run summary to %s not sent: %s", settings.report_email, err)
        return None
    log.info("run summary sent to %s %s", settings.report_email, message_id)
    return message_id
