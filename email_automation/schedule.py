"""Send windows: the days of the week and the hours of the day a real run may send (pure functions).

SEND_DAYS is a list of days and ranges (`mon-fri`, `mon,wed,fri`, `sun-thu`); SEND_HOURS one
range `HH:MM-HH:MM` (end excluded, `24:00` allowed), in each recipient's time zone (the CSV's
`timezone` column) or else the user's (TIMEZONE).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(text: str) -> frozenset[int]:
    """Weekday numbers (Monday = 0) from `mon-fri` or `mon,wed,fri`; a range may wrap (`fri-mon`).

    Raises:
        ValueError: saying which part is not a day name.
    """
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        for name in (first, last or first):
            if name[:3] not in DAY_NAMES or len(name) < 3:
                raise ValueError(f"{name!r} is not a day: use mon, tue, wed, thu, fri, sat, sun")
        start, end = DAY_NAMES.index(first[:3]), DAY_NAMES.index((last or first)[:3])
        days.update((start + i) % 7 for i in range((end - start) % 7 + 1))
    if not days:
        raise ValueError("no day given: use for example mon-fri")
    return frozenset(days)


def parse_hours(text: str) -> tuple[int, int]:
    """(start, end) in minutes after midnight from `08:00-17:00`; the end is excluded.

    Raises:
        ValueError: a malformed range, or an end not after the start.
    """
    start, sep, end = text.replace(" ", "").partition("-")
    if not sep:
        raise ValueError("write the hours as HH:MM-HH:MM, for example 08:00-17:00")
    first, last = _minutes(start), _minutes(end)
    if last <= first:
        raise ValueError(f"the end {end} is not after the start {start}")
    return first, last


def _minutes(text: str) -> int:
    hours, sep, minutes = text.partition(":")
    if not (hours.isdigit() and (not sep or minutes.isdigit())):
        raise ValueError(f"{text!r} is not a time written HH:MM")
    value = int(hours) * 60 + (int(minutes) if sep else 0)
    if (sep and int(minutes) > 59) or value > 24 * 60:
        raise ValueError(f"{text!r} is not a time of day")
    return value


def window_problem(moment: datetime, tz: tzinfo, days: frozenset[int], hours: tuple[int, int]) -> str | None:
    """Why `moment` is outside the send window in `tz`, or None when a run may send."""
    local = moment.astimezone(tz)
    if local.weekday() not in days:
        return f"{DAY_NAMES[local.weekday()]} is not one of SEND_DAYS"
    minute = local.hour * 60 + local.minute
    if not hours[0] <= minute < hours[1]:
        return f"{local:%H:%M} is outside SEND_HOURS"
    return None


def closed_zones(zones: Iterable[str], moment: datetime, default_tz: tzinfo, days: frozenset[int],
                 hours: tuple[int, int]) -> dict[str, str]:
    """{zone: why} for the recipients' zones whose window is closed at `moment`; "" is TIMEZONE's."""
    closed = {}
    for zone in set(zones) | {""}:
        problem = window_problem(moment, ZoneInfo(zone) if zone else default_tz, days, hours)
        if problem is not None:
            closed[zone] = problem if not zone else f"{problem} in {zone}"
    return closed
