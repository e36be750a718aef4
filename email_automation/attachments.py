"""Files sent with a message: checked when they are named (import, `template set`) and again when read.

A recipient's files come from the CSV's `attachments` column (paths separated by `;`, relative to
ATTACHMENTS_DIR, by default the CSV's folder) and a campaign's from `template set --attach`. Both
are stored as absolute paths, so a run started by cron from another folder finds them. A path that
leaves ATTACHMENTS_DIR is refused: a CSV (perhaps uploaded through the dashboard) must not be able
to mail out any file the machine can read.

Each file must exist, be readable, have a type SES accepts and keep the whole message under
MAX_MESSAGE_BYTES. A problem is a reject at import; at send time it stops only that recipient.
"""

from __future__ import annotations

import json
import mimetypes
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EmailAutomationError, PermanentSendError
from .user_files import is_database_file

# The default limit: 10 MB is what many receiving servers accept, though SES v2 itself allows
# 40 MB (https://docs.aws.amazon.com/ses/latest/dg/attachments.html).
DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
SEPARATOR = ";"

# File extensions SES refuses to send, from "Amazon SES unsupported attachment types"
# (https://docs.aws.amazon.com/ses/latest/dg/mime-types.html).
BLOCKED_EXTENSIONS = frozenset("""
.ade .adp .app .asp .bas .bat .cer .chm .cmd .com .cpl .crt .csh .der .exe .fxp .gadget .hlp .hta
.inf .ins .isp .its .js .jse .ksh .lib .lnk .mad .maf .mag .mam .maq .mar .mas .mat .mau .mav .maw
.mda .mdb .mde .mdt .mdw .mdz .msc .msh .msh1 .msh2 .mshxml .msh1xml .msh2xml .msi .msp .mst .ops
.pcd .pif .plg .prf .prg .reg .scf .scr .sct .shb .shs .sys .ps1 .ps1xml .ps2 .ps2xml .psc1 .psc2
.tmp .url .vb .vbe .vbs .vps .vsmacros .vss .vst .vsw .vxd .ws .wsc .wsf .wsh .xnk
""".split())


