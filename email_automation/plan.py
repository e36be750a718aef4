"""`run --plan`: what the next real run would send, and who is held back and why.

Read-only: nothing is claimed, rendered or sent. It follows the run's order (due follow-ups, then
new contacts in queue order) and its rules (the recipients its sweep skips, send windows,
per-company limits, the daily limit), and, when the real run would send through SES, SES's own
quota read with GetAccount.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from . import applications, circuit_breaker, ledger, politeness, schedule, sequences
from . import run_gates as gates
from .config import Settings
from .errors import EmailAutomationError, FatalSendError


@dataclass(frozen=True)
class Planned:
    email: str
    campaign: str
    step: int
    company: str


@dataclass(frozen=True)
class Held:
    email: str
    campaign: str
    step: int
    reason: str


@dataclass(frozen=True)
class Quota:
    """SES's quota as the real run would read it (GetAccount), or why it could not be read."""

    remaining_24h: int | None = None  # None: no daily quota (or not read)
    max_send_rate: float | None = None  # messages a second
    problem: str | None = None
    would_wait: int = 0  # planned messages the quota holds back
    stops_run: bool = False  # SES says the account may not send: the run sends nothing

    def as_dict(self) -> dict:
        return asdict(self)


def read_quota(transport) -> Quota | None:
    """SES's quota through the transport the real run would use; None when it has none to tell
    (a dry run, SMTP). Read-only: GetAccount, within SEND_TIMEOUT_SECONDS."""
    ask = getattr(transport, "account_capacity", None)
    if ask is None:
        return None
    try:
        capacity = ask()
    except FatalSendError as err:  # the account is paused or shut down: the run would stop at once
        return Quota(remaining_24h=0, problem=str(err), stops_run=True)
    except EmailAutomationError as err:  # unreachable, denied, timed out: the run goes on without it
        return Quota(problem=str(err))
    rate = 1 / capacity.min_interval if capacity.min_interval else None
    return Quota(capacity.remaining_24h, rate)


@dataclass
class Plan:
    """The next run's batch in order, who waits and why, what is left of the daily limit, and SES's quota."""

    daily_limit: int
    remaining_today: int
    send: list[Planned] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    over_limit: int = 0  # sendable now, but past what is left of today's limit
    limit: int | None = None  # `run --limit N`: the most this run sends (None: no cap below the daily limit)
    over_run_limit: int = 0  # sendable now and within today's limit, but past `limit`: for a later run
    quota: Quota | None = None
    delay_seconds: float = 0.0
    stopped: str | None = None  # the circuit breaker's pause of all sending: the run sends nothing

    def as_dict(self) -> dict:
        steps = Counter(str(p.step) for p in self.send)
        companies = Counter(p.company for p in self.send if p.company)
        return {"daily_limit": self.daily_limit, "remaining_today": self.remaining_today,
                "per_step": dict(sorted(steps.items())), "per_company": dict(sorted(companies.items())),
                "send": [asdict(p) for p in self.send], "held": [asdict(h) for h in self.held],
                "over_limit": self.over_limit, "limit": self.limit, "over_run_limit": self.over_run_limit,
                "ses_quota": self.quota.as_dict() if self.quota else None,
                "stopped": self.stopped}

    def within_breaker(self, conn: sqlite3.Connection, settings: Settings, now: datetime) -> None:
        """Hold what the circuit breaker would stop, as the run's check before each send does: all
        of it when all sending is (or would be) paused, else the campaigns that are (or would be)."""
        thresholds = circuit_breaker.Thresholds.from_settings(settings)
        self.stopped = circuit_breaker.would_stop(conn, thresholds, circuit_breaker.ALL, now=now)
        reasons = {c: "circuit breaker: all sending paused" if self.stopped
                   else circuit_breaker.would_stop(conn, thresholds, c, now=now)
                   for c in dict.fromkeys(p.campaign for p in self.send)}
        self.held[:0] = [Held(p.email, p.campaign, p.step, reasons[p.campaign]) for p in self.send if reasons[p.campaign]]
        self.send = [p for p in self.send if not reasons[p.campaign]]

    def past_run_limit(self, room_after: int) -> None:
        """Of the messages past this run's size, count the first `room_after` (what today's limit
        leaves after a `--limit`-capped batch) as waiting for a later run, not a later day."""
        self.over_run_limit = min(self.over_limit, max(0, room_after))
        self.over_limit -= self.over_run_limit

    def within_quota(self, quota: Quota | None) -> None:
        """Cut the batch as the run does: to what SES allows in its 24-hour window (due follow-ups
        stay first); a quota that could not be read cuts nothing (the run goes on without it)."""
        if quota is not None and quota.remaining_24h is not None and quota.remaining_24h < len(self.send):
            quota = replace(quota, would_wait=len(self.send) - quota.remaining_24h)
            self.send = self.send[:quota.remaining_24h]
        self.quota = quota


