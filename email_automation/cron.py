"""The crontab line that runs this install every day, and installing it idempotently.

Our line ends with a marker comment naming the working directory, so installing again replaces
it and `remove` deletes it, while every other line of the user's crontab is left as it was.
No `flock -n` wrapper: `run` takes its own lock (locking.py), so an overlapping start exits 0.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from .errors import EmailAutomationError

MARKER_PREFIX = "# email-automation:"
DEFAULT_TIME = "08:00"
ENV_FILE_NAME = "env.sh"
LOG_FILE_NAME = "cron.log"

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class CronError(EmailAutomationError):
    """The crontab cannot be read or written, or a schedule value is invalid."""


class InvalidTimeError(CronError):
    """A --time value that is not HH:MM."""

    exit_code = 2


@dataclass(frozen=True)
class InstallResult:
    """What `install` did: "added", "replaced" or "unchanged"."""

    action: str
    crontab: str


def parse_time(value: str) -> tuple[int, int]:
    """(hour, minute) of "HH:MM".

    Raises:
        InvalidTimeError: not a 24-hour time between 00:00 and 23:59.
    """
    match = _TIME.match(value.strip())
    if not match:
        raise InvalidTimeError(f"invalid time {value!r}: expected HH:MM between 00:00 and 23:59, such as 08:00")
    return int(match.group(1)), int(match.group(2))


def marker_for(workdir: Path) -> str:
    """The trailing comment that identifies this install's line."""
    return f"{MARKER_PREFIX}{workdir}"


def default_command() -> list[str]:
    """The venv's console script beside sys.executable, else `python -m email_automation`.

    sys.executable is not resolved: in a venv it is a symlink, and resolving it would leave the venv.
    """
    python = Path(sys.executable).absolute()
    script = python.parent / "email-automation"
    if script.is_file():
        return [str(script)]
    return [str(python), "-m", "email_automation"]


def cron_line(
    *,
    time: str = DEFAULT_TIME,
    workdir: Path,
    command: list[str],
    env_file: Path | None,
    log_file: Path,
    hourly: bool = False,
) -> str:
    """One crontab line: at `time` every day (with `hourly`, at its minute every hour), cd to
    `workdir`, source `env_file`, run, append output.

    Pure: paths are taken as given (absolute ones are expected), nothing is checked on disk.
    Cron runs the line with /bin/sh, so the env file is sourced with `.`, never `source`.
    """
    hour, minute = parse_time(time)
    steps = [f"cd {shlex.quote(str(workdir))}"]
    if env_file is not None:
        steps.append(f". {_env_ref(env_file, workdir)}")
    steps.append(" ".join(shlex.quote(part) for part in [*command, "run"]))
    # Braces so that a failing cd or env file is logged too, not mailed to a mailbox nobody reads.
    shell = "{ " + " && ".join(steps) + "; } >> " + shlex.quote(str(log_file)) + " 2>&1"
    return _cron_escape(f"{minute} {'*' if hourly else hour} * * * {shell} {marker_for(workdir)}")


def _env_ref(env_file: Path, workdir: Path) -> str:
    # `. ./env.sh` (with the slash) reads the file in the current directory; `. env.sh` would search PATH.
    if env_file.parent == workdir:
        return shlex.quote(f"./{env_file.name}")
    return shlex.quote(str(env_file))


def _cron_escape(line: str) -> str:
    # crontab(5): an unescaped % ends the command and starts its standard input.
    return line.replace("%", "\\%")


def _is_ours(line: str, marker: str) -> bool:
    return line.rstrip().endswith(_cron_escape(marker))


def clock_note(time: str, user_tz: tzinfo | None, now: datetime) -> str:
    """Cron reads the server's clock; say what `time` is there, and in TIMEZONE when that differs.

    `now` must be aware, in the server's zone (`datetime.now().astimezone()`).
    """
    hour, minute = parse_time(time)
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    note = f"cron uses this server's clock ({now.tzname()}, now {now:%H:%M})"
    if user_tz is None:
        return note + "."
    theirs = at.astimezone(user_tz)
    if theirs.utcoffset() == at.utcoffset():
        return note + "."
    wanted = at.replace(tzinfo=user_tz).astimezone(now.tzinfo)
    return (f"{note}: {time} here is {theirs:%H:%M} in {user_tz}. For {time} there, use "
            f"--time {wanted:%H:%M} (it moves with daylight saving time), or set the server's zone: "
            f"sudo timedatectl set-timezone {user_tz}")


def read_crontab(crontab_cmd: str = "crontab") -> str:
    """The current user's crontab; a user without one has an empty crontab.

    Raises:
        CronError: the crontab command is missing or fails.
    """
    result = _crontab([crontab_cmd, "-l"])
    if result.returncode == 0:
        return result.stdout
    if "no crontab for" in result.stderr.lower():
        return ""
    raise CronError(f"`{crontab_cmd} -l` failed: {result.stderr.strip() or f'exit code {result.returncode}'}")


def write_crontab(text: str, crontab_cmd: str = "crontab") -> None:
    """Replace the current user's crontab with `text`."""
    if text and not text.endswith("\n"):
        text += "\n"  # cron ignores a last line without a newline
    result = _crontab([crontab_cmd, "-"], text)
    if result.returncode != 0:
        raise CronError(f"`{crontab_cmd} -` failed: {result.stderr.strip() or f'exit code {result.returncode}'}")


def _crontab(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise CronError(f"`{' '.join(argv)}` did not answer within 30 s; nothing was changed") from None
    except FileNotFoundError:
        raise CronError(
            f"no `{argv[0]}` command: install cron (sudo apt-get install cron), "
            "or use the systemd timer in deploy/"
        ) from None


def install(line: str, marker: str, crontab_cmd: str = "crontab") -> InstallResult:
    """Put `line` in the crontab in place of any line carrying `marker`; other lines are kept."""
    current = read_crontab(crontab_cmd)
    lines = current.splitlines()
    ours = [i for i, existing in enumerate(lines) if _is_ours(existing, marker)]
    if [lines[i] for i in ours] == [line]:
        return InstallResult("unchanged", current)
    kept = [existing for existing in lines if not _is_ours(existing, marker)]
    position = ours[0] if ours else len(kept)
    kept.insert(position, line)
    text = "\n".join(kept) + "\n"
    write_crontab(text, crontab_cmd)
    return InstallResult("replaced" if ours else "added", text)


def remove(marker: str, crontab_cmd: str = "crontab") -> int:
    """Delete the lines carrying `marker`; returns how many there were."""
    lines = read_crontab(crontab_cmd).splitlines()
    kept = [line for line in lines if not _is_ours(line, marker)]
    removed = len(lines) - len(kept)
    if removed:
        write_crontab("\n".join(kept) + "\n" if kept else "", crontab_cmd)
    return removed
