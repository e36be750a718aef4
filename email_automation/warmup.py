"""WARMUP_SCHEDULE: a new domain or identity ramps its daily volume up instead of starting at full.

Mailbox providers judge a sender they have not seen before by its first days: a sudden volume
from a new domain looks like a spammer's, while a gentle ramp builds a reputation
(https://docs.aws.amazon.com/ses/latest/dg/dedicated-ip-warming.html describes the same for
IPs). With `WARMUP_SCHEDULE=20,40,60,80` the first day with sends allows at most 20, the second
40, and so on; from the day after the schedule, DAILY_LIMIT alone applies. Days are counted by
days that had sends, so a pause does not skip steps of the ramp.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from .database import COUNTED_LOG_STATUSES

DOCTOR_NEW_SENDER_DAYS = 14  # fewer sending days than this: still a new sender


def parse_steps(text: str) -> tuple[int, ...]:
    """`20,40,60` -> (20, 40, 60). Raises ValueError for anything but whole numbers >= 1."""
    if not text.strip():
        return ()
    steps = tuple(int(part) for part in text.replace(" ", "").split(","))
    if any(step < 1 for step in steps):
        raise ValueError("warm-up steps must be >= 1")
    return steps


def sending_days_before(conn: sqlite3.Connection, day: str) -> int:
    """Days before `day` on which something was (maybe) sent."""
    marks = ",".join("?" * len(COUNTED_LOG_STATUSES))
    return conn.execute(
        f"SELECT count(DISTINCT batch_date) FROM send_log WHERE batch_date < ? AND status IN ({marks})",
        (day, *COUNTED_LOG_STATUSES),
    ).fetchone()[0]


@dataclass(frozen=True)
class DayLimit:
    limit: int
    note: str | None  # why it is below DAILY_LIMIT, for the run's log and `status`


def limit_for(conn: sqlite3.Connection, daily_limit: int, schedule: str, day: str) -> DayLimit:
    """Today's limit: DAILY_LIMIT, capped by the warm-up step of this sending day."""
    steps = parse_steps(schedule)
    index = sending_days_before(conn, day) if steps else 0
    if index >= len(steps) or steps[index] >= daily_limit:
        return DayLimit(daily_limit, None)
    return DayLimit(steps[index], f"warm-up day {index + 1} of {len(steps)} (WARMUP_SCHEDULE): "
                                  f"at most {steps[index]} today instead of DAILY_LIMIT {daily_limit}")


def suggested_ramp(daily_limit: int, start: int = 20) -> str:
    """A WARMUP_SCHEDULE that doubles from `start` up to DAILY_LIMIT, e.g. 20,40,80,160."""
    steps, step = [], start
    while step < daily_limit:
        steps.append(step)
        step *= 2
    return ",".join(map(str, steps))
