"""What every command module shares: the typer app, the option types, output and error mapping.

Command modules import this module and the library, never each other. Nothing heavy is imported
here (no boto3, Jinja2, pydantic, rich or streamlit): `--help` must answer at once, so each command
imports what it needs in its body.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sqlite3
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from .._version import __version__
from ..errors import EmailAutomationError

try:
    from typer._click.exceptions import UsageError  # typer vendors click since 0.26
except ImportError:  # pragma: no cover - an older typer on click
    from click.exceptions import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from ..config import Settings

# Exit codes, as the README's command reference lists them.
EXIT_ERROR, EXIT_BAD_INPUT, EXIT_STOPPED, EXIT_INTERRUPTED = 1, 2, 3, 130


def _print_version(value: bool) -> None:
    if value:
        say(f"email-automation {__version__}")
        raise typer.Exit()


class _JsonErrorsGroup(TyperGroup):
    """The app's group: a command line typer refuses (a bad option value, an unknown option) is
    still one JSON object, `{"error": ...}`, and exit 2 when `--json` was asked for.

    typer parses a command's options before the command runs, so `cli_errors` never sees these.
    """

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        ctx.meta["json"] = "--json" in (args[:args.index("--")] if "--" in args else args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            if not ctx.meta.get("json"):
                raise
            _error_as_json(exc.format_message())
            raise typer.Exit(EXIT_BAD_INPUT) from None


app = typer.Typer(
    cls=_JsonErrorsGroup,
    help="Send personalized outreach email in small, safe daily batches (Amazon SES or SMTP), "
    "with every attempt logged in SQLite. DRY_RUN is on until you turn it off.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """Only adds the global --version; the app's help is Typer(help=...)."""


@functools.cache
def console(*, stderr: bool = False) -> Console:
    """The rich console for stdout (or stderr), made on first use: importing rich costs --help time.

    No emoji codes: what is printed is the user's own text (a CSV header `root:x:0` must not show
    an emoji for `:x:`).
    """
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


