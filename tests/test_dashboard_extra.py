"""`email-automation dashboard` without the `dashboard` extra: one line that says what to install.

Nothing here imports Streamlit, so these tests also run on an install without it.
"""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from email_automation import dashboard_support
from email_automation.cli import dashboard as cli_dashboard
from email_automation.cli import app
from email_automation.database import init_db


@pytest.fixture
def started(monkeypatch, tmp_path):
    """The Streamlit child processes the command would have started (none is)."""
    init_db(tmp_path / "email_automation.db").close()
    calls = []
    monkeypatch.setattr(cli_dashboard, "_run_until_stopped", lambda command, env: calls.append(command) or 0)
    return calls


@pytest.mark.parametrize("hidden, named", [
    (["streamlit"], "streamlit"), (["pandas"], "pandas"), (["streamlit", "pandas"], "streamlit and pandas")])
def test_without_the_extra_the_command_says_how_to_install_it(monkeypatch, started, hidden, named):
    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed: find_spec() is None
    result = CliRunner().invoke(app, ["dashboard"])
    assert (result.exit_code, result.output) == (
        2, f"Error: the dashboard needs {named}, which this install left out: "
           "pip install 'email-automation[dashboard]'\n")
    assert started == []


def test_a_streamlit_older_than_the_extra_allows_is_named_with_the_upgrade_command(monkeypatch, started):
    real = dashboard_support._installed_version
    monkeypatch.setattr(dashboard_support, "_installed_version",
                        lambda name: "1.36.0" if name == "streamlit" else real(name))
    result = CliRunner().invoke(app, ["dashboard"])
    assert result.exit_code == 2 and started == []
    assert result.output.startswith("Error: the dashboard needs streamlit>=")
    assert result.output.endswith(", but 1.36.0 is installed: pip install --upgrade 'email-automation[dashboard]'\n")


def test_with_the_extra_installed_the_command_starts_streamlit(started):
    assert dashboard_support.missing_message() is None
    result = CliRunner().invoke(app, ["dashboard"])
    assert result.exit_code == 0, result.output
    assert started[0][1:4] == ["-m", "streamlit", "run"]


def test_the_cli_and_cron_never_import_streamlit():
    import subprocess

    code = ("import sys; from email_automation import cli, run_daily, dashboard_support; "
            "from email_automation.cli import dashboard, recipients, sending, setup; "
            "dashboard_support.missing_message(); print(sorted({'streamlit', 'pandas'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"
