"""Dry-run transport: each message becomes an .eml file under OUTBOX_DIR; nothing leaves the machine.

It is a transport like the others (anymail's test backend): the run renders and builds every
message exactly as for a real send and hands it over the same way; only `make_transport` decides
which one is used. Around the hand-over a dry run differs: nothing is claimed, each message gets a
`dry_run` log row that never counts toward the daily limit, every recipient stays pending, and
there is no delay between messages. Each transport (one per run) writes into its own folder,
OUTBOX_DIR/<YYYY-mm-dd_HHMMSS>-<run id>/, so a second run never mixes its files with the first's.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..wire import WireMessage, as_wire

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9@._+-]")


class DryRunTransport:
    """Writes `<recipient>--dry-run-<hex>.eml` files that any mail client can open."""

    name = "dry_run"

    def __init__(self, settings: Any, *, now: Callable[[], datetime] = datetime.now) -> None:
        run_id = uuid.uuid4().hex[:8]
        self.folder = Path(settings.outbox_dir) / f"{now():%Y-%m-%d_%H%M%S}-{run_id}"  # created by the first send
        self.written: list[Path] = []  # files written by this transport, in order

    def send(self, message: EmailMessage | WireMessage, *, tags: dict[str, str]) -> str:
        """Write the message exactly as it would be sent; returns "dry-run-<uuid hex>".

        Raises:
            ConfigError: OUTBOX_DIR cannot be written (full disk, no permission, a file in the way);
                a setting to fix, never a failed recipient.
        """
        message_id = f"dry-run-{uuid.uuid4().hex}"
        wire = as_wire(message)
        path = self.folder / f"{_recipient_slug(wire)}--{message_id}.eml"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, wire.data)
        except OSError as err:
            raise ConfigError(f"OUTBOX_DIR: cannot write {path}: {err.strerror or err}") from err
        self.written.append(path)
        return message_id

    def close(self) -> None:
        """Nothing to release."""


def _recipient_slug(wire: WireMessage) -> str:
    return _UNSAFE_FILENAME.sub("_", wire.recipients[0] if wire.recipients else "no-recipient")[:100]


def _write_atomically(path: Path, data: bytes) -> None:
    """A reader (dashboard, mail client) never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
