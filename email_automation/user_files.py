"""Files the user names for the tool to write (rejects, previews, logs): never one of its databases.

A mistyped path must not replace or append to the send ledger: the ledger is what keeps anyone
from being mailed twice.
"""

from __future__ import annotations

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
