"""Commands that set an install up and keep it healthy: `init`, `config`, `doctor`, `cron`, `backup`."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import cron as cron_lib
from .common import BadInput, DbOption, JsonOption, app, cells, cli_errors, print_json, say, settings_for, show


@app.command()
@cli_errors
def init(db: DbOption = None) -> None:
    """Create the database (or upgrade an older one) with a 'default' campaign. Safe to run again."""
    from ..database import init_db
    from ..imports import clean_up_if_idle

    settings = settings_for(db)
    conn = init_db(settings.db_path)
    try:
        removed = clean_up_if_idle(conn)
    finally:
        conn.close()
    if removed:
        say(f"Removed the rows of {removed} interrupted import(s).")
    say(f"Database ready: {settings.db_path}")


@app.command("config")
@cli_errors
def show_config(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Print the effective settings (secrets masked) and where each came from."""
    from ..config import describe_settings

    rows = describe_settings(settings_for(db), {"db_path": db})
    if as_json:
        print_json({name: {"value": value, "from": source} for name, value, source in rows})
        return
    from rich.table import Table

    table = Table("Variable", "Value", "From", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*cells(*row))
    show(table)


@app.command()
@cli_errors
def doctor(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Check that this install can send: settings, database, AWS credentials, SES identity and account, SMTP login."""
    from dataclasses import asdict

    from ..doctor import FAIL, diagnose

    _, checks = diagnose(db_path=db)
    if as_json:
        print_json({"ok": all(c.status != FAIL for c in checks), "checks": [asdict(c) for c in checks]})
    else:
        for line in doctor_lines(checks):
            say(line)
    if any(c.status == FAIL for c in checks):
        raise typer.Exit(1)


def doctor_lines(checks) -> list[str]:
    """One aligned line per check, a `fix:` line under each that is not OK, and a verdict."""
    from ..doctor import FAIL, OK, WARN

    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        lines.append(f"{check.status:<4}  {check.name:<{width}}  {check.detail}")
        if check.hint and check.status != OK:
            lines.append(f"      {'':<{width}}  fix: {check.hint}")
    failures = sum(c.status == FAIL for c in checks)
    warnings = sum(c.status == WARN for c in checks)
    if failures:
        lines.append(f"{failures} check(s) failed, {warnings} warning(s).")
    else:
        lines.append(f"No failures, {warnings} warning(s)." if warnings else "All checks passed.")
    return lines


@app.command()
@cli_errors
def cron(
    time: Annotated[str, typer.Option("--time", help="Daily start time HH:MM, on the server's clock.")] = cron_lib.DEFAULT_TIME,
    install: Annotated[bool, typer.Option("--install", help="Put the line in your crontab (replacing this folder's old one).")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Delete this folder's line from your crontab.")] = False,
    env_file: Annotated[Optional[Path], typer.Option("--env-file", help="Shell file of `export VAR=value` lines to source (default: ./env.sh if it exists).")] = None,
    log_file: Annotated[Optional[Path], typer.Option("--log-file", help="File the run's output is appended to (default: ./cron.log).")] = None,
    db: DbOption = None,
    hourly: Annotated[bool, typer.Option("--hourly", help="Run every hour (at the minute of --time) instead of daily: for recipients in several time zones.")] = False,
) -> None:
    """Print the crontab line that runs this folder's `run` every day, or --install / --remove it."""
    if install and remove:
        raise BadInput("choose --install or --remove, not both")
    workdir = Path.cwd().absolute()
    marker = cron_lib.marker_for(workdir)
    if remove:
        count = cron_lib.remove(marker)
        say(f"Removed {count} line(s) for {workdir} from your crontab." if count
            else f"Your crontab has no line for {workdir}; nothing removed.")
        return
    line, notes = _cron_line(time, workdir, env_file, log_file, db, hourly)
    if install:
        result = cron_lib.install(line, marker)
        action = {"added": "Added to", "replaced": "Replaced in", "unchanged": "Already in"}[result.action]
        say(f"{action} your crontab:\n{line}")
    else:
        say(line)
    for note in notes:
        say(f"Note: {note}")
    if not install:
        say("To install it: " + install_command(time, env_file, log_file, db, hourly))


def install_command(time: str, env_file: Path | None, log_file: Path | None, db: Path | None, hourly: bool) -> str:
    """The `cron --install` that installs exactly the line printed: every option that shaped it,
    as typed (the line's paths are made absolute from the same folder)."""
    options = [("--hourly", None) if hourly else None,
               ("--time", time) if time != cron_lib.DEFAULT_TIME else None,
               ("--env-file", env_file) if env_file is not None else None,
               ("--log-file", log_file) if log_file is not None else None,
               ("--db", db) if db is not None else None]
    words = ["email-automation", "cron", "--install"]
    for name, value in filter(None, options):
        words += [name] if value is None else [name, shlex.quote(str(value))]
    return " ".join(words)


def _cron_line(time: str, workdir: Path, env_file: Path | None, log_file: Path | None,
               db: Path | None, hourly: bool = False) -> tuple[str, list[str]]:
    from datetime import datetime

    from ..errors import ConfigError
    from ..user_files import is_database_file

    notes = []
    if env_file is not None:
        env_file = env_file.absolute()
        if not env_file.is_file():  # a file that does not exist is bad input, exit 2 (README, exit codes)
            raise BadInput(f"{env_file}: no such env file")
    elif (workdir / cron_lib.ENV_FILE_NAME).is_file():
        env_file = workdir / cron_lib.ENV_FILE_NAME
    else:
        notes.append(f"no {workdir / cron_lib.ENV_FILE_NAME}, so the line sources no settings; "
                     "copy env.sh.example to env.sh and run this again")
    log_path = (log_file or workdir / cron_lib.LOG_FILE_NAME).absolute()
    if is_database_file(log_path):  # cron would append every run's output to the ledger
        raise BadInput(f"{log_file}: is a database file; name another file for --log-file")
    command = cron_lib.default_command()
    if db is not None:  # after the env file, so it wins over a DB_PATH there (env(1) sets it for the run)
        command = ["env", f"DB_PATH={db.absolute()}", *command]
    line = cron_lib.cron_line(time=time, workdir=workdir, command=command, env_file=env_file, log_file=log_path,
                              hourly=hourly)
    if hourly:
        notes.append(f"runs every hour at minute {time.split(':')[-1]}: each recipient is mailed inside "
                     "SEND_DAYS/SEND_HOURS of their own time zone, and DAILY_LIMIT still holds per day")
        return line, notes
    try:
        settings = settings_for(db)
        user_tz = settings.tz if settings.timezone else None
    except ConfigError:
        user_tz = None
    notes.append(cron_lib.clock_note(time, user_tz, datetime.now().astimezone()))
    return line, notes


@app.command()
@cli_errors
def backup(
    dest: Annotated[str, typer.Argument(
        help="Backup file, or a folder (existing, or written with a trailing /) for email_automation-YYYYmmdd-HHMMSS.db.",
        show_default=False)],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Copy the database consistently (safe during a run) and verify the copy with an integrity check."""
    from ..backup import backup_database

    settings = settings_for(db)
    # `dest` is a str, not a Path: Path("backups/") drops the slash that says "a folder".
    path = backup_database(settings.db_path, dest)
    size = path.stat().st_size
    if as_json:
        print_json({"database": str(settings.db_path), "backup": str(path), "bytes": size})
        return
    say(f"Backup of {settings.db_path} written to {path} ({size} bytes, integrity ok).")

