"""The daily run: pick today's batch, check every message renders, then render -> claim -> send -> record.

Every message of the batch is rendered and its headers made once before the first send, so a
template error stops its campaign before anything leaves; only the recipient ids are kept, with the
rendered content and headers of the first messages up to KEPT_RENDERS_CHARS, and each message is
built again just before its claim (rendered and its headers made again unless they are kept and the
recipient unchanged), so memory does not grow with the batch.

`run_daily` is the library function the CLI, cron and the tests call; time, sleep, randomness and
the transport come in as arguments so a test can run a whole day in milliseconds.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from . import applications, bounces, circuit_breaker, database, ledger, politeness, schedule, sequences
from . import run_gates as gates
from .concurrent_send import ConcurrentSender, RateLimiter, StopFlag
from .config import Settings
from .cpu_affinity import OneCpu
from .email_templates import RenderedEmail
from .errors import FatalSendError, PermanentSendError, SendError, TemplateRenderError, TransientSendError
from .locking import run_lock
from .messages import Headers, build_wire, check_wire, recipient_name
from .template_sets import CampaignTemplates
from .transports.base import Transport

log = logging.getLogger("email_automation.run")

# In-run retries of a definitely-refused send (SES throttling, SMTP 4xx): waits of 2, 4, 8 s.
TRANSIENT_RETRIES = 3
# A streak of the same bad outcome says the problem is the set-up, not the recipients: stop there.
STREAK_LIMITS = {"unknown": 3, "pending": 3, "failed": 5}


@dataclass
class RunReport:
    """What one run did; `as_dict` is the `--json` output."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    unknown: int = 0
    deferred: int = 0
    previewed: int = 0
    remaining_today: int = 0
    dry_run: bool = False
    recovered: int = 0
    fatal_error: str | None = None
    template_errors: list[str] = field(default_factory=list)  # one per campaign held back this run
    paused: list[str] = field(default_factory=list)  # one per pause by the circuit breaker that held sends back
    steps: dict[str, dict[str, int]] = field(default_factory=dict)  # step -> outcome -> count
    window: str | None = None  # why a real run sent nothing: outside SEND_DAYS/SEND_HOURS
    outcomes: list[Outcome] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("outcomes")
        return data


@dataclass(frozen=True)
class Outcome:
    """One message's fate, as a line in cron.log and an event for a progress bar."""

    at: datetime
    email: str
    status: str
    message_id: str | None = None
    error: str | None = None
    attempted: bool = True  # False: nothing was handed to the transport, so no delay is owed
    step: int = 1

    def line(self) -> str:
        """`email status [step N] [message-id] [(error)]`; the log formatter puts the time in front."""
        parts = [self.email, self.status] + ([f"step {self.step}"] if self.step > 1 else [])
        if self.message_id:
            parts.append(self.message_id)
        if self.error:
            parts.append(f"({self.error})")
        return " ".join(parts)


# The content rendered, and the headers made, by the check before the first send are used again to
# send while the recipient is unchanged, up to this many characters in all (with the rows they came
# from; a few MB): beyond that they are made again, so memory stays flat in the batch size.
KEPT_RENDERS_CHARS = 4_000_000


@dataclass(frozen=True)
class _Planned:
    """A recipient whose message was checked to render and build; the message itself is not kept,
    its content (with the recipient's row it came from) only within KEPT_RENDERS_CHARS."""

    recipient_id: int
    email: str
    campaign: str
    step: int = 1
    thread: sequences.Thread | None = None  # a follow-up's earlier messages, as delivered
    checked: tuple[tuple, RenderedEmail, Headers] | None = field(default=None, compare=False, repr=False)

    def content_for(self, row: sqlite3.Row) -> tuple[RenderedEmail, Headers] | None:
        """The checked content and headers, if `row` (the recipient now) is what they were made from."""
        if self.checked is None or self.checked[0][:len(row)] != tuple(row):
            return None
        return self.checked[1:]


def pending_batch(conn: sqlite3.Connection, size: int, *, exclude: Iterable[str] = (),
                  stop_company: bool = True, companies: politeness.CompanyLimits | None = None,
                  closed_zones: Iterable[str] = ()) -> list[sqlite3.Row]:
    """The next `size` sendable recipients of active campaigns, oldest first (the queue order),
    leaving out the campaigns named in `exclude`, recipients in `closed_zones` (outside their send
    window) and, with `companies`, those its limits hold back.

    Colleagues of someone who answered are left out too, so a dry run previews what a real run sends.
    """
    names, zones = list(exclude), list(closed_zones)
    holes, zone_holes = ", ".join("?" * len(names)), ", ".join("?" * len(zones))
    stopped, args = applications.stopped_condition(stop_company)
    sql = (f"SELECT r.*, c.name AS campaign_name{ledger.QUEUE_FROM_WHERE} AND NOT {stopped}"
           f"{f' AND c.name NOT IN ({holes})' if names else ''}"
           f"{f' AND r.timezone NOT IN ({zone_holes})' if zones else ''} ORDER BY r.id")
    names += zones
    if companies is None:
        return conn.execute(f"{sql} LIMIT ?", (*args, *names, size)).fetchall()
    return list(politeness.first_admitted(conn.execute(sql, (*args, *names)), companies, size))


def skip_unsendable(conn: sqlite3.Connection, *, now: datetime, stop_company: bool = True) -> int:
    """Pending recipients that must never be mailed become `skipped`, with the reason."""
    rows = applications.stopped_pending(conn, stop_company=stop_company) + conn.execute(
        "SELECT r.id, r.email FROM recipients r WHERE r.status = 'pending'"
        " AND (r.email IN (SELECT email FROM suppressions)"
        "      OR EXISTS (SELECT 1 FROM recipients o WHERE o.email = r.email AND o.id != r.id"
        "                 AND (o.status IN ('sending', 'sent', 'unknown') OR o.step > 1)))"
    ).fetchall()
    skipped = 0
    for row in rows:
        reason = ledger.skip_reason(conn, row["id"], row["email"], stop_company=stop_company)  # the claim's words
        if reason is not None:
            skipped += ledger.mark_skipped(conn, row["id"], reason, now=now)
    return skipped


@dataclass
class _Rendered:
    planned: list[_Planned] = field(default_factory=list)
    unusable: list[tuple[sqlite3.Row, PermanentSendError]] = field(default_factory=list)
    broken: dict[str, TemplateRenderError] = field(default_factory=dict)
    templates: dict[str, CampaignTemplates] = field(default_factory=dict)  # compiled once, used again to send


