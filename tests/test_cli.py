"""The command line as a whole: entry points, settings errors, exit codes, one JSON object per command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from email_automation import __version__
from email_automation.cli import app
from tests.cli_helpers import EXAMPLE, cli, runner


@pytest.fixture
def demo_db(tmp_path, monkeypatch):
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    monkeypatch.setenv("DELAY_SECONDS", "0")
    monkeypatch.setenv("TIMEZONE", "UTC")
    path = tmp_path / "cli.db"
    assert cli("init", "--db", str(path)).exit_code == 0
    return path


def test_init_twice_is_fine(tmp_path):
    first = cli("init", "--db", str(tmp_path / "x.db"))
    second = cli("init", "--db", str(tmp_path / "x.db"))
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert second.stdout.strip() == f"Database ready: {tmp_path / 'x.db'}"


def test_bad_configuration_is_one_line_and_exit_code_2(tmp_path):
    result = cli("status", "--db", str(tmp_path / "x.db"), env={"DAILY_LIMIT": "abc"})
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: invalid setting DAILY_LIMIT=abc: expected a whole number from 0 to 100000"
    assert "Traceback" not in result.output


def test_commands_before_init_say_what_to_do(tmp_path):
    result = cli("status", "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 2
    assert "run `email-automation init` first" in result.stderr


def test_a_dry_run_end_to_end(demo_db, tmp_path):
    imported = json.loads(cli("import", str(EXAMPLE), "--db", str(demo_db), "--json").stdout)
    assert set(imported) == {"inserted", "duplicates", "invalid", "rejects_file"}
    assert imported["inserted"] >= 15

    ran = cli("run", "--db", str(demo_db), "--json")
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout)
    assert summary["dry_run"] is True and summary["sent"] == 0
    assert summary["previewed"] == imported["inserted"]
    assert len(list((tmp_path / "outbox").glob("*/*.eml"))) == imported["inserted"]

    data = json.loads(cli("status", "--db", str(demo_db), "--json").stdout)
    assert data["campaigns"]["default"]["pending"] == imported["inserted"]
    assert data["sent_today"] == 0


def test_dry_run_ends_by_saying_how_to_send_for_real(demo_db):
    cli("import", str(EXAMPLE), "--db", str(demo_db))
    result = cli("run", "--db", str(demo_db), "--limit", "2")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert sum(" dry_run dry-run-" in line for line in lines) == 2, result.output
    assert lines[-1].endswith("To send for real, set DRY_RUN=false (or pass --send).")


def test_python_dash_m_runs_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "email_automation", "--help"], capture_output=True, text=True, check=True)
    assert "Usage:" in result.stdout and "run" in result.stdout and "import" in result.stdout



@pytest.mark.parametrize("group", [[], ["template"], ["step"]], ids=lambda g: " ".join(g) or "main")
def test_every_command_summary_in_the_help_is_a_whole_sentence(group):
    """The list shows a command's first sentence; an abbreviation such as "e.g." must not end it early."""
    shown = runner.invoke(app, [*group, "--help"], terminal_width=300, max_content_width=300).stdout
    summaries = [line.split(None, 1)[1] for line in shown.split("Commands:\n", 1)[1].splitlines() if line.strip()]
    assert summaries and all(s.endswith(".") and s.count("(") == s.count(")") and s.count("`") % 2 == 0
                             for s in summaries), summaries


def test_mark_help_keeps_its_example():
    shown = " ".join(runner.invoke(app, ["mark", "--help"], terminal_width=300, max_content_width=300).stdout.split())
    assert "Set a recipient's application status by hand. For example `mark bob@acme.com interview`." in shown


def test_version():
    result = cli("--version")
    assert (result.exit_code, result.stdout) == (0, f"email-automation {__version__}\n")


# Every command with --json, with arguments that make it succeed on a fresh database.
JSON_COMMANDS = [
    ["config"], ["status"], ["run"], ["retry-failed"], ["pause", "default"], ["resume", "default"],
    ["suppress", "someone@example.com"], ["import", str(EXAMPLE)], ["backup", "copy.db"],
]


@pytest.mark.parametrize("args", JSON_COMMANDS, ids=lambda a: a[0])
def test_json_commands_print_exactly_one_object(demo_db, args):
    result = cli(*args, "--db", str(demo_db), "--json")
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout), dict)


@pytest.mark.parametrize("args", [
    ["skip", "nobody@example.com"], ["unsuppress", "nobody@example.com"], ["resume", "nosuch"],
    ["resolve", "nobody@example.com", "--sent"], ["retry-failed", "-c", "nosuch"],
], ids=lambda a: a[0])
def test_json_commands_report_an_error_as_one_object_and_exit_2(demo_db, args):
    result = cli(*args, "--db", str(demo_db), "--json")
    assert result.exit_code == 2
    assert list(json.loads(result.stdout)) == ["error"]


