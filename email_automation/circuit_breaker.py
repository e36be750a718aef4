"""Stop sending before SES does: bounce and complaint rates checked before every send.

SES reviews an account at a 5% bounce or 0.1% complaint rate and may pause it at 10% / 0.5%
(https://docs.aws.amazon.com/ses/latest/dg/reputationdashboard-messages.html); one bad list gets
there within a day. So before each claim the run asks `check`: over a rolling window (default 7
days), per campaign and overall, hard bounces and complaints against sends. Crossing a rate *and*
its minimum count pauses the campaign (or, overall, all sending) with a reason naming the rate,
the window and the addresses. Nothing lifts a pause but `resume`, and a lifted pause restarts the
count: the bounces that tripped it are not held against the list the user has since cleaned.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from .database import iso, transaction

ALL = "*"  # the scope of a pause of all sending
SHOWN_ADDRESSES = 5


@dataclass(frozen=True)
class Thresholds:
    bounce_rate: float
    bounce_min: int
    complaint_rate: float
    complaint_min: int
    window: timedelta

    @classmethod
    def from_settings(cls, settings) -> Thresholds:
        return cls(settings.bounce_pause_rate, settings.bounce_pause_min, settings.complaint_pause_rate,
                   settings.complaint_pause_min, timedelta(days=settings.pause_window_days))


@dataclass(frozen=True)
class Counts:
    """Sends and bad news in one scope since a moment."""

    sends: int
    bounced: tuple[str, ...]  # one address per hard bounce (an address may repeat)
    complained: tuple[str, ...]


@dataclass(frozen=True)
class Pause:
    scope: str  # a campaign name, or ALL
    reason: str
    paused_at: str

    @property
    def what(self) -> str:
        return "all sending" if self.scope == ALL else f"campaign {self.scope!r}"

    def line(self) -> str:
        """The pause as users read it, with the one command that lifts it."""
        lift = "email-automation resume --all" if self.scope == ALL else f"email-automation resume {self.scope}"
        return f"{self.what} paused by the circuit breaker since {self.paused_at}: {self.reason}. Once the cause is fixed: `{lift}`"


# --- pure ---------------------------------------------------------------------------------------

def _percent(rate: float) -> str:
    return f"{rate * 100:.4g}%"


def trip_reason(counts: Counts, t: Thresholds, *, days: int) -> str | None:
    """Why these counts must stop sending, or None. A rate trips only with its minimum count, so
    one bounce among a new user's first ten sends does not stop them, but three do."""
    for label, found, rate, minimum in (("complaint", counts.complained, t.complaint_rate, t.complaint_min),
                                        ("bounce", counts.bounced, t.bounce_rate, t.bounce_min)):
        actual = len(found) / counts.sends if counts.sends else 1.0
        if len(found) >= minimum and actual >= rate:
            distinct = list(dict.fromkeys(found))
            shown = ", ".join(distinct[:SHOWN_ADDRESSES])
            more = f" and {len(distinct) - SHOWN_ADDRESSES} more" if len(distinct) > SHOWN_ADDRESSES else ""
            return (f"{label} rate {_percent(actual)} ({len(found)} of {counts.sends} sends) over the last {days} "
                    f"day(s) reached {label.upper()}_PAUSE_RATE {_percent(rate)} (minimum {minimum}): {shown}{more}")
    return None


# --- queries ------------------------------------------------------------------------------------

# The window's sends, read through send_log's attempted_at index: a window is days, a campaign's
# sends are its whole history, and the planner chose to walk those (1.2 s for a campaign of a
# million sends, against 6 ms). CROSS JOIN keeps send_log the outer loop
# (https://www.sqlite.org/optoverview.html#manual_control_of_join_order_using_cross_join).
WINDOW_SENDS_SQL = ("SELECT count(*) FROM send_log l CROSS JOIN recipients r ON r.id = l.recipient_id"
                    " WHERE l.attempted_at > ? AND l.status IN ('sent', 'unknown')")


def window_counts(conn: sqlite3.Connection, *, since: datetime, campaign: str | None = None) -> Counts:
    """Sends (sent or maybe sent, plus SMTP refusals that were bounces) and hard bounces and
    complaints after `since` (each send's counted once, however many reported it), for one campaign or all."""
    start = iso(since)
    only = "" if campaign is None else " AND {} = (SELECT id FROM campaigns WHERE name = ?)"
    args = [start] if campaign is None else [start, campaign]
    sent = conn.execute(WINDOW_SENDS_SQL + only.format("r.campaign_id"), args).fetchone()[0]
    # One row per send and kind: SES's event and the bounce SES forwards to the inbox are two
    # reports of one bounce (email feedback forwarding is on unless turned off:
    # https://docs.aws.amazon.com/ses/latest/APIReference/API_SetIdentityFeedbackForwardingEnabled.html).
    rows = conn.execute(
        "SELECT kind, email, source FROM bounces WHERE at > ? AND kind IN ('hard', 'complaint')"
        + only.format("campaign_id") + " GROUP BY kind, COALESCE(attempt_id, dedupe_key) ORDER BY min(at), min(id)",
        args,
    ).fetchall()
    refused = sum(1 for kind, _, source in rows if kind == "hard" and source == "smtp")
    return Counts(sent + refused, tuple(e for k, e, _ in rows if k == "hard"), tuple(e for k, e, _ in rows if k == "complaint"))