def check_startable(settings: Settings) -> None:
    """Raise what a run (dry or real) raises before it sends anything for these settings: a
    SENDER_EMAIL, SENDER_NAME or REPLY_TO that no message can be built with. The plan then says
    so as `run` does (one `Error:` line, exit code 2) instead of planning a run that cannot start.

    Raises:
        ConfigError: the setting and why, in the words of `run`.
    """
    from .messages import check_sender

    check_sender(settings)


def plan_run(conn: sqlite3.Connection, settings: Settings, *, now: datetime, quota: Quota | None = None,
             limit: int | None = None) -> Plan:
    """What a real run started at `now` would do, within SES's `quota` when given (`read_quota`),
    sending at most `limit` messages (`run --limit N`) as that run would."""
    settings = gates.within_warmup(settings, conn, now)
    remaining = ledger.remaining_today(conn, now=now, tz=settings.tz, daily_limit=settings.daily_limit)
    plan = Plan(settings.daily_limit, remaining, delay_seconds=settings.delay_seconds, limit=limit)
    size = ledger.batch_size(remaining, limit)  # as run_daily._plan sizes its batch
    zones = {row[0] for row in conn.execute("SELECT DISTINCT timezone FROM recipients")}
    closed = schedule.closed_zones(zones, now, settings.tz, *settings.send_window)
    candidates: list[Planned] = []
    today = now.astimezone(settings.tz).date()
    swept = ledger.swept(conn, stop_company=settings.stop_company_on_reply)  # the run skips them before it plans
    # ... and stops these follow-ups as it starts (a bounce the suppression list no longer has, too)
    stopping = sequences.stopping(conn, stop_company=settings.stop_company_on_reply)
    skipped = {row["id"] for row, _ in swept} | {row["id"] for row, _ in stopping}
    for due in sequences.scheduled_followups(conn, now=now, tz=settings.tz, holidays=settings.holiday_dates,
                                             stop_company=settings.stop_company_on_reply, slim=True):
        row = due.row
        if row["id"] in skipped:
            continue
        if due.due > today:
            plan.held.append(Held(row["email"], row["campaign_name"], due.step,
                                  f"waiting for a reply until {due.due.isoformat()}"))
        elif row["timezone"] in closed:
            plan.held.append(Held(row["email"], row["campaign_name"], due.step,
                                  f"outside the send window ({closed[row['timezone']]})"))
        elif len(candidates) < size:
            candidates.append(_planned(row, due.step))
        else:  # due now, past today's limit: counted, not listed
            plan.over_limit += 1
    for row in conn.execute(
            "SELECT r.email, r.step, c.name FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
            " JOIN campaign_steps s ON s.campaign_id = r.campaign_id AND s.step = r.step + 1"
            " WHERE r.status = 'unknown' ORDER BY r.id"):
        plan.held.append(Held(row["email"], row["name"], row["step"] + 1,
                              f"step {row['step']} is unknown: settle it with `email-automation resolve`"))
    for row in conn.execute(
            "SELECT r.email, c.name, s.reason FROM recipients r JOIN campaigns c ON c.id = r.campaign_id"
            " JOIN suppressions s ON s.email = r.email WHERE r.status = 'pending' ORDER BY r.id"):
        plan.held.append(Held(row["email"], row["name"], 1, f"suppressed: {row['reason']}"))
    plan.held += [Held(row["email"], row["campaign_name"], row["step"], reason) for row, reason in swept]
    # Follow-ups the run stops as it starts (their sequence ends for good): the queue of follow-ups
    # leaves them out silently.
    plan.held += [Held(row["email"], row["campaign_name"], row["next_step"], reason) for row, reason in stopping]
    companies = politeness.limits_for(conn, ledger.batch_date(now, settings.tz),
                                      per_day=settings.max_new_per_company_per_day,
                                      per_campaign=settings.max_contacts_per_company)
    stopped, args = applications.stopped_condition(settings.stop_company_on_reply)
    queue = conn.execute(f"SELECT r.*, c.name AS campaign_name{ledger.QUEUE_FROM_WHERE} AND NOT {stopped}"
                         " ORDER BY r.id", args)
    room = max(0, size - len(candidates) - plan.over_limit)
    for row in queue:
        if row["timezone"] in closed:
            plan.held.append(Held(row["email"], row["campaign_name"], 1,
                                  f"outside the send window ({closed[row['timezone']]})"))
        elif room <= 0:  # past today's limit: counted, not listed (the queue may be long)
            plan.over_limit += 1
        elif (refusal := companies.refusal(row)) is not None:
            plan.held.append(Held(row["email"], row["campaign_name"], 1, f"company limit: {refusal}"))
        else:
            candidates.append(_planned(row, 1))
            room -= 1
    plan.send = candidates[:size]
    plan.over_limit += len(candidates) - len(plan.send)
    plan.past_run_limit(remaining - size)
    plan.within_quota(quota)  # the run cuts its batch to SES's quota, then the breaker holds within it
    plan.within_breaker(conn, settings, now)
    return plan


