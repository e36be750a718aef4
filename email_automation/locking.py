"""One run at a time, per database.

An flock on a file beside the database: the kernel drops it when the process dies (even by
SIGKILL), so a crashed run never leaves a stale lock behind. Does not work on NFS, like WAL.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import EmailAutomationError


class RunLockedError(EmailAutomationError):
    """Another run holds the lock; not a failure, so cron sees exit code 0."""

    exit_code = 0


def lock_path(db_path: str | Path) -> Path:
    """Beside the database's real file, so a path through a symlink finds the same lock."""
    return Path(f"{Path(db_path).resolve()}.lock")


@contextmanager
def run_lock(db_path: str | Path) -> Iterator[None]:
    """Hold the run lock for the duration of the block, or raise RunLockedError at once."""
    path = lock_path(db_path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            raise RunLockedError(f"another run (pid {holder}) holds {path}; nothing to do") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
