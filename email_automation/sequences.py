"""Follow-up sequences: a campaign's steps 2..n, when each is due, and how it joins the thread.

Step 1 is the campaign's own template. Step n waits `after_days` business days (weekends and
HOLIDAYS do not count) after step n-1 was sent to that recipient. A recipient's `step` column
says which step its `status` is about; its sequence goes on only from `sent`, so an `unknown`
step holds the next one until a person (or SES's events) settles it.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from . import applications
from .database import MAX_WAIT_DAYS, get_campaign, iso, transaction
from .errors import NotFoundError, TemplateRenderError

if TYPE_CHECKING:  # Jinja2 is loaded only to render: `status` (which reads steps) must start fast
    from .email_templates import CampaignTemplate, RenderedEmail

FIRST_STEP = 1


def step_place(campaign: str, number: int, template: str | None = None) -> str:
    """`campaign 'X', step N[, template 'T']`: how a message about a step's content (or one of its
    versions per named template) names it."""
    return f"campaign {campaign!r}, step {number}" + (f", template {template!r}" if template else "")


@dataclass(frozen=True)
class Step:
    """One follow-up step of a campaign (step 1 is the campaign's own template)."""

    number: int
    after_days: int
    subject: str | None  # None: `Re: ` + the subject the recipient got at step 1
    html: str
    text: str | None
    sent: int = 0  # messages known to have gone out for this step
    unknown: int = 0  # sends whose outcome is unknown (`unknown`, or `sending` while a run sends)
    versions: tuple[str, ...] = ()  # named templates (segments) with their own version of this step


# --- business days (pure) ------------------------------------------------------------------------


def is_business_day(day: date, holidays: Iterable[date] = ()) -> bool:
    """Monday to Friday, and not one of `holidays`."""
    return day.weekday() < 5 and day not in (holidays if isinstance(holidays, (set, frozenset)) else set(holidays))


def add_business_days(start: date, days: int, holidays: Iterable[date] = ()) -> date:
    """The business day `days` business days after `start` (which itself need not be one)."""
    off = frozenset(holidays)
    day = start
    while days > 0:
        day += timedelta(days=1)
        if is_business_day(day, off):
            days -= 1
    return day


# --- storage ------------------------------------------------------------------------------------


def list_steps(conn: sqlite3.Connection, campaign: str) -> list[Step]:
    """The campaign's follow-up steps in order, with how many were sent for each and how many may
    have been (counted apart, as `status` and the dashboard count them)."""
    row = get_campaign(conn, campaign)
    return [Step(r["step"], r["after_days"], r["subject_template"], r["html_template"], r["text_template"],
                 r["sent"] or 0, r["unknown"] or 0, tuple(json.loads(r["versions"])))
            for r in conn.execute(
                "SELECT s.*, l.sent, l.unknown,"
                " (SELECT json_group_array(name) FROM (SELECT t.name FROM step_templates t"
                "  WHERE t.step_id = s.id ORDER BY t.id)) AS versions"
                " FROM campaign_steps s LEFT JOIN (SELECT l.step, sum(l.status = 'sent') AS sent,"
                "  sum(l.status IN ('sending', 'unknown')) AS unknown FROM send_log l"
                "  JOIN recipients r ON r.id = l.recipient_id WHERE r.campaign_id = ? GROUP BY l.step) l"
                "  ON l.step = s.step"
                " WHERE s.campaign_id = ? ORDER BY s.step", (row["id"], row["id"]))]


def step_numbers(conn: sqlite3.Connection, campaign: str) -> list[int]:
    """The campaign's follow-up step numbers in order, without `list_steps`' count of sends (on a
    million sends, a second of the dashboard's page)."""
    return list(step_waits(conn, campaign))


def step_waits(conn: sqlite3.Connection, campaign: str) -> dict[int, int]:
    """{number: wait in business days} of the campaign's follow-up steps in order, from
    `campaign_steps` alone (its UNIQUE (campaign_id, step) index), as `step_numbers`."""
    row = get_campaign(conn, campaign)
    return dict(conn.execute("SELECT step, after_days FROM campaign_steps WHERE campaign_id = ? ORDER BY step",
                             (row["id"],)).fetchall())


def check_wait(campaign: str, after_days: int) -> None:
    """A follow-up's wait is 1 to MAX_WAIT_DAYS business days.

    Raises:
        TemplateRenderError: a wait outside that range.
    """
    if not 1 <= after_days <= MAX_WAIT_DAYS:
        raise TemplateRenderError(f"campaign {campaign!r}: --after-days must be 1 to {MAX_WAIT_DAYS} business days "
                                  f"(a year), not {after_days}")


def add_step(conn: sqlite3.Connection, campaign: str, *, after_days: int, html: str, text: str | None = None,
             subject: str | None = None, now: datetime, notes: list[str] | None = None) -> int:
    """Append a follow-up step to an existing campaign; returns its number. It is checked as
    `step set` checks a step (step_content.check_version), and `notes` gets the same lines.

    Raises:
        TemplateRenderError: an empty or broken template, or a wait under one business day.
        NotFoundError: no such campaign.
    """
    from .step_content import StepVersion, check_version

    check_wait(campaign, after_days)
    if subject is not None and not subject.strip():
        subject = None
    row = get_campaign(conn, campaign)
    next_number = "SELECT COALESCE(MAX(step), 1) + 1 FROM campaign_steps WHERE campaign_id = ?"
    number = conn.execute(next_number, (row["id"],)).fetchone()[0]
    found = check_version(conn, campaign, StepVersion(number, None, subject, html, text))  # its errors name the step
    if notes is not None:
        notes += found
    with transaction(conn):
        number = conn.execute(next_number, (row["id"],)).fetchone()[0]
        conn.execute(
            "INSERT INTO campaign_steps (campaign_id, step, after_days, subject_template, html_template,"
            " text_template, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row["id"], number, after_days, subject, html, text, iso(now)))
    return number


def remove_step(conn: sqlite3.Connection, campaign: str, number: int) -> None:
    """Remove a follow-up step nothing was sent for yet; later steps move up one.

    Raises:
        NotFoundError: no such step.
        TemplateRenderError: step 1 (the campaign itself), or a step already sent to someone.
    """
    row = get_campaign(conn, campaign)
    if number == FIRST_STEP:
        raise TemplateRenderError(f"campaign {campaign!r}: step 1 is the campaign's own template; "
                                  "change it with `template set`")
    with transaction(conn):
        if conn.execute("SELECT 1 FROM campaign_steps WHERE campaign_id = ? AND step = ?",
                        (row["id"], number)).fetchone() is None:
            raise NotFoundError(f"campaign {campaign!r} has no step {number}")
        attempted = conn.execute(
            "SELECT count(*) FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
            " WHERE r.campaign_id = ? AND l.step >= ? AND l.status != 'dry_run'", (row["id"], number)).fetchone()[0]
        if attempted:
            raise TemplateRenderError(f"campaign {campaign!r}: step {number} (or a later one) was already sent "
                                      f"{attempted} time(s); it cannot be removed")
        conn.execute("DELETE FROM step_templates WHERE step_id IN (SELECT id FROM campaign_steps"
                     " WHERE campaign_id = ? AND step = ?)", (row["id"], number))
        conn.execute("DELETE FROM campaign_steps WHERE campaign_id = ? AND step = ?", (row["id"], number))
        # One by one in rising order: UNIQUE (campaign_id, step) is checked per row.
        for (later,) in conn.execute("SELECT step FROM campaign_steps WHERE campaign_id = ? AND step > ?"
                                     " ORDER BY step", (row["id"], number)).fetchall():
            conn.execute("UPDATE campaign_steps SET step = ? WHERE campaign_id = ? AND step = ?",
                         (later - 1, row["id"], later))
        # Whoever waited at this step (a claim of it undone before it left: nothing was attempted)
        # goes back to the step they were sent. Left pending at its number, they would get the step
        # moved up into its place at once, as a retry, not after its wait; and after the last step
        # there is nothing to wait for.
        conn.execute("UPDATE recipients SET status = 'sent', step = ? WHERE campaign_id = ? AND step = ?"
                     " AND status = 'pending'", (number - 1, row["id"], number))


# --- what is due --------------------------------------------------------------------------------

# Recipients whose next step exists and who nothing stops: their last step was sent, their
# campaign is active, nobody answered, the address is not suppressed. Retries of a follow-up
# (a refused-for-now attempt leaves the recipient `pending` at that step) come with them.
_CANDIDATES = (
    "SELECT {columns}, c.name AS campaign_name, s.step AS next_step, s.after_days"
    " FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
    " JOIN campaign_steps s ON s.campaign_id = r.campaign_id"
    "  AND ((r.status = 'sent' AND s.step = r.step + 1) OR (r.status = 'pending' AND s.step = r.step))"
    " WHERE c.status = 'active' AND r.sequence_stopped IS NULL AND r.application_status = 'none'"
    " AND r.email NOT IN (SELECT email FROM suppressions)"
)


@dataclass(frozen=True)
class Due:
    """A follow-up to send: the recipient's row, the step, and the day it became due."""

    row: Any
    step: int
    due: date


def due_followups(conn: sqlite3.Connection, *, now: datetime, tz: tzinfo, holidays: Iterable[date] = (),
                  stop_company: bool = True, exclude: Iterable[str] = ()) -> list[Due]:
    """Every follow-up due today or earlier, the longest-waiting first."""
    return due_now(scheduled_followups(conn, now=now, tz=tz, holidays=holidays, stop_company=stop_company,
                                       exclude=exclude), now=now, tz=tz)


def due_now(scheduled: list[Due], *, now: datetime, tz: tzinfo) -> list[Due]:
    """Those of `scheduled` (as `scheduled_followups` gives them) due today or earlier."""
    today = now.astimezone(tz).date()
    return [d for d in scheduled if d.due <= today]


def scheduled_followups(conn: sqlite3.Connection, *, now: datetime, tz: tzinfo, holidays: Iterable[date] = (),
                        stop_company: bool = True, exclude: Iterable[str] = (), slim: bool = False,
                        only: Iterable[int] | None = None) -> list[Due]:
    """Every follow-up still to come, due or not, the earliest due first; with `only`, those of
    these recipient ids.

    `slim`: each row holds only the recipient's id, status, sent_at, email, company and time zone
    (with campaign_name, next_step and after_days), enough to count, list and plan them.
    """
    today = now.astimezone(tz).date()
    due_day = _DueDays(tz, holidays)
    names = set(exclude)
    found = []
    sql, args = _candidates(_SLIM if slim else "r.*", stop_company)
    if only is not None:
        ids = list(only)
        sql += f" AND r.id IN ({', '.join('?' * len(ids))})"
        args += tuple(ids)
    for row in conn.execute(f"{sql} ORDER BY r.id", args):
        if row["campaign_name"] in names:
            continue
        if row["status"] == "pending":  # a retry: due as soon as it was refused
            found.append(Due(row, row["next_step"], today))
        elif row["sent_at"]:
            found.append(Due(row, row["next_step"], due_day(row["sent_at"], row["after_days"])))
    found.sort(key=attrgetter("due"))  # stable: a day's follow-ups keep the query's order, by id
    return found


# What `plan.plan_run` and the dashboard's counts read of a follow-up's recipient: r.* also reads
# each row's fields, subject and body (on 20,000 participants 207 -> 130 ms).
_SLIM = "r.id, r.status, r.sent_at, r.email, r.company, r.timezone"


def _candidates(columns: str, stop_company: bool) -> tuple[str, tuple]:
    """`_CANDIDATES` with `columns`, less those a reply stops, and its parameters."""
    stopped, args = applications.stopped_condition(stop_company)
    return f"{_CANDIDATES.format(columns=columns)} AND NOT {stopped}", args


class _DueDays:
    """The day a step waiting `after_days` business days after a send at `sent_at` is due: that
    many business days after the day it was sent, in the user's time zone (memoised per day sent)."""

    def __init__(self, tz: tzinfo, holidays: Iterable[date]) -> None:
        self.tz, self.off = tz, frozenset(holidays)
        self._known: dict[tuple[date, int], date] = {}

    def __call__(self, sent_at: str, after_days: int) -> date:
        wait = (datetime.fromisoformat(sent_at).astimezone(self.tz).date(), after_days)
        if wait not in self._known:
            self._known[wait] = add_business_days(*wait, self.off)
        return self._known[wait]


def due_counts(conn: sqlite3.Connection, *, now: datetime, tz: tzinfo, holidays: Iterable[date] = (),
               stop_company: bool = True) -> dict[tuple[str, int], int]:
    """How many follow-ups are due today or earlier, per (campaign, step): what `due_followups`
    would return, counted by SQLite instead of read and worked out row by row.

    For each wait in business days, the sends up to the last day whose wait is over are due: on
    `sent_at` (UTC text, sortable) that is everything before the first instant of the next local
    day. Sends within a day of that instant are worked out one by one as a run does, so a
    daylight-saving change or a skipped day that makes the instant found wrong cannot move one.
    """
    today = now.astimezone(tz).date()
    due_day = _DueDays(tz, holidays)
    surely, never = [], []  # per wait: (after_days, sent_at below which due, below which maybe)
    for (after_days,) in conn.execute("SELECT DISTINCT after_days FROM campaign_steps"):
        last_sent, left = today, after_days  # back from today over `after_days` business days
        try:
            while left > 0:
                left -= is_business_day(last_sent, due_day.off)
                last_sent -= timedelta(days=1)
            over = datetime.combine(last_sent + timedelta(days=1), time(), tzinfo=tz)
            cutoffs = (iso(over - timedelta(days=1)), iso(over + timedelta(days=1)))
        except OverflowError:  # a wait reaching back to year 1: nothing sent is due (a retry is)
            cutoffs = ("", "")
        surely += [after_days, cutoffs[0]]
        never += [after_days, cutoffs[1]]
    if not surely:
        return {}
    candidates, args = _candidates("r.status, r.sent_at", stop_company)
    per_wait = f"CASE f.after_days {' '.join(['WHEN ? THEN ?'] * (len(surely) // 2))} END"
    counts: dict[tuple[str, int], int] = {}
    for name, step, after_days, near, people in conn.execute(
            " SELECT f.campaign_name, f.next_step, f.after_days,"
            f"  CASE WHEN f.status = 'pending' OR f.sent_at < {per_wait} THEN NULL ELSE f.sent_at END, count(*)"
            f" FROM ({candidates}) f"
            f" WHERE f.status = 'pending' OR (f.sent_at != '' AND f.sent_at < {per_wait}) GROUP BY 1, 2, 3, 4",
            (*surely, *args, *never)):
        if near is None or due_day(near, after_days) <= today:  # a retry is due at once
            counts[name, step] = counts.get((name, step), 0) + people
    return counts


# A recipient at step k with one of these statuses may have been mailed step k; `sent` alone is
# known to have gone out (an `unknown` or still `sending` one may or may not have).
_MAYBE_SENT = ('sending', 'unknown')


def _stops_sql(conn: sqlite3.Connection, stop_company: bool) -> tuple[str, tuple]:
    """SQL over recipients `r` joined to campaigns `c` (and its parameters): true when this
    recipient's sequence is stopped for good, as `sequence_rows` shows it, from the step after
    its last one sent (or maybe sent) on, among the rows `sequence_rows` lists (`_LISTED`) whose
    sequence is not complete: a stop recorded in `sequence_stopped`; one not recorded yet (a run
    records it) that `stop_reason` gives, a reply (theirs or, with STOP_COMPANY_ON_REPLY, their
    company's), a suppression or a bounce, unless the recipient is due all the same (a bounce
    without a suppression does not keep a run from following up); or a step that went wrong
    (failed, bounced, skipped...).

    A cause no one has (no reply, no suppression, no hard bounce yet) is left out: testing each
    recipient against an empty list took as long as the rest of `status`'s count."""
    def some(sql: str) -> bool:
        return conn.execute(sql).fetchone() is not None

    causes, args = [], ()
    if some("SELECT 1 FROM suppressions LIMIT 1"):
        causes.append("r.email IN (SELECT email FROM suppressions)")
    if some("SELECT 1 FROM recipients WHERE application_status != 'none' LIMIT 1"):
        replied, args = applications.stopped_condition(stop_company)
        causes.append(replied)
    if some("SELECT 1 FROM bounces WHERE kind IN ('hard', 'complaint') LIMIT 1"):
        scheduled = "(c.status = 'active' AND (r.status = 'pending' OR coalesce(r.sent_at, '') != ''))"
        causes.append(f"(r.email IN (SELECT email FROM bounces WHERE kind IN ('hard', 'complaint'))"
                      f" AND NOT {scheduled})")
    unrecorded = f" OR (r.status IN ('sent', 'pending') AND ({' OR '.join(causes)}))" if causes else ""
    return (f"(r.sequence_stopped IS NOT NULL{unrecorded}"
            " OR r.status NOT IN ('pending', 'sending', 'sent', 'unknown'))"), args


# The recipients `sequence_rows` lists: contacted (or maybe), or past step 1.
_LISTED = "(r.status IN ('sending', 'sent', 'unknown') OR r.step > 1)"


def step_summary(conn: sqlite3.Connection, *, now: datetime, tz: tzinfo, holidays: Iterable[date] = (),
                 stop_company: bool = True) -> dict[str, dict[str, dict[str, int]]]:
    """Per campaign with follow-ups, per step: messages sent (known to have gone out, as the
    dashboard's Sent counts them), sends whose outcome is unknown (`unknown`, or `sending` while a
    run sends), follow-ups due now, sequences stopped before that step (the rows of
    `sequence_rows` that say "stopped"), and people whose reply (read from the inbox) answered
    that step; for `status` and the dashboard."""
    summary: dict[str, dict[str, dict[str, int]]] = {}
    for name, last in conn.execute("SELECT c.name, MAX(s.step) FROM campaign_steps s JOIN campaigns c"
                                   " ON c.id = s.campaign_id GROUP BY c.id ORDER BY c.name").fetchall():
        summary[name] = {str(n): {"sent": 0, "unknown": 0, "due": 0, "stopped": 0, "replied": 0}
                         for n in range(1, last + 1)}
    # Read from recipients, not send_log (a second over a million log rows): a recipient at step k
    # was sent steps 1..k-1 (a step is claimed only after the one before was sent), and step k
    # too when its status is `sent`; `unknown` and `sending` may or may not have gone out. The
    # same pass counts the stopped ones, before the step after their last one (maybe) sent.
    stops, args = _stops_sql(conn, stop_company)
    for name, step, status, stopped, people in conn.execute(
            "SELECT c.name, r.step, CASE WHEN r.status = 'sent' THEN 'sent' WHEN r.status IN"
            f" ({', '.join(repr(s) for s in _MAYBE_SENT)}) THEN 'unknown' END,"
            f" {_LISTED} AND NOT (r.status = 'sent' AND r.step >= s.last) AND {stops}, count(*)"
            " FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
            " JOIN (SELECT campaign_id, MAX(step) AS last FROM campaign_steps GROUP BY campaign_id) s"
            "  ON s.campaign_id = r.campaign_id GROUP BY 1, 2, 3, 4", args):
        steps = summary[name]
        for earlier in range(1, step):
            if str(earlier) in steps:
                steps[str(earlier)]["sent"] += people
        if status is not None and str(step) in steps:
            steps[str(step)][status] += people
        before = str(step + (status is not None))  # the first step not (maybe) sent
        if stopped and before in steps:
            steps[before]["stopped"] += people
    # A reply read before its recipient's status was set back to `none` (`mark EMAIL none`: read by
    # mistake) no longer counts, as the funnel no longer counts it; a reply read after it does.
    for name, step, replied in conn.execute(
            "SELECT c.name, l.step, count(DISTINCT m.recipient_id) FROM inbox_messages m"
            " JOIN send_log l ON l.id = m.send_log_id JOIN recipients r ON r.id = l.recipient_id"
            " JOIN campaigns c ON c.id = r.campaign_id WHERE m.kind = 'reply'"
            " AND NOT (r.application_status = 'none' AND COALESCE(r.application_changed_at >= m.read_at, 0))"
            " GROUP BY c.name, l.step"):
        if name in summary and str(step) in summary[name]:
            summary[name][str(step)]["replied"] = replied
    for (name, step), due in due_counts(conn, now=now, tz=tz, holidays=holidays, stop_company=stop_company).items():
        summary[name][str(step)]["due"] = due
    return summary


def sequence_rows(conn: sqlite3.Connection, *, now: datetime, tz: tzinfo, holidays: Iterable[date] = (),
                  stop_company: bool = True, limit: int = 200, campaign: str | None = None) -> list[dict]:
    """Recipients of campaigns with follow-ups who were mailed (of `campaign`, or of all): their
    step, when the next one is due (or why none is) and their application status, for the
    dashboard's Recipients tab.

    A row says "stopped" exactly when `step_summary` counts it stopped (before the step after its
    last one sent), with the real cause: the one recorded, else `stop_reason`'s (a reply by them or
    by a colleague, named; a suppression; a bounce) even before a run records it."""
    stops, args = _stops_sql(conn, stop_company)
    rows = conn.execute(
        "SELECT r.id, r.email, r.company, c.name AS campaign, r.step, r.status, r.sequence_stopped,"
        f" r.application_status, c.status AS campaign_status, {stops} AS stopped,"
        " (SELECT MAX(step) FROM campaign_steps s WHERE s.campaign_id = r.campaign_id) AS last_step"
        " FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
        f" WHERE {_LISTED} AND EXISTS (SELECT 1 FROM campaign_steps s WHERE s.campaign_id = r.campaign_id)"
        f"{' AND c.name = ?' if campaign else ''} ORDER BY r.id LIMIT ?",
        (*args, *([campaign] if campaign else []), limit)).fetchall()
    by_recipient = {d.row["id"]: d for d in scheduled_followups(
        conn, now=now, tz=tz, holidays=holidays, stop_company=stop_company, slim=True, only=[r["id"] for r in rows])}
    shown = []
    for row in rows:
        due = by_recipient.get(row["id"])
        if due is not None:
            next_step = f"step {due.step} due {due.due.isoformat()}"
        elif row["status"] == "sent" and row["step"] >= row["last_step"]:
            next_step = "sequence complete"
        elif row["stopped"]:
            reason = row["sequence_stopped"] or (
                row["status"] in ("sent", "pending")
                and stop_reason(conn, row["email"], row["company"], stop_company=stop_company))
            next_step = "stopped: " + (reason or f"step {row['step']} is {row['status']}")
        elif row["status"] in _MAYBE_SENT:
            next_step = f"held: step {row['step']} is {row['status']}"
        elif row["campaign_status"] != "active":
            next_step = "held: campaign paused"
        else:  # sent, but when is not known (no sent_at): no wait can be counted from it
            next_step = f"held: step {row['step']} has no time sent"
        shown.append({"email": row["email"], "campaign": row["campaign"], "step": row["step"],
                      "status": row["status"], "next": next_step, "application": row["application_status"]})
    return shown


def stop_reason(conn: sqlite3.Connection, email: str, company: str, *, stop_company: bool) -> str | None:
    """Why this recipient's sequence must stop for good now, if it must."""
    suppressed = conn.execute("SELECT reason FROM suppressions WHERE email = ?", (email,)).fetchone()
    if suppressed is not None:
        return f"suppressed: {suppressed[0]}"
    bounced = conn.execute("SELECT kind FROM bounces WHERE email = ? AND kind IN ('hard', 'complaint') LIMIT 1",
                           (email,)).fetchone()
    if bounced is not None:
        return _bounce_words(bounced[0])
    reason = applications.stop_reason(conn, email, company, stop_company=stop_company)
    return None if reason is None else applications.stopped_words(reason)


def _bounce_words(kind: str) -> str:
    return "complained" if kind == "complaint" else "bounced"


def stopping(conn: sqlite3.Connection, *, stop_company: bool) -> list[tuple[sqlite3.Row, str]]:
    """The sent recipients whose next step a run stops instead of sending (`stop_finished`, as it
    starts): a suppression, a hard bounce or complaint, or a reply not yet recorded as their
    sequence's stop, each with the words `stop_reason` gives: for `run --plan`, which must name
    them. One query; the replies read once (`applications.Answers`), not a `stop_reason` each."""
    stopped, args = applications.stopped_condition(stop_company)
    rows = conn.execute(
        "SELECT r.id, r.email, r.company, c.name AS campaign_name, s.step AS next_step,"
        " (SELECT reason FROM suppressions WHERE email = r.email) AS suppressed,"
        f" (SELECT kind FROM bounces WHERE email = r.email AND kind IN {_STOPPING_BOUNCES} LIMIT 1) AS bounced"
        " FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
        " JOIN campaign_steps s ON s.campaign_id = r.campaign_id AND s.step = r.step + 1"
        " WHERE r.status = 'sent' AND c.status = 'active' AND r.sequence_stopped IS NULL"
        " AND (r.email IN (SELECT email FROM suppressions)"
        f" OR r.email IN (SELECT email FROM bounces WHERE kind IN {_STOPPING_BOUNCES}) OR {stopped})"
        " ORDER BY r.id", args).fetchall()
    answers = applications.Answers(conn) if rows else None
    found = []
    for row in rows:
        if row["suppressed"] is not None:
            found.append((row, f"suppressed: {row['suppressed']}"))
        elif row["bounced"] is not None:
            found.append((row, _bounce_words(row["bounced"])))
        elif reason := answers.stop_reason(row["email"], row["company"], stop_company=stop_company):
            found.append((row, applications.stopped_words(reason)))
    return found


_STOPPING_BOUNCES = "('hard', 'complaint')"  # as `stop_reason` reads them


def stop_finished(conn: sqlite3.Connection, *, now: datetime, stop_company: bool = True) -> int:
    """Record why sequences stop for good (a reply, a bounce, a complaint, a suppression) for sent
    recipients who still had a step to come, so `status` and the dashboard can say why; returns how many."""
    rows = conn.execute(
        "SELECT DISTINCT r.id, r.email, r.company FROM recipients r JOIN campaign_steps s"
        " ON s.campaign_id = r.campaign_id AND s.step > r.step"
        " WHERE r.status = 'sent' AND r.sequence_stopped IS NULL").fetchall()
    stopped = 0
    with transaction(conn):
        for row in rows:
            reason = stop_reason(conn, row["email"], row["company"], stop_company=stop_company)
            if reason is not None:
                stopped += conn.execute(
                    "UPDATE recipients SET sequence_stopped = ?, updated_at = ? WHERE id = ?"
                    " AND sequence_stopped IS NULL", (reason, iso(now), row["id"])).rowcount
    return stopped


def sequence_running(conn: sqlite3.Connection, recipient_id: int) -> bool:
    """True while this sent recipient has a later step still to come and nothing stopped it."""
    return conn.execute(
        "SELECT 1 FROM recipients r JOIN campaign_steps s ON s.campaign_id = r.campaign_id AND s.step > r.step"
        " WHERE r.id = ? AND r.sequence_stopped IS NULL LIMIT 1", (recipient_id,)).fetchone() is not None


# --- the thread ---------------------------------------------------------------------------------


def delivered_message_id(message_id: str | None, transport: str, region: str | None) -> str | None:
    """The Message-ID header the recipient got for an attempt, as `<id@domain>`.

    SES replaces any Message-ID we set with its own, built from the MessageId it returns: in
    us-east-1 `<MessageId@email.amazonses.com>`, elsewhere `<MessageId@REGION.amazonses.com>`
    (https://docs.aws.amazon.com/ses/latest/dg/header-fields.html). SMTP sends keep ours.
    """
    if not message_id or message_id.startswith("dry-run-"):
        return None
    if transport == "ses":
        if not region:
            return None
        domain = "email.amazonses.com" if region == "us-east-1" else f"{region}.amazonses.com"
        return f"<{message_id.strip('<>')}@{domain}>"
    return message_id if message_id.startswith("<") else f"<{message_id}>"


_MSG_ID = re.compile(r"<[!-;=?-~]+>")  # printable ASCII without < > or spaces: safe in a header


@dataclass(frozen=True)
class Thread:
    """What a follow-up answers: the first subject and the earlier messages as delivered."""

    first_subject: str
    message_ids: tuple[str, ...]  # oldest first: References; the last one is In-Reply-To


def thread_of(conn: sqlite3.Connection, recipient_id: int, *, region: str | None) -> Thread | None:
    """The sent messages of this recipient's sequence, step by step; None before step 1 was sent."""
    rows = conn.execute(
        "SELECT step, subject, message_id, transport FROM send_log WHERE recipient_id = ? AND status = 'sent'"
        " ORDER BY step, id", (recipient_id,)).fetchall()
    if not rows or rows[0]["step"] != FIRST_STEP:
        return None
    ids: list[str] = []
    for row in rows:
        delivered = delivered_message_id(row["message_id"], row["transport"], region)
        if delivered and _MSG_ID.fullmatch(delivered) and delivered not in ids:
            ids.append(delivered)
    return Thread(rows[0]["subject"] or "", tuple(ids))


def reply_subject(first_subject: str) -> str:
    """`Re: ` + the first subject, once (RFC 5322 section 3.6.5)."""
    return first_subject if first_subject[:3].lower() == "re:" else f"Re: {first_subject}"


def step_template(name: str, subject: str | None, html: str, text: str | None, *,
                  template: str | None = None, step: int | None = None) -> CampaignTemplate:
    """Campaign `name`'s follow-up `step` as a template: without a subject of its own it takes
    `custom_subject`, which `step_fields` sets to `Re: ` + the subject of step 1."""
    from .email_templates import CampaignTemplate

    return CampaignTemplate(name, subject or "{{ subject }}", html, text, template=template, step=step)


def step_fields(row: Any, subject: str | None, first_subject: str) -> dict[str, Any]:
    """A recipient's fields for a follow-up: their custom subject and body belong to step 1."""
    fields = {k: row[k] for k in row.keys()}
    fields["custom_subject"] = None if subject else reply_subject(first_subject)
    fields["custom_body"] = None
    return fields


def render_step(conn: sqlite3.Connection, row: Any, campaign: str, number: int, settings: Any, thread: Thread,
                templates: dict[str, CampaignTemplate]) -> RenderedEmail:
    """Step `number`'s subject and body for this recipient `row`: the version of their segment (their
    `template` column) if the step has one, else the step's default. The recipient's custom subject
    and body belong to step 1 and are not used again. `templates` caches the compiled steps."""
    step = conn.execute("SELECT s.* FROM campaign_steps s JOIN campaigns c ON c.id = s.campaign_id"
                        " WHERE c.name = ? AND s.step = ?", (campaign, number)).fetchone()
    if step is None:
        raise TemplateRenderError(f"campaign {campaign!r}: step {number} was removed")
    segment = row["template"] if "template" in row.keys() else None
    version = segment and conn.execute("SELECT * FROM step_templates WHERE step_id = ? AND name = ?",
                                       (step["id"], segment)).fetchone()
    source, label = (version, f" ({segment})") if version else (step, "")
    key = f"{campaign}\x00step {number}\x00{label}"  # never a campaign's name: those come from one line of text
    if key not in templates:
        templates[key] = step_template(campaign, source["subject_template"], source["html_template"],
                                       source["text_template"], template=segment if version else None, step=number)
    return templates[key].render(step_fields(row, source["subject_template"], thread.first_subject), settings)
