"""CLI commands for running on a server: `cron`, `doctor`, `backup`. Wiring only, like cli.py."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import backup as backup_lib
from . import cron as cron_lib
from . import doctor as doctor_lib
from .cli import DbOption, app, cli_errors, err, out, settings_for
from .config import load_settings
from .errors import ConfigError


@app.command()
@cli_errors
def cron(
    time: Annotated[str, typer.Option("--time", help="Daily start time HH:MM, on the server's clock.")] = cron_lib.DEFAULT_TIME,
    install: Annotated[bool, typer.Option("--install", help="Put the line in your crontab (replacing this folder's old one).")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Delete this folder's line from your crontab.")] = False,
    env_file: Annotated[Optional[Path], typer.Option("--env-file", help="Shell file of `export VAR=value` lines to source (default: ./env.sh if it exists).")] = None,
    log_file: Annotated[Optional[Path], typer.Option("--log-file", help="File the run's output is appended to (default: ./cron.log).")] = None,
) -> None:
    """Print the crontab line that runs this folder's `run` every day, or --install / --remove it."""
    if install and remove:
        err.print("Error: choose --install or --remove, not both")
        raise typer.Exit(2)
    workdir = Path.cwd().absolute()
    marker = cron_lib.marker_for(workdir)
    if remove:
        count = cron_lib.remove(marker)
        out.print(f"Removed {count} line(s) for {workdir} from your crontab." if count
                  else f"Your crontab has no line for {workdir}; nothing removed.")
        return
    line, notes = _cron_line(time, workdir, env_file, log_file)
    if install:
        result = cron_lib.install(line, marker)
        action = {"added": "Added to", "replaced": "Replaced in", "unchanged": "Already in"}[result.action]
        out.print(f"{action} your crontab:\n{line}", markup=False)
    else:
        out.print(line, markup=False)
    for note in notes:
        out.print(f"Note: {note}", markup=False)
    if not install:
        out.print("To install it: email-automation cron --install" + (f" --time {time}" if time != cron_lib.DEFAULT_TIME else ""))


def _cron_line(time: str, workdir: Path, env_file: Path | None, log_file: Path | None) -> tuple[str, list[str]]:
    notes = []
    if env_file is not None:
        env_file = env_file.absolute()
        if not env_file.is_file():
            raise cron_lib.CronError(f"{env_file}: no such env file")
    elif (workdir / cron_lib.ENV_FILE_NAME).is_file():
        env_file = workdir / cron_lib.ENV_FILE_NAME
    else:
        notes.append(f"no {workdir / cron_lib.ENV_FILE_NAME}, so the line sources no settings; "
                     "copy env.sh.example to env.sh and run this again")
    log_path = (log_file or workdir / cron_lib.LOG_FILE_NAME).absolute()
    line = cron_lib.cron_line(time=time, workdir=workdir, command=cron_lib.default_command(),
                              env_file=env_file, log_file=log_path)
    try:
        settings = load_settings()
        user_tz = settings.tz if settings.timezone else None
    except ConfigError:
        user_tz = None
    notes.append(cron_lib.clock_note(time, user_tz, datetime.now().astimezone()))
    return line, notes


@app.command()
@cli_errors
def doctor(db: DbOption = None) -> None:
    """Check that this install can send: settings, database, AWS credentials, SES identity and account, SMTP login."""
    _, checks = doctor_lib.diagnose(db_path=db)
    width = max(len(c.name) for c in checks)
    for check in checks:
        out.print(f"{check.status:<4}  {check.name:<{width}}  {check.detail}", markup=False)
        if check.hint and check.status != doctor_lib.OK:
            out.print(f"      {'':<{width}}  fix: {check.hint}", markup=False)
    failures = sum(c.status == doctor_lib.FAIL for c in checks)
    warnings = sum(c.status == doctor_lib.WARN for c in checks)
    if failures:
        out.print(f"{failures} check(s) failed, {warnings} warning(s).")
        raise typer.Exit(1)
    out.print(f"No failures, {warnings} warning(s)." if warnings else "All checks passed.")


@app.command()
@cli_errors
def backup(
    dest: Annotated[Path, typer.Argument(help="Backup file, or a folder for email_automation-YYYYmmdd-HHMMSS.db.")],
    db: DbOption = None,
) -> None:
    """Copy the database consistently (safe during a run) and verify the copy with an integrity check."""
    settings = settings_for(db)
    path = backup_lib.backup_database(settings.db_path, dest)
    out.print(f"Backup of {settings.db_path} written to {path} ({path.stat().st_size} bytes, integrity ok).")