def change_marker(conn: sqlite3.Connection) -> tuple:
    """What changes whenever a rate may have climbed, short of old sends leaving the window: a
    bounce or complaint stored (ids only grow: none is deleted), a pause opened, or one lifted
    (which restarts its count). Three lookups on indexes, against two scans of the window's sends."""
    return conn.execute(
        "SELECT (SELECT max(id) FROM bounces), (SELECT max(id) FROM sending_pauses),"
        " (SELECT max(lifted_at) FROM sending_pauses)"
    ).fetchone()


def active_pause(conn: sqlite3.Connection, scope: str) -> Pause | None:
    row = conn.execute(
        "SELECT scope, reason, paused_at FROM sending_pauses WHERE scope = ? AND lifted_at IS NULL ORDER BY id LIMIT 1",
        (scope,),
    ).fetchone()
    return Pause(*row) if row else None


def open_pauses(conn: sqlite3.Connection) -> list[Pause]:
    """Every pause not yet lifted, all sending first: for `status`, the dashboard and the summary."""
    rows = conn.execute(
        "SELECT scope, reason, paused_at FROM sending_pauses WHERE lifted_at IS NULL"
        f" ORDER BY scope != '{ALL}', id"
    ).fetchall()
    return [Pause(*row) for row in rows]


def _count_from(conn: sqlite3.Connection, scope: str, now: datetime, window: timedelta) -> datetime:
    """The window's start, or the last `resume` of this scope (or of all sending) if later."""
    lifted = conn.execute(
        "SELECT max(lifted_at) FROM sending_pauses WHERE scope IN (?, ?)", (scope, ALL)
    ).fetchone()[0]
    start = now - window
    return max(start, datetime.fromisoformat(lifted)) if lifted else start


# --- the check and the lift ---------------------------------------------------------------------

def check(conn: sqlite3.Connection, thresholds: Thresholds, campaign: str, *, now: datetime) -> Pause | None:
    """The pause that stops a send to `campaign` now, opening one if the rates call for it.

    All sending is looked at first, then the campaign. Opening a campaign pause also pauses the
    campaign itself, so `status`, `preview` and the claim all see it.
    """
    with transaction(conn):
        for scope in (ALL, campaign):
            pause = active_pause(conn, scope) or _trip(conn, thresholds, scope, now)
            if pause:
                return pause
    return None


def would_stop(conn: sqlite3.Connection, thresholds: Thresholds, scope: str, *, now: datetime) -> str | None:
    """Why a send in `scope` started now would be stopped: its open pause, or the one `check`
    would open at that send. Read-only, for `run --plan`, which must not open a pause itself."""
    pause = active_pause(conn, scope)
    if pause:
        return pause.line()
    counts = window_counts(conn, since=_count_from(conn, scope, now, thresholds.window),
                           campaign=None if scope == ALL else scope)
    reason = trip_reason(counts, thresholds, days=thresholds.window.days)
    if reason is None:
        return None
    return f"{Pause(scope, reason, '').what} would be paused by the circuit breaker at the first send: {reason}"


def _trip(conn: sqlite3.Connection, t: Thresholds, scope: str, now: datetime) -> Pause | None:
    since = _count_from(conn, scope, now, t.window)
    counts = window_counts(conn, since=since, campaign=None if scope == ALL else scope)
    reason = trip_reason(counts, t, days=t.window.days)
    if reason is None:
        return None
    at = iso(now)
    conn.execute("INSERT INTO sending_pauses (scope, reason, paused_at) VALUES (?, ?, ?)", (scope, reason, at))
    if scope != ALL:
        conn.execute("UPDATE campaigns SET status = 'paused' WHERE name = ?", (scope,))
    conn.execute("INSERT INTO admin_log (at, actor, action, target, detail) VALUES (?, 'circuit-breaker', 'pause', ?, ?)",
                 (at, scope, reason))
    return Pause(scope, reason, at)


def lift_in_transaction(conn: sqlite3.Connection, scope: str, *, actor: str, now: datetime) -> int:
    """Lift the open pauses of a scope inside the caller's transaction; returns how many."""
    return conn.execute(
        "UPDATE sending_pauses SET lifted_at = ?, lifted_by = ? WHERE scope = ? AND lifted_at IS NULL",
        (iso(now), actor, scope),
    ).rowcount


def resume_all(conn: sqlite3.Connection, *, actor: str = "cli", now: datetime) -> int:
    """Lift a pause of all sending; returns how many pauses were lifted (0: none was open)."""
    with transaction(conn):
        lifted = lift_in_transaction(conn, ALL, actor=actor, now=now)
        if lifted:
            conn.execute("INSERT INTO admin_log (at, actor, action, target, detail) VALUES (?, ?, 'resume', ?, '')",
                         (iso(now), actor, ALL))
    return lifted
