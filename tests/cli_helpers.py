"""Helpers for the CLI tests: run a command as a user types it, and a database made by `init`."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from email_automation.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "recipients.csv"
LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", re.M)

runner = CliRunner()


def cli(*args: str, env: dict[str, str] | None = None):
    """Invoke the command line in-process; stdout and stderr stay apart."""
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def without_times(text: str) -> str:
    """Log lines start with the wall-clock time; the rest of each line is what a test can pin down."""
    return LOG_TIME.sub("", text)
