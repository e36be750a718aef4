"""Start-up as a user meets it, in a fresh interpreter: a fast --help, Ctrl-C and a full disk as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import typer.main

from email_automation import database
from email_automation.cli import COMMANDS, app
from tests.cli_helpers import cli

# pydantic and typer's `_adapters` (typer 0.29 converts every option through a pydantic
# TypeAdapter): half of `status`'s time once, and nothing a command needs.
HEAVY = ("boto3", "botocore", "streamlit", "jinja2", "pydantic", "pydantic_settings", "typer._adapters",
         "email_validator", "css_inline", "html2text", "tenacity", "pandas")


# `status` builds only the commands of its own module.
OTHER_COMMANDS = tuple(f"email_automation.cli.{module}" for module in COMMANDS if module != "sending")


def python(code: str, *args: str, cwd=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter; `env` is added to this process's environment."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, **(env or {})})


# The console script, as a user starts it with the arguments given.
RUN_MAIN = """
    import sys
    from email_automation.cli import main
    sys.argv = ["email-automation", *sys.argv[1:]]
    main()
"""


def loaded(modules: tuple[str, ...], *args: str, cwd=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the command line in a fresh interpreter; its last line of stdout lists those of
    `modules` it loaded."""
    result = python(f"""
        import sys
        from email_automation.cli import main
        sys.argv = ["email-automation", *sys.argv[1:]]
        try:
            main()
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print(sorted(m for m in {modules!r} if m in sys.modules))
    """, *args, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize(("args", "heavy"), [
    (["--help"], (*HEAVY, "rich")),
    (["--version"], (*HEAVY, "rich")),
    (["run", "--help"], HEAVY),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_help_loads_none_of_the_heavy_libraries(args, heavy):
    assert loaded(heavy, *args).stdout.splitlines()[-1] == "[]"


def test_each_command_is_where_the_table_of_command_modules_says():
    """`email-automation NAME` imports only the module COMMANDS names for NAME: a wrong entry
    would make NAME an unknown command."""
    group = typer.main.get_command(app)
    found = {name: (command.callback or next(iter(command.commands.values())).callback).__module__.rsplit(".", 1)[1]
             for name, command in group.commands.items()}
    assert found == {name: module for module, names in COMMANDS.items() for name in names}


def test_the_help_lists_every_command_and_a_misspelt_one_is_suggested():
    listed = python(RUN_MAIN, "--help").stdout
    assert all(f"  {name} " in listed for names in COMMANDS.values() for name in names)
    misspelt = python(RUN_MAIN, "stauts")
    assert (misspelt.returncode, misspelt.stderr.splitlines()[-1]) == (2, "Error: No such command 'stauts'. Did you mean 'status'?")


def test_status_loads_no_sending_library_and_no_settings_framework(tmp_path):
    """`status` answers from the database: no boto3, Jinja2 or email package, its table is plain
    text (no rich), and the settings are read without pydantic or python-dotenv when there is no
    .env file."""
    database.init_db(tmp_path / "x.db").close()
    result = loaded((*HEAVY, *OTHER_COMMANDS, "rich", "email.message", "asyncio", "dotenv", "inscriptis", "lxml",
                     "imapclient"), "status", "--db", "x.db", cwd=tmp_path)
    assert "DAILY_LIMIT 80" in result.stdout  # it did answer
    assert result.stdout.splitlines()[-1] == "[]"


def test_a_run_from_cron_loads_neither_rich_nor_pydantic(tmp_path):
    """A dry run with nothing to send, its output to a file as under cron: no progress bar, no rich."""
    database.init_db(tmp_path / "x.db").close()
    result = loaded(("rich", "pydantic", "typer._adapters"), "run", "--db", "x.db", cwd=tmp_path)
    assert "Dry run: 0 message(s) written" in result.stdout
    assert result.stdout.splitlines()[-1] == "[]"


def test_a_real_run_with_nothing_to_send_loads_no_library_only_sending_needs(tmp_path):
    """Checking that there is nothing to send needs no address validator, SES client, inbox
    reader, retry library, HTML parser or CSS inliner."""
    database.init_db(tmp_path / "x.db").close()
    heavy = ("email_validator", "botocore", "imapclient", "tenacity", "lxml", "inscriptis", "css_inline")
    result = loaded(heavy, "run", cwd=tmp_path, env=dict(
        DB_PATH="x.db", DRY_RUN="false", TRANSPORT="smtp", SMTP_HOST="127.0.0.1", SENDER_EMAIL="jane@example.com",
        SEND_DAYS="mon-sun", SEND_HOURS="00:00-24:00"))
    assert "Sent 0, failed 0" in result.stdout  # it did run
    assert result.stdout.splitlines()[-1] == "[]"


# Ctrl-C while a module loads: the hook sends the process a real SIGINT when the import starts.
CTRL_C_DURING_IMPORT = """
    import os, signal, sys

    MODULE = sys.argv[1]
    # As at a terminal: a process started from a background job (CI, a test runner's worker) may
    # inherit SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    class CtrlC:
        def find_spec(self, name, path=None, target=None):
            if name == MODULE:
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, CtrlC())
    sys.argv = ["email-automation", *sys.argv[2:]]
    from email_automation.cli import main
    main()
"""


@pytest.mark.parametrize("module", ["typer", "email_automation.config"])
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path, module):
    result = python(CTRL_C_DURING_IMPORT, module, "status", "--db", "x.db", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (130, "", "Interrupted.\n")


RLIMIT_FULL_DISK = """
    import resource, signal, sys
    # A process may write no byte past this size: what a full disk looks like to SQLite.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    sys.argv = ["email-automation", *sys.argv[1:]]
    from email_automation.cli import main
    main()
"""


@pytest.mark.parametrize("command", ["init", "status"])
def test_a_disk_that_takes_no_more_bytes_when_opening_the_database_exits_2(tmp_path, command):
    database.init_db(tmp_path / "x.db").close()  # closed: its -wal and -shm files are gone
    result = python(RLIMIT_FULL_DISK, command, "--db", "x.db", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "Error: x.db: cannot open database: disk I/O error\n"


def test_a_full_disk_during_a_command_exits_2_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    assert cli("init", "--db", "x.db").exit_code == 0
    real_connect = database.connect

    def connect_to_a_full_disk(path, **kwargs):
        conn = real_connect(path, **kwargs)
        # SQLite answers SQLITE_FULL once the file would have to grow (https://www.sqlite.org/pragma.html#pragma_max_page_count).
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(database, "connect", connect_to_a_full_disk)
    (tmp_path / "many.csv").write_text("email\n" + "".join(f"person{i}@example.com\n" for i in range(3000)))
    result = cli("import", "many.csv", "--db", "x.db")
    assert result.exit_code == 2
    assert result.stderr == "Error: database: database or disk is full\n"
    monkeypatch.undo()
    assert database.connect(tmp_path / "x.db").execute("SELECT count(*) FROM recipients").fetchone()[0] == 0


def test_an_output_that_cannot_show_a_character_gets_it_escaped_not_a_traceback(tmp_path):
    database.init_db(tmp_path / "x.db").close()
    (tmp_path / "people.csv").write_text("email\nann@example.com\n", encoding="utf-8")
    assert python(RUN_MAIN, "import", "people.csv", "--db", "x.db", "--campaign", "東京", cwd=tmp_path).returncode == 0
    result = python(RUN_MAIN, "status", "--db", "x.db", cwd=tmp_path, env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stderr
    assert any(line.startswith(" \\u6771\\u4eac ") and "active" in line for line in result.stdout.splitlines())



def script(*args: str, cwd) -> subprocess.CompletedProcess:
    """The installed console entry point (`python -m email_automation` runs the same `console`)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # stdout buffered
    return subprocess.run([sys.executable, "-m", "email_automation", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**env, "SENDER_EMAIL": "me@example.com",
                                                     "DRY_RUN": "true", "DELAY_SECONDS": "0"})


def test_the_script_exits_with_the_commands_code_its_output_whole_and_the_database_closed(tmp_path):
    """The script skips the interpreter's teardown: the exit code, every line of output and the
    closed database (SQLite's checkpoint removes the -wal file) must not suffer for it."""
    assert script("init", "--db", "x.db", cwd=tmp_path).returncode == 0
    (tmp_path / "r.csv").write_text("email,first_name\n" + "".join(f"p{i}@example.com,P{i}\n" for i in range(300)))
    assert script("import", "r.csv", "--db", "x.db", cwd=tmp_path).returncode == 0
    ran = script("run", "--db", "x.db", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["previewed"] == 80  # DAILY_LIMIT's default, every line of it there
    assert not list(tmp_path.glob("x.db-*")), "closed: its WAL checkpointed into the file and removed"
    assert script("status", "--db", "missing.db", cwd=tmp_path).returncode == 2
    assert script("no-such-command", cwd=tmp_path).returncode == 2


def test_the_script_exits_cleanly_when_started_without_a_stdout(tmp_path):
    assert script("init", "--db", "x.db", cwd=tmp_path).returncode == 0
    closed = subprocess.run([sys.executable, "-m", "email_automation", "status", "--db", "x.db"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
                            env={**os.environ, "SENDER_EMAIL": "me@example.com"},
                            preexec_fn=lambda: os.close(1))
    assert (closed.returncode, closed.stderr) == (0, "")


def into_a_closed_pipe(*args: str, cwd) -> subprocess.CompletedProcess:
    """The script with stdout a pipe whose reader has gone, as in `email-automation status | head -1`
    once head has its line: every write fails with EPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "email_automation", *args], cwd=cwd, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "SENDER_EMAIL": "me@example.com", "DRY_RUN": "true",
                                   "DELAY_SECONDS": "0"})
    finally:
        os.close(write)


def test_status_into_a_pipe_whose_reader_has_gone_ends_without_a_word(tmp_path):
    assert script("init", "--db", "x.db", cwd=tmp_path).returncode == 0
    piped = into_a_closed_pipe("status", "--db", "x.db", cwd=tmp_path)
    assert (piped.returncode, piped.stderr) == (0, "")
    assert into_a_closed_pipe("status", "--db", "missing.db", "--json", cwd=tmp_path).returncode == 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args, error", [
    (["--version"], "No space left on device"), (["--help"], "No space left on device"),
    (["run", "--help"], "No space left on device"), (["status", "--db", "x.db", "--json"], "No space left on device"),
    (["status", "--json", "--bogus"], "No such option"),  # click's wording of the rest moves between versions
    (["run", "--db", "x.db"], "No space left on device")])  # its log lines, then its summary
def test_output_to_a_full_disk_is_one_line_on_stderr_not_a_traceback(tmp_path, args, error):
    """Every write to /dev/full fails with ENOSPC: the help, the version (written before any
    command runs) and a command's JSON; the error object that cannot be written there either
    goes to stderr."""
    assert script("init", "--db", "x.db", cwd=tmp_path).returncode == 0
    with open("/dev/full", "w") as full:
        ended = subprocess.run([sys.executable, "-m", "email_automation", *args], cwd=tmp_path, stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=120,
                               env={**os.environ, "SENDER_EMAIL": "me@example.com"})
    assert ended.returncode == 2 and ended.stderr.startswith(f"Error: {error}") and ended.stderr.count("\n") == 1
    assert args[-1] != "--bogus" or "--bogus" in ended.stderr


@pytest.mark.parametrize("args", [["--version"], ["config"]])
def test_the_version_and_settings_into_a_pipe_whose_reader_has_gone_end_without_a_word(tmp_path, args):
    piped = into_a_closed_pipe(*args, cwd=tmp_path)
    assert (piped.returncode, piped.stderr) == (0, "")


def test_a_run_whose_stdout_reader_has_gone_goes_on_without_a_traceback(tmp_path):
    assert script("init", "--db", "x.db", cwd=tmp_path).returncode == 0
    (tmp_path / "r.csv").write_text("email,first_name\n" + "".join(f"p@company{i}.example,P{i}\n" for i in range(5)))
    assert script("import", "r.csv", "--db", "x.db", cwd=tmp_path).returncode == 0
    piped = into_a_closed_pipe("run", "--db", "x.db", "--log-file", "run.log", cwd=tmp_path)
    assert (piped.returncode, piped.stderr) == (0, "")
    assert len(list(tmp_path.glob("outbox/*/*.eml"))) == 5, "every message of the dry run written all the same"
    assert (tmp_path / "run.log").read_text().count(" dry_run ") == 5, "the log file has every line"


def test_a_run_into_a_closed_pipe_still_says_on_stderr_why_it_failed(tmp_path):
    """The summary on stdout finds no reader; the error after it still reaches stderr, with its code."""
    assert script("init", "--db", "x.db", cwd=tmp_path).returncode == 0
    (tmp_path / "r.csv").write_text("email,first_name,role\na@one.example,A,CTO\nb@two.example,B,\n")
    (tmp_path / "b.html").write_text("<p>{{ 1 / (role | length) }}</p>")
    for args in (["import", "r.csv"], ["template", "set", "--html", "b.html"]):
        assert script(*args, "--db", "x.db", cwd=tmp_path).returncode == 0
    piped = into_a_closed_pipe("run", "--db", "x.db", cwd=tmp_path)
    assert piped.returncode == 2
    assert piped.stderr.startswith("Error: campaign 'default': cannot render the HTML body for b@two.example")
