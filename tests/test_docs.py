"""The README is the first thing a user reads: every command and setting must be in it."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from email_automation.cli import app
from email_automation.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def all_commands():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for sub_name, sub in subcommands.items():
                yield f"{name} {sub_name}", sub
        else:
            yield name, command


def test_every_command_has_help_text():
    for name, command in all_commands():
        assert command.help and len(command.help.strip()) > 10, f"`{name}` has no help"


def test_every_command_is_in_the_readme_reference():
    table = README.split("## Command reference", 1)[1]
    for name, _ in all_commands():
        first = name.split()[0]
        assert re.search(rf"`{re.escape(first)}[ `/]", table), f"`{name}` is missing from the README's command reference"


def test_every_setting_is_in_the_readme_table():
    for field in Settings.model_fields:
        assert f"| `{field.upper()}` |" in README, f"{field.upper()} is not documented in the README"


def test_readme_has_exactly_the_two_setup_commands():
    assert "make demo" in README and "make test" in README


def readme_row(command: str) -> str:
    table = README.split("## Command reference", 1)[1]
    rows = [line for line in table.splitlines() if re.match(rf"\| `{re.escape(command)}[ `/]", line)
            or f"/ `{command}" in line]
    assert rows, f"`{command}` has no row in the README's command reference"
    return rows[0]


def test_every_json_option_is_in_the_readme_reference():
    for name, command in all_commands():
        if any("--json" in param.opts for param in command.params):
            assert "--json" in readme_row(name.split()[0]).split("|")[1], f"`{name} --json` is not in the README"


def test_the_readme_lists_exactly_the_keys_of_run_json():
    from email_automation.cli.sending import run_json
    from email_automation.run_daily import RunReport

    described = README.split("`--json` prints exactly one object", 1)[1].split("`{", 1)[1].split("}`", 1)[0]
    assert set(re.findall(r'"(\w+)"', described)) == set(run_json(RunReport(), None))


def test_every_command_takes_db_as_the_readme_says():
    assert "Every command takes `--db PATH`" in README
    for name, command in all_commands():
        assert any("--db" in param.opts for param in command.params), f"`{name}` has no --db"


def test_each_command_has_one_row_in_the_readme_reference():
    """Two rows for one command (a merge leftover) tell two different stories; one must go."""
    table = README.split("## Command reference", 1)[1].split("\n## ", 1)[0]
    firsts = [re.match(r"\| `([\w-]+)", line).group(1) for line in table.splitlines() if re.match(r"\| `[\w-]+", line)]
    assert len(firsts) == len(set(firsts)), sorted(name for name in set(firsts) if firsts.count(name) > 1)