DbOption = Annotated[Optional[Path], typer.Option("--db", help="SQLite database file (default: DB_PATH or email_automation.db).")]
CampaignOption = Annotated[Optional[str], typer.Option("--campaign", "-c", help="Campaign name (default: all, or 'default' where one is needed).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def cells(*values: object) -> list:
    """Table cells shown exactly as written: a campaign named `[/x]` is a name, not rich markup."""
    from rich.text import Text

    return [Text(str(value)) for value in values]


class BadInput(EmailAutomationError):
    """The command line itself cannot be acted on (a missing choice, an unreadable file)."""

    exit_code = EXIT_BAD_INPUT


# What rich's console.print did to a text, which say() and warn() keep now that they print without
# rich (its import was a fifth of `status`): the controls that move the cursor (BEL, BS, VT, FF,
# CR) dropped, tabs expanded to 8 columns.
_CURSOR_CONTROLS = dict.fromkeys(map(ord, "\a\b\v\f\r"))


def plain(text: str) -> str:
    """`text` as it may go to a terminal: no cursor controls, no tabs."""
    return text.translate(_CURSOR_CONTROLS).expandtabs(8)


def say(text: str) -> None:
    """One line (or block) for the user on stdout, printed as is (no markup)."""
    _to_stdout(plain(text))


def show(renderable) -> None:
    """A rich renderable (a table) on stdout; a reader that has gone is handled as in `say` (rich's
    own print would exit 1 there)."""
    with console().capture() as captured:
        console().print(renderable)
    _to_stdout(captured.get().removesuffix("\n"))


def _to_stdout(text: str) -> None:
    """Print `text` on stdout; once stdout's reader has gone (`status | head -1`), nothing more is
    written there and the command goes on: its lines on stderr and its exit code still say how it
    ended (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _stdout_to_devnull()


def output_failed(exc: OSError) -> int:
    """Writing to stdout failed outside a command (`--help` or `--version` to a full disk): one
    line on stderr, the exit code `cli_errors` gives a full disk, and stdout closed for good."""
    _stdout_to_devnull()
    message, code = _os_error(exc)
    try:
        warn(f"Error: {message}")
    except OSError:  # stderr is gone too: the exit code alone says it
        pass
    return code


def _os_error(exc: OSError) -> tuple[str, int]:
    """The one line for an error of the machine (a file, a full disk) and its exit code: a full
    disk is the set-up (2), anything else 1."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}", EXIT_BAD_INPUT if exc.errno == errno.ENOSPC else EXIT_ERROR


def _stdout_to_devnull() -> None:
    """What is still buffered, and anything printed later, goes to /dev/null, not the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def warn(text: str) -> None:
    """A line on stderr, as is: errors and warnings, kept out of stdout's results."""
    print(plain(text), file=sys.stderr, flush=True)


def text_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns, one space around each cell (rich's Table(box=None) layout), no markup.

    Plain text, so that `status` needs no rich; a wide character (CJK) takes two columns and a line
    break in a cell (a campaign's name may hold one) is shown as a space, so each row stays one line.
    """
    lines = [[" ".join(plain(str(cell)).splitlines()) for cell in line] for line in (header, *rows)]
    widths = [max(_columns(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("".join(f" {cell}{' ' * (width - _columns(cell))} " for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


def _columns(text: str) -> int:
    """Terminal columns of `text` (https://www.unicode.org/reports/tr11/: W and F are two wide;
    marks and format characters such as a zero-width space take none)."""
    return sum(0 if unicodedata.category(c) in _ZERO_WIDTH else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


_ZERO_WIDTH = frozenset({"Mn", "Me", "Cf"})


def print_json(data: dict[str, Any]) -> None:
    """The one JSON object of a `--json` command, on stdout, unstyled so scripts can parse it."""
    _to_stdout(json.dumps(data))


def answer(as_json: bool, data: dict[str, Any], text: str) -> None:
    """A command's result: `data` as the JSON object with --json, else `text`."""
    if as_json:
        print_json(data)
    else:
        say(text)


def cli_errors(fn):
    """Turn a library error into one line and its exit code; never a traceback.

    With `--json` the error is the command's one JSON object, `{"error": ...}`, on stdout.
    An empty `campaign` (option or argument: every command names it so) is refused before the
    command runs, where `-c ""` would mean "every campaign" to some; a name of spaces is looked up
    as given (one made before names were checked must stay manageable) and never created.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json"))
        try:
            if kwargs.get("campaign") == "":
                from ..database import check_campaign_name

                check_campaign_name("")
            return fn(*args, **kwargs)
        except EmailAutomationError as exc:
            _fail(str(exc), getattr(exc, "exit_code", EXIT_ERROR), as_json)
        except sqlite3.Error as exc:
            _fail(f"database: {exc}", _sqlite_exit_code(exc), as_json)
        except BrokenPipeError:  # written to stdout without `say`, after its reader had gone
            _stdout_to_devnull()
            raise typer.Exit(EXIT_ERROR) from None
        except OSError as exc:  # a file the library does not wrap itself; a full disk is the machine's set-up
            _fail(*_os_error(exc), as_json)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED, as_json)

    return wrapper


def _fail(message: str, code: int, as_json: bool) -> None:
    if as_json:
        _error_as_json(message)
    elif code == EXIT_INTERRUPTED:
        warn("Interrupted.")
    else:
        warn(f"Error: {message}")
    raise typer.Exit(code)


def _error_as_json(message: str) -> None:
    """`{"error": message}` on stdout, or the line on stderr when stdout is what fails (a full disk)."""
    try:
        print_json({"error": message})
    except OSError:
        _stdout_to_devnull()
        warn(f"Error: {message}")


def _sqlite_exit_code(exc: sqlite3.Error) -> int:
    """A full disk or a database file that cannot be written is the machine's set-up: exit 2.

    Result codes: https://www.sqlite.org/rescode.html (SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_READONLY).
    """
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return EXIT_BAD_INPUT if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY) else EXIT_ERROR


def settings_for(db: Path | None = None, **overrides: Any) -> Settings:
    """The settings from the environment, .env and defaults, with the command line's flags on top."""
    from ..config import load_settings

    return load_settings(db_path=db, **overrides)


def open_database(settings: Settings) -> sqlite3.Connection:
    """The existing database of `settings`, upgraded; one line and exit 2 if it cannot be opened.

    Opening writes (the WAL and shared-memory files, a schema upgrade), so a full disk or a
    read-only folder shows here first: that is the machine's set-up, not a failed command.
    """
    from ..database import open_db
    from ..errors import ConfigError

    try:
        return open_db(settings.db_path)
    except sqlite3.Error as exc:
        raise ConfigError(f"{settings.db_path}: cannot open database: {exc}") from exc


class progress_bar:
    """A rich progress bar on a terminal; nothing at all when output goes to a file or cron."""

    def __init__(self, *, enabled: bool, total: int | None, label: str) -> None:
        # isatty first: under cron (a file, not a terminal) rich is not even imported.
        self.enabled = enabled and sys.stderr.isatty() and console(stderr=True).is_terminal
        self.total, self.label = total, label

    def __enter__(self):
        if not self.enabled:
            return lambda n=1: None
        from rich.progress import Progress

        self.progress = Progress(console=console(stderr=True), transient=True)
        self.progress.start()
        task = self.progress.add_task(self.label, total=self.total)
        return lambda n=1: self.progress.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()
