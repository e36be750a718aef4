"""`email-automation dashboard`: start the Streamlit dashboard as a child process.

Streamlit runs `dashboard.py` as a script in its own process; this command only builds its
command line and environment, so the CLI (and cron) never import streamlit.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import BadInput, DbOption, app, cli_errors, open_database, say, settings_for

DASHBOARD_SCRIPT = Path(__file__).parent.parent / "dashboard.py"
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8501


def streamlit_command(*, address: str, port: int) -> list[str]:
    """The `streamlit run` command line for the dashboard, with this interpreter's streamlit."""
    return [
        sys.executable, "-m", "streamlit", "run", str(DASHBOARD_SCRIPT),
        "--server.address", address,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",  # no "Deploy" button: this app is not for Streamlit Cloud
        # The page sets the values of the closed tabs' widgets again to keep them (dashboard.py):
        # not the duplication this warning is about.
        "--global.disableWidgetStateDuplicationWarning", "true",
    ]


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_port_free(address: str, port: int) -> None:
    """Refuse before printing a URL that another program already answers on.

    Streamlit would otherwise print its own error after ours said where to browse to.

    Raises:
        BadInput: the address cannot be listened on, or the port is taken.
    """
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BadInput(f"--address {address}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # SO_REUSEADDR as servers set it (Tornado does): a port in TIME_WAIT is free, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise BadInput(f"{address}:{port} is not free ({exc.strerror}): another dashboard may be running; "
                           "choose another port with --port") from None


def _run_until_stopped(command: list[str], env: dict[str, str]) -> int:
    """Run the child; Ctrl+C and SIGTERM stop it (and wait for it) instead of orphaning it."""
    child = subprocess.Popen(command, env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # the child got the same SIGINT and is shutting down
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
@cli_errors
def dashboard(
    db: DbOption = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = DEFAULT_PORT,
    address: Annotated[str, typer.Option(
        "--address", help="Address to listen on. Keep 127.0.0.1 and use an SSH tunnel.")] = DEFAULT_ADDRESS,
) -> None:
    """Start the web dashboard (Streamlit) on 127.0.0.1:8501: sends per day, the log, the queue, admin actions."""
    from .. import dashboard_support
    from ..errors import ConfigError

    if problem := dashboard_support.missing_message():  # the `dashboard` extra is not installed
        raise ConfigError(problem)
    settings = settings_for(db)  # a bad setting fails here, with the CLI's one-line error
    open_database(settings).close()  # refuses a missing or foreign file, upgrades an older schema
    check_port_free(address, port)
    env = dict(os.environ)
    if db is not None:
        env["DB_PATH"] = str(settings.db_path.resolve())
    if not is_loopback(address):
        say(f"Warning: listening on {address} exposes the dashboard to the network; "
            "prefer 127.0.0.1 and an SSH tunnel.")
    say(f"Dashboard: http://{'127.0.0.1' if address in ('0.0.0.0', '::') else address}:{port} "
        f"(database {settings.db_path}; Ctrl+C to stop)")
    code = _run_until_stopped(streamlit_command(address=address, port=port), env)
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise typer.Exit(code)