class AttachmentError(EmailAutomationError):
    """A file that cannot be attached; the message names it and says why (bad input: exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Attachment:
    """One file as it goes into a message: the name shown, its MIME type and its bytes."""

    filename: str
    content_type: str
    data: bytes


def content_type(filename: str) -> str:
    """The MIME type guessed from the file name (RFC 2046's application/octet-stream if unknown)."""
    guessed, encoding = mimetypes.guess_type(filename, strict=False)
    if guessed is None or encoding is not None:  # report.pdf.gz is a gzip file, not a PDF
        return "application/gzip" if encoding == "gzip" else "application/octet-stream"
    return guessed


def blocked_reason(filename: str) -> str | None:
    """Why SES would refuse a file of this name, or None."""
    suffix = Path(filename).suffix.lower()
    if suffix in BLOCKED_EXTENSIONS:
        return f"SES does not send {suffix} files (executables and scripts are refused)"
    return None


def split_cell(cell: str) -> list[str]:
    """The paths of an `attachments` cell: `;`-separated, blanks ignored."""
    return [part.strip() for part in cell.split(SEPARATOR) if part.strip()]


def encoded_size(size: int) -> int:
    """Bytes a file of `size` takes in a message: base64 (RFC 2045 section 6.8) in lines of 76 + CRLF."""
    chars = 4 * ((size + 2) // 3)
    return chars + 2 * ((chars + 75) // 76)


def check_file(path: Path) -> int:
    """The size of a file that can be attached.

    Raises:
        AttachmentError: it does not exist, is not a regular file, cannot be read, is a
            database, or has a type SES refuses.
    """
    reason = blocked_reason(path.name)
    if reason:
        raise AttachmentError(f"{path.name}: {reason}")
    try:
        if not path.is_file():
            raise AttachmentError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
        if is_database_file(path):  # the ledger holds every contact: it never leaves by mail
            raise AttachmentError(f"{path}: an SQLite database is never attached")
        if not os.access(path, os.R_OK):
            raise AttachmentError(f"{path}: cannot be read (permission denied)")
        return path.stat().st_size
    except OSError as err:
        raise AttachmentError(f"{path}: cannot be read: {err.strerror or err}") from err


def resolve(name: str, base: Path) -> Path:
    """The absolute path of `name`, which must lie inside `base` (ATTACHMENTS_DIR).

    Raises:
        AttachmentError: an absolute path, or one that leads out of `base`.
    """
    if Path(name).is_absolute():
        raise AttachmentError(f"{name}: give a path relative to ATTACHMENTS_DIR ({base}), not an absolute one")
    root = base.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise AttachmentError(f"{name}: leads outside ATTACHMENTS_DIR ({base}); put the file there")
    return path


def too_big(total: int, limit: int) -> str:
    return (f"the attachments make the message {total / 1_000_000:.1f} MB, more than MAX_MESSAGE_BYTES "
            f"({limit:,} bytes); send a smaller file or a link")


class CellChecker:
    """Checks `attachments` cells of one import against one folder, each file looked at once.

    `extra` is the encoded size of the campaign's own attachments, which every message carries too;
    `shared` their paths: a file named by both, or twice in a cell, is sent (and counted) once.
    """

    def __init__(self, base: Path, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, extra: int = 0,
                 shared: Iterable[str] = ()) -> None:
        self.base, self.max_bytes, self.extra, self.shared = base, max_bytes, extra, frozenset(shared)
        self._sizes: dict[str, int | AttachmentError] = {}

    def __call__(self, cell: str) -> str | None:
        """The JSON list of absolute paths to store for a cell (None when it names none).

        Raises:
            AttachmentError: the first problem of the cell.
        """
        names = split_cell(cell)
        if not names:
            return None
        paths, total = [], self.extra
        for name in names:
            path = resolve(name, self.base)
            size = encoded_size(self._size(path))
            if str(path) not in self.shared and str(path) not in paths:  # as `for_recipient` sends them
                total += size
            paths.append(str(path))
        if total > self.max_bytes:
            raise AttachmentError(too_big(total, self.max_bytes))
        return json.dumps(paths, ensure_ascii=False)

    def _size(self, path: Path) -> int:
        key = str(path)
        if key not in self._sizes:
            try:
                self._sizes[key] = check_file(path)
            except AttachmentError as err:
                self._sizes[key] = err
        found = self._sizes[key]
        if isinstance(found, AttachmentError):
            raise found
        return found


def stored_paths(value: Any) -> list[str]:
    """The paths of a stored `attachments` value (a JSON list, or NULL)."""
    if not value:
        return []
    try:
        paths = json.loads(value)
    except (TypeError, ValueError):
        return []
    return [str(p) for p in paths] if isinstance(paths, list) else []


def campaign_files(paths: Iterable[str | Path], *, cwd: Path | None = None) -> str:
    """Check files given to `template set --attach` and return the JSON list to store.

    Raises:
        AttachmentError: the first file that cannot be attached.
    """
    resolved = []
    for name in paths:
        path = ((cwd or Path.cwd()) / Path(name).expanduser()).resolve()
        check_file(path)
        resolved.append(str(path))
    return json.dumps(list(dict.fromkeys(resolved)), ensure_ascii=False)


def encoded_total(paths: Iterable[str]) -> int:
    """The encoded size of stored files, those that cannot be read counting as empty."""
    total = 0
    for path in paths:
        try:
            total += encoded_size(Path(path).stat().st_size)
        except OSError:
            pass
    return total


def load(paths: Sequence[str]) -> list[Attachment]:
    """Read stored files for a message, checking them again: they may have changed since.

    Raises:
        AttachmentError: the first file that cannot be attached now.
    """
    files = []
    for name in paths:
        path = Path(name)
        check_file(path)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise AttachmentError(f"{path}: cannot be read: {err.strerror or err}") from err
        files.append(Attachment(path.name, content_type(path.name), data))
    return files


def for_recipient(campaign_row: Any, recipient_row: Any) -> list[Attachment]:
    """The campaign's files, then the recipient's own (a file named by both is sent once)."""
    paths = stored_paths(_stored(campaign_row)) + stored_paths(_stored(recipient_row))
    return load(list(dict.fromkeys(paths))) if paths else []


def _stored(row: Any) -> Any:
    """A row's `attachments` value; None for a row without the column."""
    try:
        return row["attachments"]
    except (IndexError, KeyError):  # sqlite3.Row raises IndexError for a column it does not have
        return None


def for_recipient_or_refuse(campaign_row: Any, recipient_row: Any) -> list[Attachment]:
    """`for_recipient` for a message about to be built: a problem refuses only this recipient.

    Raises:
        PermanentSendError: code "AttachmentError", naming the recipient and the file.
    """
    try:
        return for_recipient(campaign_row, recipient_row)
    except AttachmentError as err:
        email = recipient_row["email"]
        raise PermanentSendError(f"recipient {email}: cannot attach {err}", code="AttachmentError") from err