def render_batch(conn: sqlite3.Connection, rows: list[sqlite3.Row], settings: Settings) -> _Rendered:
    """Render every message and make its headers before the first send, keeping only who can be sent to.

    A campaign whose template fails for one of its recipients is returned in `broken` and none of
    its messages are planned (so it never goes out half-rendered); an address no message can be
    built for (say, a non-ASCII local part SES cannot carry, or a file to attach that is gone) is
    returned in `unusable`.
    """
    result = _Rendered()
    templates = result.templates
    kept = 0
    for row in rows:
        name = row["campaign_name"]
        if name in result.broken:
            continue
        keep = kept < KEPT_RENDERS_CHARS  # else rendered again to send, its text part only then
        try:
            if name not in templates:
                campaign = conn.execute("SELECT * FROM campaigns WHERE name = ?", (name,)).fetchone()
                templates[name] = CampaignTemplates(conn, campaign)
            rendered = templates[name].render(row, settings, derive_text=keep)
        except TemplateRenderError as err:
            result.broken[name] = err
            continue
        try:
            made = check_wire(rendered, to=row["email"], to_name=recipient_name(row), settings=settings,
                              attachments=templates[name].attachments(row))
        except PermanentSendError as err:
            result.unusable.append((row, err))
            continue
        if keep:
            kept += made.size() + sum(len(text) for text in (rendered.subject, rendered.html, rendered.text, *row)
                                      if isinstance(text, str))
        result.planned.append(_Planned(row["id"], row["email"], name,
                                       checked=(tuple(row), rendered, made) if keep else None))
    result.planned = [p for p in result.planned if p.campaign not in result.broken]
    result.unusable = [(row, e) for row, e in result.unusable if row["campaign_name"] not in result.broken]
    return result


def _render_sendable(conn, settings: Settings, size: int, report: RunReport, *, now: datetime,
                     closed: set[str] = frozenset()) -> _Rendered:
    """Today's batch without the campaigns whose templates fail: their places go to the others.

    Each pass that finds a new broken campaign fetches the batch again without it, so a bad
    template holds back only its own campaign (and the loop ends: campaigns are finite).
    """
    broken: dict[str, TemplateRenderError] = {}
    while True:
        companies = politeness.limits_for(conn, ledger.batch_date(now, settings.tz),
                                          per_day=settings.max_new_per_company_per_day,
                                          per_campaign=settings.max_contacts_per_company)
        rows = pending_batch(conn, size, exclude=broken, stop_company=settings.stop_company_on_reply,
                             companies=companies, closed_zones=closed)
        result = render_batch(conn, rows, settings)
        if not result.broken:
            break
        broken.update(result.broken)
    for name, err in broken.items():
        log.error("campaign %r held back, its recipients stay pending: %s", name, err)
        report.template_errors.append(str(err))
    return result


def _render_followups(conn, settings: Settings, transport: Transport, report: RunReport, size: int,
                      templates: dict[str, CampaignTemplate], *, now: datetime, closed: set[str] = frozenset()
                      ) -> list[_Planned]:
    """Up to `size` due follow-ups, checked to render and build as replies in the recipient's thread.

    A step whose template fails holds back that campaign's follow-ups (reported once); an address
    no message can be built for ends its sequence.
    """
    region = settings.aws_region or getattr(transport, "region", None)
    broken: set[str] = set()
    planned: list[_Planned] = []
    for due in sequences.due_followups(conn, now=now, tz=settings.tz, holidays=settings.holiday_dates,
                                       stop_company=settings.stop_company_on_reply):
        if len(planned) >= size:
            break
        row, name = due.row, due.row["campaign_name"]
        if row["timezone"] in closed:  # outside the recipient's send window: a later run sends it
            continue
        thread = sequences.thread_of(conn, row["id"], region=region)
        if name in broken or thread is None:
            continue
        try:
            rendered = sequences.render_step(conn, row, name, due.step, settings, thread, templates)
            check_wire(rendered, to=row["email"], to_name=recipient_name(row), settings=settings,
                       thread=thread.message_ids)
        except TemplateRenderError as err:
            broken.add(name)
            log.error("follow-ups of campaign %r held back: %s", name, err)
            report.template_errors.append(str(err))
            continue
        except PermanentSendError as err:
            if not report.dry_run:
                with database.transaction(conn):
                    ledger.stop_sequence(conn, row["id"], str(err), now=now)
            continue
        planned.append(_Planned(row["id"], row["email"], name, due.step, thread))
    return [p for p in planned if p.campaign not in broken]


def max_run_duration(settings: Settings) -> timedelta:
    """The longest a healthy run can take, plus ten minutes; a run holding the lock longer is hung
    (see locking.py).

    Every message of DAILY_LIMIT waits its delay, times out on every try and waits out every
    retry; with SES, the calls asked before each claim time out too (SES's suppression list,
    SES_CONTACT_LIST's GetContact and CreateContact: each bounded by SEND_TIMEOUT_SECONDS, see
    run_gates.SesGate); with IMAP_HOST, the inbox read that starts a real run times out on each
    of its commands.
    """
    retry_waits = sum(min(2 * 2 ** n, 60) for n in range(TRANSIENT_RETRIES))  # tenacity's waits below
    calls = TRANSIENT_RETRIES + 1 + _ses_calls_per_message(settings)
    per_message = (settings.delay_seconds + settings.delay_jitter_seconds + retry_waits
                   + calls * settings.send_timeout_seconds)
    return timedelta(seconds=settings.daily_limit * per_message + _longest_inbox_read(settings) + 600)


def _ses_calls_per_message(settings: Settings) -> int:
    """SES calls before a claim: GetSuppressedDestination (when the list could not be read whole),
    GetContact and CreateContact (SES_CONTACT_LIST)."""
    if settings.transport != "ses":
        return 0
    return int(settings.ses_suppression_check) + (2 if settings.ses_contact_list else 0)


