"""The `email-automation` command: a thin typer layer over the library.

`common` holds the app, the shared options and the error mapping; one module per group of
commands registers its commands on that app and imports only `common` and the library, never
another command module. This package module imports nothing heavy, so that `main` is already
running, and catches a Ctrl-C, while the rest of the program loads.
"""

from __future__ import annotations

import sys

COMMAND_MODULES = ("setup", "recipients", "campaigns", "sending", "replies", "dashboard")


def main() -> None:
    """The console script: run the command line; Ctrl-C anywhere is one line and exit code 130."""
    try:
        build_app()()
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        raise SystemExit(130) from None


def build_app():
    """The typer app with every command group registered (importing a group registers it)."""
    from importlib import import_module

    for name in COMMAND_MODULES:
        import_module(f"{__name__}.{name}")
    return import_module(f"{__name__}.common").app


def __getattr__(name: str):
    if name == "app":  # `from email_automation.cli import app`, for tests and scripts
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
