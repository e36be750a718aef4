"""Files the user names for the tool to write (rejects, previews, logs): never one of its databases.

A mistyped path must not replace or append to the send ledger: the ledger is what keeps anyone
from being mailed twice.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

# The first 16 bytes of every SQLite database file (https://www.sqlite.org/fileformat.html).
SQLITE_HEADER = b"SQLite format 3\x00"
# SQLite's files beside a database (https://www.sqlite.org/tempfiles.html).
DATABASE_COMPANIONS = ("-wal", "-shm", "-journal")


def is_database_file(path: str | Path) -> bool:
    """Whether `path` is an SQLite database (this tool's, a backup, any) or one of its companion
    files: an existing one, or the name one takes beside a database (`t.db-wal`, which SQLite
    removes when the last connection closes and makes again at the next run's first write)."""
    target = Path(path)
    for suffix in DATABASE_COMPANIONS:
        if target.name.endswith(suffix) and target.name != suffix and (target.is_file() or _has_sqlite_header(
                target.with_name(target.name[:-len(suffix)]))):
            return True
    return target.is_file() and _has_sqlite_header(target)


def _has_sqlite_header(path: Path) -> bool:
    try:
        with open(path, "rb") as existing:
            return existing.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:  # missing or unreadable: writing it fails later with its own reason
        return False


def write_problem(path: str | Path) -> str | None:
    """Why a file could not be written at `path` (as the system words it), or None: a command that
    prints at length checks this first, so a mistyped folder is refused before anything is shown."""
    target = Path(path)
    try:
        folder = os.stat(target.parent)
    except OSError as err:
        return err.strerror or str(err)
    if not stat.S_ISDIR(folder.st_mode):
        return os.strerror(errno.ENOTDIR)
    if target.is_dir():
        return os.strerror(errno.EISDIR)
    if not os.access(target if target.exists() else target.parent, os.W_OK):
        return os.strerror(errno.EACCES)
    return None
