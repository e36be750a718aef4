"""A rotating log file for unattended runs: `2026-11-25 08:00:03 INFO jane@example.com sent <id>`.

Cron appends stdout to cron.log forever; LOG_FILE (or `run --log-file`) keeps a bounded history
instead: `max_bytes` per file, `backups` older files (app.log.1 ... app.log.5).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError
from .user_files import is_database_file

if TYPE_CHECKING:  # logging.handlers (with pickle, queue) loads only when LOG_FILE is set
    from logging.handlers import RotatingFileHandler

LOGGER_NAME = "email_automation"
LINE_FORMAT = "%(asctime)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_BYTES = 1_000_000
BACKUPS = 5


def line_formatter() -> logging.Formatter:
    """Local time to the second, level, message: what a person reads in a log file."""
    return logging.Formatter(LINE_FORMAT, datefmt=DATE_FORMAT)


class ConsoleHandler(logging.StreamHandler):
    """The run's lines on stdout; once it cannot be written (`run | head`, a dead pipe from cron, a
    full disk) it stops writing there without a traceback per line: the run goes on, and LOG_FILE
    and the database keep the whole story."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            self.setLevel(logging.CRITICAL + 1)  # nothing more to this stream
            return
        super().handleError(record)


def setup_file_logging(
    path: str | Path | None,
    max_bytes: int = MAX_BYTES,
    backups: int = BACKUPS,
    *,
    logger_name: str = LOGGER_NAME,
) -> RotatingFileHandler | None:
    """Append the package's log lines to `path`, rotated at `max_bytes`; None when `path` is unset.

    Calling it again for the same file returns the handler already attached (no doubled lines).

    Raises:
        ConfigError: the file (or its folder) cannot be created or written.
    """
    if path is None or str(path) == "":
        return None
    from logging.handlers import RotatingFileHandler

    target = Path(path).expanduser().absolute()
    if is_database_file(target):  # appending, and rotating it away, would destroy the ledger
        raise ConfigError(f"invalid setting LOG_FILE={path}: it is a database file; name another file")
    logger = logging.getLogger(logger_name)
    for handler in logger.handlers:
        if isinstance(handler, RotatingFileHandler) and Path(handler.baseFilename) == target:
            return handler
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(target, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"invalid setting LOG_FILE={path}: cannot write it ({err.strerror or err})") from None
    handler.setFormatter(line_formatter())
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def close_file_logging(handler: logging.Handler | None, *, logger_name: str = LOGGER_NAME) -> None:
    """Detach and close a handler from `setup_file_logging` (tests, long-lived processes)."""
    if handler is not None:
        logging.getLogger(logger_name).removeHandler(handler)
        handler.close()