def _planned(row, step: int) -> Planned:
    return Planned(row["email"], row["campaign_name"], step, politeness.company_key(row["company"], row["email"]))


def plan_lines(plan: Plan, *, ses: bool = True, inbox: str | None = None) -> list[str]:
    """The plan for a person: the batch, how SES's quota cuts it, per step, then who waits and why.
    `ses`: the real run sends through SES (whose quota, when not read, may cut the batch);
    `inbox`: `inbox_line`'s caveat, when the real run reads replies first."""
    capped = f"--limit {plan.limit}; " if plan.limit is not None else ""
    lines = [f"The next real run would send {len(plan.send)} message(s) ({capped}{plan.remaining_today} of DAILY_LIMIT "
             f"{plan.daily_limit} left today" + ("; SES's own quota may cut it further)." if plan.quota is None and ses
                                                 else ").")]
    if plan.stopped:
        lines.append(f"  {plan.stopped}. The run would send nothing.")
    lines += [inbox] if inbox else []
    lines += quota_lines(plan)
    for step, count in sorted(Counter(p.step for p in plan.send).items()):
        lines.append(f"  step {step}: {count}")
    for p in plan.send:
        lines.append(f"  send {p.email} ({p.campaign}, step {p.step}{', ' + p.company if p.company else ''})")
    for h in plan.held:
        lines.append(f"  held {h.email} ({h.campaign}, step {h.step}): {h.reason}")
    if plan.over_run_limit:
        lines.append(f"  {plan.over_run_limit} more wait for a later run (--limit {plan.limit}).")
    if plan.over_limit:
        lines.append(f"  {plan.over_limit} more wait for a later day (daily limit).")
    return lines


def inbox_line(conn: sqlite3.Connection, settings: Settings) -> str | None:
    """With IMAP_HOST, the real run reads the inbox before it plans, which the plan does not: a
    reply waiting there stops messages the plan lists. Says so, with when the inbox was last read."""
    if not settings.imap_host:
        return None
    from .inbox import mailbox_key

    row = conn.execute("SELECT read_at FROM inbox_state WHERE mailbox = ?", (mailbox_key(settings),)).fetchone()
    when = (f"last read {datetime.fromisoformat(row[0]).astimezone(settings.tz):%Y-%m-%d %H:%M}" if row
            else "never read yet")
    return (f"  The real run first reads the inbox ({when}): a reply that came in since stops its sender's messages."
            " `email-automation inbox` reads it now.")


def quota_lines(plan: Plan) -> list[str]:
    """What SES's quota does to the batch, in a line or two (none without a quota to read)."""
    quota = plan.quota
    if quota is None:
        return []
    if quota.stops_run:
        return [f"  {quota.problem}. The run would send nothing."]
    if quota.problem:
        return [f"  {quota.problem}: the run asks again before it sends."]
    planned = len(plan.send) + quota.would_wait
    lines = []
    if quota.remaining_24h is not None:
        lines.append(f"  SES allows {quota.remaining_24h} more in its 24-hour window: "
                     + (f"{quota.would_wait} of the {planned} planned would wait." if quota.would_wait
                        else f"room for all {planned} planned."))
    if quota.max_send_rate and 1 / quota.max_send_rate > plan.delay_seconds:
        lines.append(f"  SES sends at most {quota.max_send_rate:g} a second: the run waits "
                     f"{1 / quota.max_send_rate:g} s between sends (DELAY_SECONDS {plan.delay_seconds:g}).")
    return lines
