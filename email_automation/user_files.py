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
    """Whether `path` is an SQLite database (this tool's, a backup, any) or one of its companion files."""
    target = Path(path)
    if not target.is_file():
        return False
    if target.name.endswith(DATABASE_COMPANIONS):
        return True
    try:
        with open(target, "rb") as existing:
            return existing.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:  # unreadable: writing it fails later with its own reason
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