def _longest_inbox_read(settings: Settings) -> float:
    """Connect, STARTTLS, login, EXAMINE, SEARCH and logout, then three FETCHes per batch of new
    mail (counted up to DAILY_LIMIT messages), each waiting up to the IMAP time-out."""
    if not settings.imap_host:
        return 0
    from .inbox import FETCH_BATCH, TIMEOUT_SECONDS

    batches = -(-max(settings.daily_limit, 1) // FETCH_BATCH)
    return (6 + 3 * batches) * TIMEOUT_SECONDS


@dataclass(frozen=True)
class RunOptions:
    """What a caller injects into a run, one object from the CLI through `run_job` to `run_daily`:
    the clock and sleep (fakes in tests), randomness for the jitter, a cap below the day's limit, a
    callback per outcome (a progress bar), and the maker of the extra transports concurrent sends use."""

    now: Callable[[], datetime]
    sleep: Callable[[float], None]
    limit: int | None = None
    rng: random.Random | None = None  # None: a fresh random.Random() per run
    on_outcome: Callable[[Outcome], None] | None = None
    transport_factory: Callable[[], Transport] | None = None

    @classmethod
    def of(cls, options: RunOptions | None, fields: dict) -> RunOptions:
        """`options`, or one made from its fields given as keywords (`now=..., sleep=...`)."""
        if options is not None and fields:
            raise TypeError("pass RunOptions or its fields as keywords, not both")
        return options if options is not None else cls(**fields)


def run_daily(settings: Settings, conn: sqlite3.Connection, transport: Transport, options: RunOptions | None = None,
              **fields) -> RunReport:
    """Send today's batch, with `options` (or its fields as keywords). Raises RunLockedError when
    another run is active (HungRunError when that run has lasted longer than `max_run_duration`); a
    campaign whose template fails is held back and reported in `template_errors`; a fatal send error
    stops the run and is reported in `fatal_error`.

    With SEND_CONCURRENCY > 1 and no delay, `transport_factory` makes the extra transports the
    concurrent sends use (one each; `transport` is the first); without it the run sends one at a time.
    """
    options = RunOptions.of(options, fields)
    with run_lock(settings.db_path, now=options.now, max_duration=max_run_duration(settings)):
        return _run_locked(settings, conn, transport, options)


def _run_locked(settings, conn, transport, options: RunOptions) -> RunReport:
    now, sleep, limit, transport_factory = options.now, options.sleep, options.limit, options.transport_factory
    rng, on_outcome = options.rng or random.Random(), options.on_outcome or (lambda o: None)
    report = RunReport(dry_run=transport.name == "dry_run")
    settings = gates.within_warmup(settings, conn, now())
    _recover(conn, report, now=now)
    if not report.dry_run:
        report.skipped = skip_unsendable(conn, now=now(), stop_company=settings.stop_company_on_reply)
        sequences.stop_finished(conn, now=now(), stop_company=settings.stop_company_on_reply)
    report.paused = gates.open_pause_lines(conn)
    zones = set() if report.dry_run else _recipient_zones(conn)
    closed = {} if report.dry_run else schedule.closed_zones(zones, now(), settings.tz, *settings.send_window)
    if not report.dry_run and (stop := gates.all_paused(conn)):
        report.fatal_error = stop
        batch, delay, templates = [], 0.0, {}
    elif closed and closed.keys() >= zones | {""}:  # TIMEZONE's window counts too, recipients or not
        report.window = f"outside the send window ({_closed_reasons(closed, zones)}): nothing sent now"
        log.info(report.window)
        batch, delay, templates = [], 0.0, {}
    else:
        batch, delay, templates = _plan(settings, conn, transport, report, now=now, limit=limit, closed=set(closed))
    breaker = gates.Breaker(conn, circuit_breaker.Thresholds.from_settings(settings), report.paused)
    ses_gate = gates.SesGate.for_run(settings, conn, transport, now=now) if batch and not report.dry_run else None
    gate = _Gate(report, breaker, ses_gate)
    workers = _workers(settings, report, len(batch), transport_factory)
    if workers > 1:
        with OneCpu(enabled=settings.send_one_cpu):
            _send_concurrently(settings, conn, [transport], transport_factory, workers, batch, templates, report,
                               gate, interval=delay, now=now, sleep=sleep, on_outcome=on_outcome)
    else:
        _send_in_turn(settings, conn, transport, batch, templates, report, gate, delay=delay, now=now, sleep=sleep,
                      rng=rng, on_outcome=on_outcome)
    report.remaining_today = ledger.remaining_today(conn, now=now(), tz=settings.tz, daily_limit=settings.daily_limit)
    return report


@dataclass
class _Gate:
    """What may stop or skip a message before it is prepared: the circuit breaker, SES's suppression list."""

    report: RunReport
    breaker: gates.Breaker
    ses_gate: gates.SesGate | None

    def check(self, conn, item: _Planned, now: datetime) -> Outcome | bool:
        """False: go on with this message. True: hold it (and `report.fatal_error` says when the whole
        run stops). An Outcome: skip it, with that outcome."""
        if self.breaker_holds(item, now):
            return True
        refusal = self.ses_gate.refusal(conn, item.email, now=now) if self.ses_gate else None
        if refusal:
            return Outcome(now, item.email, "skipped", error=refusal, attempted=False, step=item.step)
        return False

    def breaker_holds(self, item: _Planned, now: datetime) -> bool:
        """Whether the circuit breaker holds `item`'s campaign back now (`report.fatal_error` says so
        when it holds all sending)."""
        if self.report.dry_run or not self.breaker.holds(item.campaign, now):
            return False
        if self.breaker.stop:
            self.report.fatal_error = self.breaker.stop
        return True


def _workers(settings, report: RunReport, batch_size: int, transport_factory) -> int:
    """How many sends may be in flight: SEND_CONCURRENCY only when nothing asks for a pause between sends."""
    if report.dry_run or transport_factory is None or settings.delay_seconds or settings.delay_jitter_seconds:
        return 1
    return max(1, min(settings.send_concurrency, batch_size))


def _send_in_turn(settings, conn, transport, batch: list[_Planned], templates, report: RunReport, gate: _Gate, *,
                  delay, now, sleep, rng, on_outcome) -> None:
    """One message at a time, DELAY_SECONDS (plus jitter) apart.

    Each send runs on a worker thread (`_InTurn`) while this thread waits for it, so an exception
    that ends the run meanwhile (Ctrl-C, SIGTERM) lands here, not inside the send: the send is
    waited for and recorded as what it was, and a refused one waiting to retry tries no more,
    its refusal standing, instead of the claim being left `sending` (`unknown` after the next run).
    """
    in_turn = None if report.dry_run or not batch else _InTurn(transport, sleep)
    try:
        _send_each(settings, conn, transport, batch, templates, report, gate,
                   _preview_one if in_turn is None else in_turn.send_one, delay=delay, now=now, sleep=sleep, rng=rng,
                   on_outcome=on_outcome)
    finally:
        if in_turn is not None:
            _wind_down(settings, conn, in_turn.pool, in_turn.stopping, [], report, now=now, sleep=sleep)


def _send_each(settings, conn, transport, batch: list[_Planned], templates, report: RunReport, gate: _Gate, send, *,
               delay, now, sleep, rng, on_outcome) -> None:
    streak = _Streak()
    for index, item in enumerate(batch):
        held = gate.check(conn, item, now())
        if held is True:
            if report.fatal_error:
                break
            continue
        if held:
            outcome = held
        else:
            try:
                message = _prepare(settings, conn, templates, item,
                                   _recipient_rows(conn, [item.recipient_id]).get(item.recipient_id), now=now())
            except (TemplateRenderError, PermanentSendError) as err:
                outcome = _unprepared(settings, conn, report, item, err, now=now)
            else:
                outcome = send(settings, conn, transport, item, message, now=now, sleep=sleep)
        if outcome is None:  # the limit was reached by an overlapping writer
            break
        _note(report, outcome)
        on_outcome(outcome)
        report.fatal_error = outcome.error if outcome.status == "fatal" else streak.stop_reason(outcome)
        if report.fatal_error:
            break
        # The delay spares the provider and the sender's reputation; a dry run sends nothing.
        if index < len(batch) - 1 and outcome.attempted and not report.dry_run:
            pause = delay + (rng.uniform(0, settings.delay_jitter_seconds) if settings.delay_jitter_seconds else 0)
            if pause > 0:  # DELAY_SECONDS=0: not even a zero-second sleep
                sleep(pause)


def _send_concurrently(settings, conn, transports: list[Transport], transport_factory, workers: int,
                       batch: list[_Planned], templates, report: RunReport, gate: _Gate, *, interval: float, now,
                       sleep, on_outcome) -> None:
    """Up to `workers` sends in flight, their starts at least `interval` apart (MAX_SEND_RATE, SES's rate).

    This thread renders, claims and records; the sends run on the workers' own transports. Without
    a rate, messages are claimed `workers` at a time in one transaction (one `fsync` per group), and
    the next group is claimed while the one before it is sent: up to `workers` claimed sends wait
    behind the `workers` in flight. So a run killed at any moment leaves at most 2 x `workers`
    recipients claimed and not recorded (`unknown` after recovery); in exchange a group costs one
    fsync per `workers` messages, where claiming only for the places free at a time made groups of
    two or three, and no connection waits for a claim. After a failed send nothing waiting starts
    until its outcome is recorded; the waiting claims that the circuit breaker now holds back are
    undone (`ledger.give_back`: nothing was attempted, the recipient is pending again), and all of
    them once the run stops (a fatal error, a streak, an unexpected error, Ctrl-C); the sends in
    flight are still recorded.
    Under a rate, one claim at a time and none waiting: each `attempted_at` is when its send starts.
    """
    transports = transports + [transport_factory() for _ in range(workers - len(transports))]
    limiter = RateLimiter(1 / interval if interval else None, clock=lambda: now().timestamp(), sleep=sleep)
    pool: ConcurrentSender[tuple[_Planned, ledger.Claim, list[SendError]]] = ConcurrentSender(
        transports, queued=0 if interval else workers)
    streak = _Streak()
    crash: BaseException | None = None
    todo = iter(batch)
    withdrawn: list[tuple[_Planned, ledger.Claim, str]] = []  # taken back from the pool, claims not yet undone
    stopping = StopFlag()  # set once the run stops: no more retries of refused sends
    # What an interruption (Ctrl-C, SIGTERM) between two steps would otherwise lose, for the `finally`
    # (the finished sends not yet recorded stay in the pool until acknowledged):
    unsubmitted: list = []  # claims not yet handed to the pool (it undoes them: nothing was sent)
    retry_wait = _retry_wait(stopping, sleep)

    def stopped() -> bool:
        """Whether the run stops; once it does, `stopping` tells the sends waiting to retry a refusal."""
        if report.fatal_error or crash:
            stopping.set()
            return True
        return False

    def collect(block: bool) -> None:
        nonlocal crash
        dones = pool.done(block=block)
        failures = sum(done.error is not None for done in dones)
        finished, unexpected = _results(dones)
        crash = crash or next(iter(unexpected), None)  # raised once every send in flight is recorded
        outcomes = _record_together(settings, conn, finished, now=now, sleep=sleep)
        pool.acknowledge(dones)
        for outcome in outcomes:
            _finish(report, outcome, streak, on_outcome)
        if failures:  # the waiting sends start again once these are recorded and the breaker asked again
            ending = stopped()
            take_back(lambda item: "the run stopped" if ending else
                      "the circuit breaker held it back" if gate.breaker_holds(item, now()) else None)
            pool.settle(failures)

    def take_back(why_not: Callable[[_Planned], str | None]) -> None:
        """The waiting sends for which `why_not` gives a reason never start: their claims are undone
        (`ledger.give_back`) and each is reported as deferred, outside any streak (not attempted).
        Taken back ones not yet undone stay in `withdrawn`, which the `finally` below undoes."""
        reasons: dict[int, str] = {}

        def keep(key: tuple[_Planned, ledger.Claim, list[SendError]]) -> bool:
            reason = why_not(key[0])
            if reason:
                reasons[id(key)] = f"not sent: {reason} before its turn"
            return not reason

        withdrawn.extend((key[0], key[1], reasons[id(key)]) for key in pool.cancel_queued(keep))
        while withdrawn:
            item, claim, reason = withdrawn[0]
            ledger.give_back(conn, claim, now=now(), patience=ledger.Patience(now, sleep))
            del withdrawn[0]
            outcome = Outcome(now(), item.email, "pending", error=reason, attempted=False, step=item.step)
            _note(report, outcome)
            on_outcome(outcome)

    def finish(outcome: Outcome) -> None:
        _finish(report, outcome, streak, on_outcome)

    ready: list[tuple[_Planned, RenderedEmail, object]] = []  # prepared, not claimed: nothing to undo
    try:
        while not stopped():
            # Prepare the next messages while the sends in flight finish, so that several places are
            # free, and claimed together, by the time they are ready.
            ready += _prepare_group(settings, conn, templates, todo, pool.size - len(ready), report, finish,
                                    stopped=stopped, now=now)
            if not ready or stopped():
                break  # nothing left, or the run stopped: the prepared messages were not claimed
            # Room for the whole group (under a rate, for one message): record what has finished, and
            # wait for more to finish until there is.
            needed = 1 if interval else len(ready)
            collect(block=pool.room < needed)
            while pool.room < needed and not stopped():
                collect(block=True)
            if stopped():
                break
            free = 1 if interval else pool.room
            group, ready = _admitted(conn, ready[:free], gate, finish, now=now), ready[free:]
            if report.fatal_error:
                break
            limiter.wait()  # under a rate the group is one message, claimed when its send may start
            outcomes, full = _claim_group(settings, conn, group, transports[0].name, now=now, claimed=unsubmitted)
            while unsubmitted:  # handed over before anything else; each off the list first, so that
                item, wire, claim = unsubmitted.pop(0)  # the `finally` never undoes a claim being sent
                _hand_over(pool, item, claim, wire, retry_wait, stopping)
            for outcome in outcomes:
                finish(outcome)
            if full:  # the limit was reached by an overlapping writer
                break
        if stopped():
            take_back(lambda item: "the run stopped")
        while pool.in_flight:
            collect(block=True)
    finally:
        # When an exception ends the run here (otherwise there is nothing left to do): the claims
        # waiting for a place never start, and the sends in flight are waited for and recorded.
        try:
            _wind_down(settings, conn, pool, stopping, withdrawn, report, now=now, sleep=sleep,
                       unsubmitted=unsubmitted)
        finally:
            for extra in transports[1:]:
                extra.close()
    if crash is not None:
        raise crash


def _wind_down(settings, conn, pool: ConcurrentSender, stopping: StopFlag, withdrawn: list, report: RunReport, *,
               now, sleep, unsubmitted: list = ()) -> None:
    """The end of a run's sends, normal or not: `stopping` is set (no send waits to retry a
    refusal), the claims that never started (`withdrawn`, `unsubmitted` and the pool's queued ones)
    are undone, the sends in flight waited for (the pool closed), and those not yet recorded
    recorded (the pool's finished sends not acknowledged: `_still_sending` leaves out any recorded
    just before the interruption). Each step runs even if the one before failed or was
    interrupted; a further Ctrl-C at the very start of a step can still skip it, which leaves a
    claim `unknown`, never a second send."""
    never_started: list = []  # what `pool.close` took back: queued when a second Ctrl-C skipped the undoing above
    try:
        stopping.set()
        withdrawn.extend((item, claim, "") for item, _, claim in unsubmitted)
        withdrawn.extend((item, claim, "") for item, claim, _ in pool.cancel_queued())
        with database.impatient(conn):
            _undo_unstarted(conn, withdrawn, now=now)
    finally:
        try:
            try:
                if waiting := pool.unfinished:  # a finished send is only left to record
                    log.warning("waiting for the %s in flight to finish, to record %s",
                                "send" if waiting == 1 else f"sends (up to {waiting})", "it" if waiting == 1 else "them")
            finally:
                stopping.set()  # again, in case a second Ctrl-C cut the first short
                never_started = pool.close()  # returns once the sends in flight are done
        finally:
            with database.impatient(conn):
                try:
                    _record_left_in_flight(settings, conn, pool.done(block=False), report,
                                           now=now, sleep=sleep)
                finally:
                    _undo_unstarted(conn, [(item, claim, "") for item, claim, _ in never_started], now=now)


def _record_left_in_flight(settings, conn, left: list, report: RunReport, *, now, sleep) -> None:
    """Record the sends that were in flight when an exception ended the run (Ctrl-C, SIGTERM, a
    database error): they went out, or failed, all the same. One try (inside `database.impatient`):
    a run being stopped does not wait out another writer. If that fails, the log names every
    message that was accepted, and the next run marks them unknown, never a resend. Empty when the
    run ended normally; a send whose record was written before the interruption is not recorded again."""
    try:
        left = _still_sending(conn, left)
    except Exception:  # the database may be why the run is ending: nothing more can be recorded
        left = []
    finished, _ = _results(left)
    try:
        outcomes = _record_together(settings, conn, finished, now=now, sleep=sleep, patient=False)
    except Exception:  # _record_together has logged what was sent; the exception that ended the run goes on
        return
    for outcome in outcomes:
        _note(report, outcome)


def _still_sending(conn, left: list) -> list:
    """Those of `left` (finished sends) whose attempt the database still shows as `sending`."""
    ids = [done.key[1].log_id for done in left]
    if not ids:
        return []
    still = {row[0] for row in conn.execute(
        f"SELECT id FROM send_log WHERE status = 'sending' AND id IN ({', '.join('?' * len(ids))})", ids)}
    return [done for done in left if done.key[1].log_id in still]


def _results(dones: list) -> tuple[list, list[BaseException]]:
    """The finished sends as (item, claim, message id or SendError, refusals) for `_record_together`,
    and the unexpected errors (a fault of ours in a worker), each logged at once: something else
    may end the run before the first of them is raised."""
    finished, unexpected = [], []
    for done in dones:
        item, claim, refused = done.key
        if done.error is None or isinstance(done.error, SendError):
            finished.append((item, claim, done.error or done.value, refused))
        else:
            log.error("the send to %s ended in an unexpected error (%s: %s); the next run marks it unknown",
                      item.email, type(done.error).__name__, done.error)
            unexpected.append(done.error)
    return finished, unexpected


def _undo_unstarted(conn, withdrawn: list[tuple[_Planned, ledger.Claim, str]], *, now) -> None:
    """Undo the claims of sends that never started, when an exception is ending the run: one try
    each (inside `database.impatient`: a run being stopped does not wait out another writer)."""
    for item, claim, _ in withdrawn:
        try:
            ledger.give_back(conn, claim, now=now())
        except Exception:  # the database may be why the run is ending: the claim stays, never a resend
            log.error("%s was claimed but not sent (the run was interrupted before its turn); the next run "
                      "marks it unknown", item.email)
        else:
            log.warning("%s was not sent (the run was interrupted before its turn); it stays pending", item.email)


def _prepare_group(settings, conn, templates, todo, size: int, report: RunReport, finish, *,
                   stopped, now) -> list[tuple[_Planned, RenderedEmail, object]]:
    """The next `size` messages of `todo`, rendered and built; those that no longer can be are
    finished as failed on the way. Fewer when `todo` runs out or the run stops."""
    group: list[tuple[_Planned, RenderedEmail, object]] = []
    while len(group) < size and not stopped():
        items = list(itertools.islice(todo, size - len(group)))
        if not items:
            break
        rows = _recipient_rows(conn, [item.recipient_id for item in items])
        for item in items:
            if stopped():
                break  # the rest stay pending, as the rest of the batch does
            try:
                rendered, wire = _prepare(settings, conn, templates, item, rows.get(item.recipient_id), now=now())
            except (TemplateRenderError, PermanentSendError) as err:
                finish(_unprepared(settings, conn, report, item, err, now=now))
                continue
            group.append((item, rendered, wire))
    return group


def _recipient_rows(conn, ids: list[int]) -> dict[int, sqlite3.Row]:
    """The recipients' rows as they are now, read in one statement for a group."""
    marks = ",".join("?" * len(ids))
    return {row["id"]: row for row in conn.execute(f"SELECT * FROM recipients WHERE id IN ({marks})", ids)}


def _admitted(conn, group: list, gate: _Gate, finish, *, now) -> list:
    """The prepared messages the gates let through now, asked just before their claim (after the
    outcomes collected since they were prepared, a bounce among them); the others are finished as
    skipped, or held, and none once all sending is paused (`report.fatal_error` then says why)."""
    admitted = []
    for entry in group:
        held = gate.check(conn, entry[0], now())
        if held is True and gate.report.fatal_error:
            return []
        if held is False:
            admitted.append(entry)
        elif held is not True:
            finish(held)
    return admitted


def _claim_group(settings, conn, group, transport_name: str, *, now, claimed: list) -> tuple[list[Outcome], bool]:
    """Claim every message of `group` in one transaction: durable together, with one `fsync`.

    Each claim checks the daily limit and the recipient as a claim of its own does (it sees the
    group's earlier claims). Puts (item, wire, claim) of those claimed in `claimed` as each is made,
    inside the transaction: an interruption (SIGTERM) between its commit and the caller's next
    step finds them there to undo (before the commit, their rows went with it, and undoing them
    changes nothing); returned with them, they stayed `sending`. Returns the outcomes of the
    others (skipped or deferred), and whether the day's limit was reached.
    """
    outcomes, full = [], False
    with database.group(conn):
        tally = ledger.DayTally()  # the day's count, read once for the group
        for item, rendered, wire in group:
            claim, outcome = _claim(settings, conn, item, rendered, wire, transport_name, now=now, tally=tally)
            if claim is not None:
                claimed.append((item, wire, claim))
            elif outcome is None:
                full = True
                break
            else:
                outcomes.append(outcome)
    return outcomes, full


def _finish(report: RunReport, outcome: Outcome, streak: _Streak, on_outcome) -> None:
    """Count and tell one outcome; a fatal one, or a bad streak, stops the run."""
    _note(report, outcome)
    on_outcome(outcome)
    stop = outcome.error if outcome.status == "fatal" else streak.stop_reason(outcome)
    report.fatal_error = report.fatal_error or stop


def _recipient_zones(conn: sqlite3.Connection) -> set[str]:
    """The recipients' time zones ("" for TIMEZONE's)."""
    return {row[0] for row in conn.execute("SELECT DISTINCT timezone FROM recipients")}


def _closed_reasons(closed: dict[str, str], zones: set[str], shown: int = 3) -> str:
    """Why the recipients' zones are closed (TIMEZONE's, "", first), a few of them; TIMEZONE's alone without any."""
    reasons = [closed[zone] for zone in sorted(zones & closed.keys())] or [closed[""]]
    more = f"; {len(reasons) - shown} more zone(s)" if len(reasons) > shown else ""
    return "; ".join(reasons[:shown]) + more


def _recover(conn: sqlite3.Connection, report: RunReport, *, now: Callable[[], datetime]) -> None:
    """Attempts a killed run left in `sending` become `unknown`, unless SES already told us more."""
    report.recovered = ledger.recover_interrupted(conn, now=now())
    if report.recovered:
        log.warning("%d recipient(s) were left mid-send by an interrupted run and are now 'unknown'",
                    report.recovered)
        from .inbox_store import settle_recovered

        for line in settle_recovered(conn, now=now()):  # answers read while they were still `sending`
            log.info("inbox: %s", line)
        # SES events already stored (drained before this run) may prove some of them went out.
        from . import events

        settled = events.reconcile(conn, now=now()).reconciled
        if settled:
            log.info("%d of them settled from SES events already received", settled)


def _plan(settings, conn, transport, report: RunReport, *, now, limit,
          closed: set[str] = frozenset()) -> tuple[list[_Planned], float, dict[str, CampaignTemplates]]:
    """Today's batch (checked to render and build), the delay between its sends, and the templates.

    Empty when the day's limit is used up, or when the provider says the account may not send
    (then `report.fatal_error` says why and nothing is claimed).
    """
    counted = ledger.counted_today(conn, ledger.batch_date(now(), settings.tz))
    remaining = max(0, settings.daily_limit - counted)  # as ledger.remaining_today
    size = ledger.batch_size(remaining, limit)
    delay = settings.delay_seconds
    if not report.dry_run and size:
        try:
            size, delay = _within_provider_capacity(transport, size, delay)
        except FatalSendError as err:
            report.fatal_error = str(err)
            log.error("nothing sent: %s", err)
            return [], delay, {}
    if settings.max_send_rate and not report.dry_run:
        delay = max(delay, 1 / settings.max_send_rate)  # our own cap, below the provider's
    # Due follow-ups first: they are time-sensitive; new contacts take what is left of the limit.
    step_templates: dict[str, CampaignTemplate] = {}
    followups = (_render_followups(conn, settings, transport, report, size, step_templates, now=now(), closed=closed)
                 if size else [])
    left = size - len(followups)
    rendered = _render_sendable(conn, settings, left, report, now=now(), closed=closed) if left else _Rendered()
    rendered.templates.update(step_templates)
    batch = followups + rendered.planned
    for row, err in rendered.unusable:
        if not report.dry_run:
            ledger.mark_unsendable(conn, row["id"], str(err), now=now())
        _note(report, Outcome(now(), row["email"], "failed", error=str(err)))
    log.info("%s: %d message(s) to send now, daily limit %d, %d already counted today",
             "dry run" if report.dry_run else "run", len(batch), settings.daily_limit, counted)  # above the limit too
    return batch, delay, rendered.templates


def _prepare(settings, conn, templates: dict[str, CampaignTemplates], item: _Planned, row: sqlite3.Row | None, *,
             now: datetime):
    """Build one planned message just before it is claimed from its recipient's `row` read just
    now (None: deleted), its content rendered and its headers made again unless the row is
    unchanged since the check (`_Planned.content_for`).

    Raises:
        TemplateRenderError, PermanentSendError: the recipient or campaign changed since the check.
    """
    if row is None:
        raise PermanentSendError(f"recipient {item.email} was deleted during the run", code="Deleted")
    if item.thread is None:
        rendered, made = item.content_for(row) or (templates[item.campaign].render(row, settings), None)
        return rendered, build_wire(rendered, to=row["email"], to_name=recipient_name(row), settings=settings,
                                    now=now, attachments=templates[item.campaign].attachments(row), checked=made)
    # A follow-up answers in the thread; the files went with step 1 and are not sent again.
    rendered = sequences.render_step(conn, row, item.campaign, item.step, settings, item.thread, templates)
    return rendered, build_wire(rendered, to=row["email"], to_name=recipient_name(row), settings=settings, now=now,
                                thread=item.thread.message_ids)


def _unprepared(settings, conn, report: RunReport, item: _Planned, err: Exception, *, now) -> Outcome:
    """A message that no longer renders (its data changed during the run): nothing was claimed.

    A template error stops the run, as it would have before the first send; an address that can
    no longer be built for fails alone, as in `_plan`.
    """
    if isinstance(err, TemplateRenderError):
        report.template_errors.append(str(err))
        log.error("campaign %r changed during the run and no longer renders; stopping: %s", item.campaign, err)
        return Outcome(now(), item.email, "fatal", error=str(err), attempted=False, step=item.step)
    if not report.dry_run and item.step > 1:
        with database.transaction(conn):
            ledger.stop_sequence(conn, item.recipient_id, str(err), now=now())
    elif not report.dry_run:
        ledger.mark_unsendable(conn, item.recipient_id, str(err), now=now())
    return Outcome(now(), item.email, "failed", error=str(err), attempted=False, step=item.step)


def _note(report: RunReport, outcome: Outcome) -> None:
    """Count an outcome and write its line to the log (stdout, cron.log, LOG_FILE)."""
    report.outcomes.append(outcome)
    _count(report, outcome)
    log.info(outcome.line())


class _Streak:
    """Stops a run that keeps getting the same bad outcome, before it spoils the whole batch.

    Three time-outs in a row would otherwise turn every remaining recipient into `unknown` (each a
    decision for a person), three exhausted throttling retries keep hammering SES, and five
    identical refusals in a row (same error code) are a bad sender or header, not bad addresses.
    """

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.length = 0

    def stop_reason(self, outcome: Outcome) -> str | None:
        if outcome.status not in STREAK_LIMITS or not outcome.attempted:
            self.key, self.length = None, 0
            return None
        code = (outcome.error or "").split(":", 1)[0] if outcome.status == "failed" else ""
        key = (outcome.status, code)
        self.length = self.length + 1 if key == self.key else 1
        self.key = key
        if self.length < STREAK_LIMITS[outcome.status]:
            return None
        what = {"unknown": "got no clear answer", "pending": "were refused as temporarily impossible",
                "failed": "were refused with the same error"}[outcome.status]
        return (f"{self.length} messages in a row {what} (last: {outcome.error}); stopping so the rest of "
                "the batch stays pending. Fix the cause (network, SES account, sender), then run again"
                + ("; settle the unknown ones with `email-automation resolve`" if outcome.status == "unknown" else "")
                + ("; `email-automation retry-failed` re-queues the failed ones" if outcome.status == "failed" else ""))


def _within_provider_capacity(transport: Transport, size: int, delay: float) -> tuple[int, float]:
    """Shrink the batch to the provider's remaining quota and slow down to its send rate.

    Transports that can tell (SES's GetAccount) offer `sending_capacity()`; DAILY_LIMIT stays the
    authority, this only keeps a run from running into SES's own limits.
    """
    ask = getattr(transport, "sending_capacity", None)
    capacity = ask() if ask else None
    if capacity is None:
        return size, delay
    if capacity.remaining_24h is not None and capacity.remaining_24h < size:
        log.warning("SES allows %d more message(s) in its 24-hour window: this run sends at most that",
                    capacity.remaining_24h)
        size = capacity.remaining_24h
    if capacity.min_interval > delay:
        log.warning("DELAY_SECONDS %g is faster than SES's send rate: waiting %g s between sends",
                    delay, capacity.min_interval)
        delay = capacity.min_interval
    return size, delay


def _count(report: RunReport, outcome: Outcome) -> None:
    key = {"sent": "sent", "failed": "failed", "unknown": "unknown", "pending": "deferred", "skipped": "skipped",
           "dry_run": "previewed", "fatal": "deferred"}[outcome.status]
    setattr(report, key, getattr(report, key) + 1)
    per_step = report.steps.setdefault(str(outcome.step), {})
    per_step[key] = per_step.get(key, 0) + 1


def _preview_one(settings, conn, transport, item: _Planned, message, *, now, sleep) -> Outcome:
    rendered, wire = message
    message_id = transport.send(wire, tags={"campaign": item.campaign, "attempt_id": "dry-run"})
    ledger.log_dry_run(conn, item.recipient_id, now=now(), tz=settings.tz, subject=rendered.subject,
                       message_id=message_id, transport=transport.name)
    return Outcome(now(), item.email, "dry_run", message_id, step=item.step)


def _retry_wait(stopping: StopFlag, sleep) -> Callable[[float], object]:
    """The wait before a retry: it ends as soon as the run stops (tests inject their own sleep)."""
    return (lambda seconds: stopping.wait(seconds)) if sleep is time.sleep else sleep


class _InTurn:
    """The one-at-a-time path's sends, each on the worker of a one-transport `ConcurrentSender`.

    A finished send stays in the pool until it is recorded, for `_wind_down`, as in `_send_concurrently`.
    (A claim caught by an interruption before its hand-over stays `sending`: `unknown`, never sent twice.)"""

    def __init__(self, transport: Transport, sleep) -> None:
        self.pool: ConcurrentSender[tuple[_Planned, ledger.Claim, list[SendError]]] = ConcurrentSender([transport])
        self.stopping = StopFlag()  # set once the run stops: no more retries of a refused send
        self.retry_wait = _retry_wait(self.stopping, sleep)

    def send_one(self, settings, conn, transport, item: _Planned, message, *, now, sleep) -> Outcome | None:
        rendered, wire = message
        claim, outcome = _claim(settings, conn, item, rendered, wire, transport.name, now=now)
        if claim is None:
            return outcome
        _hand_over(self.pool, item, claim, wire, self.retry_wait, self.stopping)
        dones = self.pool.done(block=True)
        finished, unexpected = _results(dones)
        if unexpected:
            self.pool.acknowledge(dones)  # logged by _results; the next run marks it unknown
            raise unexpected[0]
        [(_, _, result, refused)] = finished
        outcome = _record(settings, conn, item, claim, result, refused, now=now, sleep=sleep)
        self.pool.acknowledge(dones)
        return outcome


# The transports that deliver the Message-ID header we write: SES puts its own in its place
# (https://docs.aws.amazon.com/ses/latest/dg/header-fields.html), known once it answers.
_OWN_MESSAGE_ID = frozenset({"smtp"})


def _claim(settings, conn, item: _Planned, rendered: RenderedEmail, wire, transport_name: str, *,
           now, tally: ledger.DayTally | None = None) -> tuple[ledger.Claim | None, Outcome | None]:
    """The claim, committed durably (synchronous=FULL) before the message may leave; or, without
    one, the outcome to report (None as well: the daily limit was reached by an overlapping writer)."""
    claim = ledger.claim(conn, item.recipient_id, now=now(), tz=settings.tz, daily_limit=settings.daily_limit,
                         subject=rendered.subject, transport=transport_name,
                         stop_company=settings.stop_company_on_reply, template=rendered.template,
                         subject_variant=rendered.subject_variant, step=item.step,
                         companies=politeness.Caps.from_settings(settings), tally=tally,
                         message_id=wire.message_id if transport_name in _OWN_MESSAGE_ID else None)
    if isinstance(claim, ledger.Held):  # another run took this company's place since the batch was picked
        return None, Outcome(now(), item.email, "pending", error=claim.reason, attempted=False, step=item.step)
    if claim is not None:
        return claim, None
    row = conn.execute(
        "SELECT r.status, r.step, r.last_error, r.sequence_stopped, c.status AS campaign_status FROM recipients r"
        " JOIN campaigns c ON c.id = r.campaign_id WHERE r.id = ?", (item.recipient_id,)).fetchone()
    waiting = row is not None and (row["sequence_stopped"] is None or item.step == 1) and (
        (row["status"] == "pending" and row["step"] == item.step)
        or (row["status"] == "sent" and row["step"] == item.step - 1))
    if not waiting:
        error = ((row["sequence_stopped"] if item.step > 1 else None) or row["last_error"]) if row else None
        return None, Outcome(now(), item.email, "skipped", error=error, attempted=False, step=item.step)
    if row["campaign_status"] != "active":
        return None, Outcome(now(), item.email, "pending", error=f"campaign {item.campaign!r} was paused",
                             attempted=False, step=item.step)
    return None, None


def _hand_over(pool: ConcurrentSender, item: _Planned, claim: ledger.Claim, wire, retry_wait, stopping: StopFlag) -> None:
    """Give a claimed message to `pool`, keyed (item, claim, its refusals) as `_results` reads it."""
    refused: list[SendError] = []
    tags = _tags(item, claim)
    pool.submit((item, claim, refused),
                lambda transport: _send_with_retries(transport, wire, tags, retry_wait, refused, stopping=stopping))


def _tags(item: _Planned, claim: ledger.Claim) -> dict[str, str]:
    return {"campaign": item.campaign, "attempt_id": claim.attempt_id}


def _record(settings, conn, item: _Planned, claim: ledger.Claim, result: str | SendError,
            refused: list[SendError], *, now, sleep) -> Outcome:
    """Record a claimed send's outcome (`result` is the message id, or the error the send raised).

    Not flushed to disk at once (see `database.deferred_sync`): a lost record leaves the claim in
    `sending`, which the next run makes `unknown`, never a second send. A hard bounce is: it keeps
    the address from being mailed again.
    """
    return _record_together(settings, conn, [(item, claim, result, refused)], now=now, sleep=sleep)[0]


def _record_together(settings, conn, finished: list[tuple[_Planned, ledger.Claim, str | SendError, list[SendError]]],
                     *, now, sleep, patient: bool = True) -> list[Outcome]:
    """Record the outcomes of the sends that finished together in one transaction (as `_record` does
    each): one commit instead of one per message; the sends that went out in two statements for
    all of them, each failure a savepoint of its own. `patient`: wait out another writer (see
    `ledger.Patience`), else one try."""
    if not finished:
        return []

    def write_all() -> list[Outcome]:
        with database.group(conn):
            ledger.record_sent_many(conn, [(claim, result, _refusals_note(refused)) for _, claim, result, refused
                                           in finished if not isinstance(result, SendError)], now=now())
            return [_write_failure(settings, conn, *entry, now=now, sleep=sleep) if isinstance(entry[2], SendError)
                    else Outcome(now(), entry[0].email, "sent", entry[2], step=entry[0].step) for entry in finished]

    try:
        with _record_sync(conn, [result for _, _, result, _ in finished]):
            return (ledger.Patience(now, sleep).run(write_all, _what_is_recorded(finished)) if patient
                    else write_all())
    except BaseException:  # a database error, or an interruption that rolled the group back
        # The messages are out; say so where a person will look, since the database could not.
        for item, _, result, _ in finished:
            if not isinstance(result, SendError):
                log.error("%s was accepted as %s but recording it failed; the next run marks it unknown",
                          item.email, result)
        raise


def _what_is_recorded(finished: list[tuple[_Planned, ledger.Claim, str | SendError, list[SendError]]]) -> str:
    """What a wait for another writer says it is waiting to record."""
    if len(finished) > 1:
        return f"the outcomes of {len(finished)} sends"
    item, _, result, _ = finished[0]
    return f"the outcome of the send to {item.email}" if isinstance(result, SendError) else \
        f"that {item.email} was sent as {result}"


def _record_sync(conn, results: list[str | SendError]):
    """Outcome records skip their own `fsync` (`database.deferred_sync`), unless one is a hard bounce."""
    hard = any(isinstance(result, PermanentSendError) and bounces.mailbox_gone(result.mailbox_status)
               for result in results)
    return contextlib.nullcontext() if hard else database.deferred_sync(conn)


def _write_failure(settings, conn, item: _Planned, claim: ledger.Claim, result: SendError,
                   refused: list[SendError], *, now, sleep) -> Outcome:
    status = ledger.record_failure(conn, claim, result, now=now(), max_attempts=settings.max_attempts,
                                   patience=ledger.Patience(now, sleep), earlier=refused)
    if isinstance(result, PermanentSendError) and bounces.mailbox_gone(result.mailbox_status):
        # A 5.1.x refusal is a hard bounce told at once: count it and never mail the address again.
        bounces.record_bounce(conn, item.email, kind=bounces.HARD, source="smtp", now=now(),
                              attempt_id=claim.attempt_id, detail=str(result))
    shown = "fatal" if isinstance(result, FatalSendError) else status
    return Outcome(now(), item.email, shown, error=f"{result.code}: {result}" if result.code else str(result),
                   step=item.step)


def _refusals_note(refused: list[SendError]) -> str | None:
    if not refused:
        return None
    last = refused[-1]
    return f"sent after {len(refused)} refused tr{'y' if len(refused) == 1 else 'ies'} (last: {last.code + ': ' if last.code else ''}{last})"


def _send_with_retries(transport: Transport, message, tags: dict[str, str], sleep, refused: list[SendError], *,
                       stopping: StopFlag) -> str:
    """Retry only what the provider definitely refused; anything ambiguous propagates at once.

    Each refusal that is retried is appended to `refused`, so the log can say what happened. Once
    `stopping` is set (the run is ending), the last refusal stands instead of another try.
    """
    try:  # the usual case, without the retry machinery (its per-call state costs more than building the message)
        return transport.send(message, tags=tags)
    except TransientSendError as err:
        first: TransientSendError | None = err
    from tenacity import (Retrying, retry_if_exception_type, stop_after_attempt, stop_when_event_set,  # at the first retry
                          wait_exponential)

    def pause(seconds: float) -> None:
        sleep(seconds)
        if stopping.is_set():  # the run ended meanwhile
            raise refused.pop()  # the refusal noted before this wait stands, as the outcome

    for attempt in Retrying(
        retry=retry_if_exception_type(TransientSendError),
        stop=stop_after_attempt(TRANSIENT_RETRIES + 1) | stop_when_event_set(stopping),
        wait=wait_exponential(multiplier=2, min=2, max=60),
        sleep=pause,
        before_sleep=lambda state: refused.append(state.outcome.exception()),
        reraise=True,
    ):
        with attempt:
            if first is not None:  # the refusal above, counted and waited on as tenacity's first attempt
                refusal, first = first, None
                raise refusal
            return transport.send(message, tags=tags)
    raise AssertionError("unreachable")  # pragma: no cover
