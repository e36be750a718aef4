"""The `email-automation` command: a thin typer layer over the library.

`common` holds the app, the shared options and the error mapping; one module per group of
commands registers its commands on that app and imports only `common` and the library, never
another command module. This package module imports nothing heavy, so that `main` is already
running, and catches a Ctrl-C, while the rest of the program loads.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading

# Each command module and the commands (and command groups) it registers. typer builds every
# registered command before it runs one, so `email-automation status` imports and builds only
# `sending`'s (about 0.03 s less). A name missing here loads them all (a new command works,
# only slower); test_cli_startup checks this table against the commands.
COMMANDS = {
    "setup": ("init", "config", "doctor", "cron", "backup"),
    "recipients": ("import", "retry-failed", "skip", "suppress", "unsubscribe", "unsuppress", "resolve"),
    "campaigns": ("preview", "template", "step", "pause", "resume"),
    "sending": ("run", "status", "events"),
    "replies": ("inbox", "mark"),
    "dashboard": ("dashboard",),
}


def main() -> None:
    """The console script: run the command line; Ctrl-C anywhere is one line and exit code 130.

    A terminal or pipe that cannot show a character (PYTHONIOENCODING=ascii, say) gets it escaped
    rather than a traceback.
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        build_app(sys.argv[1:])()
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        raise SystemExit(130) from None
    except OSError as exc:  # --help, --version or a usage line to a full disk; each command maps its own
        # (`cli_errors`), and click ends the help into a closed pipe itself, with exit 1
        from .common import output_failed

        raise SystemExit(output_failed(exc)) from None


def console() -> None:
    """The installed `email-automation` script: `main`, then an exit that does not tear the
    interpreter down object by object (0.04-0.07 s after a run, for memory the operating system
    takes back at once). What an exit must do still happens: the connections that only reference
    cycles held are closed (SQLite checkpoints and removes its WAL file), the atexit handlers run
    (logging's flush among them) and stdout and stderr are flushed. When a thread that is not a
    daemon is still running, the normal exit waits for it instead.
    """
    try:
        main()
    except SystemExit as exit:
        status = exit.code
    else:
        status = 0
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.main_thread()):
        raise SystemExit(status)
    if status is not None and not isinstance(status, int):  # what sys.exit does with a message
        sys.stderr.write(f"{status}\n")
        status = 1
    gc.collect()
    atexit._run_exitfuncs()  # the handlers the normal exit would run here
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: started with that descriptor closed
                stream.flush()
        except (OSError, ValueError):  # a closed pipe: the normal exit says 120 as well
            status = status or 120
    os._exit((status or 0) & 0xFF)  # what the operating system keeps of any exit code


def build_app(args: list[str] | None = None):
    """The typer app with the command modules registered (importing one registers its commands).

    Only the module of the command `args` starts with, when it names one; every module otherwise
    (no arguments, `--help`, `--version`, a misspelt name that typer suggests a command for).
    """
    from importlib import import_module

    wanted = [module for module, names in COMMANDS.items() if args and args[0] in names] or list(COMMANDS)
    for module in wanted:
        import_module(f"{__name__}.{module}")
    return import_module(f"{__name__}.common").app


def __getattr__(name: str):
    if name == "app":  # `from email_automation.cli import app`, for tests and scripts
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