@pytest.mark.parametrize("args", [["skip", "ada@example.com", "-c", "nosuch"],
                                  ["resolve", "ada@example.com", "--sent", "-c", "nosuch"]], ids=lambda a: a[0])
def test_a_misspelt_campaign_is_named_not_taken_for_a_missing_recipient(demo_db, args):
    """`skip EMAIL -c nosuch` said "no pending or failed recipient with that address"."""
    result = cli(*args, "--db", str(demo_db))
    assert (result.exit_code, result.stderr) == (2, "Error: no campaign named 'nosuch'\n")


def test_resume_all_with_a_campaign_is_refused_not_ignored(demo_db):
    result = cli("resume", "--all", "spring", "--db", str(demo_db))
    assert (result.exit_code, result.stderr) == (2, "Error: --all lifts the pause of all sending and takes no "
                                                    "campaign: `resume spring` resumes that campaign\n")


def test_a_bad_option_value_with_json_is_one_json_object_and_exit_2(demo_db):
    result = cli("run", "--db", str(demo_db), "--json", "--limit", "-1")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]  # the rest of the wording is typer's, and changes with its version
    assert list(json.loads(result.stdout)) == ["error"] and error.startswith("Invalid value for '--limit': ")


def _json_commands(group=None, path=()) -> list[tuple[str, ...]]:
    """Every command that takes --json (`step list` too), read from the app so a new one is covered."""
    from typer.main import get_command

    from email_automation.cli import app

    found = []
    for name, command in (group or get_command(app)).commands.items():
        if hasattr(command, "commands"):
            found += _json_commands(command, (*path, name))
        elif any("--json" in param.opts for param in command.params):
            found.append((*path, name))
    return sorted(found)


@pytest.mark.parametrize("words", _json_commands(), ids=" ".join)
def test_every_json_command_refusing_its_command_line_prints_one_json_object(words):
    result = cli(*words, "--json", "--no-such-option")
    assert result.exit_code == 2
    assert list(json.loads(result.stdout)) == ["error"]
    assert result.stderr == ""


def test_without_json_a_bad_option_still_shows_the_usage(demo_db):
    result = cli("run", "--db", str(demo_db), "--limit", "-1")
    assert result.exit_code == 2
    assert "Usage: " in result.stderr and "Invalid value for '--limit'" in result.stderr


SMTP_HOST_MISSING = ("TRANSPORT=smtp needs SMTP_HOST, the SMTP server to send through (e.g. SMTP_HOST=smtp.gmail.com);"
                     " it is not set")


@pytest.mark.parametrize("args, dry_run", [(["run"], "false"), (["run", "--send"], "true")], ids=["run", "run --send"])
def test_smtp_without_smtp_host_is_refused_as_bad_configuration(demo_db, args, dry_run):
    # It used to send through localhost:587 without a word.
    result = cli(*args, "--db", str(demo_db), env={"TRANSPORT": "smtp", "DRY_RUN": dry_run})
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"Error: {SMTP_HOST_MISSING}\n", "")


def test_without_smtp_host_the_commands_that_send_nothing_still_work(demo_db):
    # Only a real send needs the server: status and config help the user find what to fix.
    env = {"TRANSPORT": "smtp", "DRY_RUN": "false"}
    assert cli("status", "--db", str(demo_db), env=env).exit_code == 0
    assert cli("config", "--db", str(demo_db), env=env).exit_code == 0


def test_doctor_fails_smtp_without_smtp_host_and_only_warns_in_a_dry_run(demo_db):
    real = cli("doctor", "--db", str(demo_db), env={"TRANSPORT": "smtp", "DRY_RUN": "false"})
    assert real.exit_code == 1
    assert [line.split(None, 1)[1].split() for line in real.stdout.splitlines() if line.startswith("FAIL")] == [
        ["SMTP", "login", "SMTP_HOST", "is", "not", "set"]]
    dry = cli("doctor", "--db", str(demo_db), "--json", env={"TRANSPORT": "smtp", "DRY_RUN": "true"})
    smtp = [c for c in json.loads(dry.stdout)["checks"] if c["name"] == "SMTP login"]
    assert [(c["status"], c["detail"]) for c in smtp] == [
        ("WARN", "SMTP_HOST is not set (DRY_RUN is on, so runs do not need this yet)")]
    assert cli("run", "--db", str(demo_db), env={"TRANSPORT": "smtp", "DRY_RUN": "true"}).exit_code == 0
