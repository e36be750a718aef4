"""One run at a time, per database.

An flock on a file beside the database: the kernel drops it when the process dies (even by
SIGKILL), so a crashed run never leaves a stale lock behind (flock(2)). Does not work on NFS,
like WAL. What can block the next runs is a *hung* run that still lives and holds the lock: the
lock file records the holder's pid, host and start time, so the next run can say which process
it is, and, once that run is older than any run can take, say it is hung and exit non-zero (so
cron mails it). The lock is never taken over and the holder never killed automatically: a pid
may have been reused, and only a person should stop a process that may be mid-send. Once that
process is stopped, the next run marks what it was sending `unknown`, so nothing goes out twice.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .errors import EmailAutomationError


class RunLockedError(EmailAutomationError):
    """Another run holds the lock; not a failure, so cron sees exit code 0."""

    exit_code = 0


class HungRunError(RunLockedError):
    """The run holding the lock has lasted longer than any run can: a person must look (exit 3)."""

    exit_code = 3


@dataclass(frozen=True)
class LockHolder:
    """Who holds the lock, as recorded in the lock file ("?" parts when unreadable)."""

    pid: str
    host: str
    started: datetime | None

    @classmethod
    def parse(cls, text: str) -> LockHolder:
        """`pid host started-iso`; an older version wrote the pid alone."""
        parts = text.split()
        started = None
        if len(parts) >= 3:
            try:
                started = datetime.fromisoformat(parts[2])
            except ValueError:
                started = None
        return cls(parts[0] if parts else "?", parts[1] if len(parts) >= 2 else "?", started)

    def describe(self) -> str:
        where = f"pid {self.pid}" + ("" if self.host in ("?", socket.gethostname()) else f" on {self.host}")
        return where + (f", started {self.started:%Y-%m-%d %H:%M:%S %Z}" if self.started else "")


def lock_path(db_path: str | Path) -> Path:
    """Beside the database's real file, so a path through a symlink finds the same lock."""
    return Path(f"{Path(db_path).resolve()}.lock")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@contextmanager
def run_lock(db_path: str | Path, *, now: Callable[[], datetime] = _utc_now,
             max_duration: timedelta | None = None) -> Iterator[None]:
    """Hold the run lock for the duration of the block, or raise at once.

    Raises:
        RunLockedError: another run holds the lock (exit 0: overlapping cron starts are normal).
        HungRunError: the holder started more than `max_duration` ago (exit 3).
    """
    path = lock_path(db_path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _locked_error(path, LockHolder.parse(os.pread(fd, 200, 0).decode(errors="replace")),
                                now(), max_duration) from None
        os.ftruncate(fd, 0)
        started = now().astimezone(timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {started}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _locked_error(path: Path, holder: LockHolder, now: datetime, max_duration: timedelta | None) -> RunLockedError:
    if holder.started is None or max_duration is None or now - holder.started <= max_duration:
        return RunLockedError(f"another run ({holder.describe()}) holds the lock {path}; nothing to do")
    hours = (now - holder.started).total_seconds() / 3600
    return HungRunError(
        f"another run ({holder.describe()}) has held the lock {path} for {hours:.1f} h, longer than a run "
        f"can take ({max_duration.total_seconds() / 3600:.1f} h): it is probably hung, and no run can send "
        f"until it ends. Check it with `ps -p {holder.pid}`, stop it with `kill {holder.pid}` (`kill -9 {holder.pid}` "
        "if it does not end); the next run then marks a message it could not record as unknown, so nothing is sent "
        "twice")
