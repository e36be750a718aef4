"""Shared fixtures: a fresh database per test, settings pointing at it, a fixed clock."""

from __future__ import annotations

import functools
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from email_automation.config import Settings, load_settings
from email_automation.database import init_db


def pytest_collection_modifyitems(items) -> None:
    """The slow tests (kill loops, real browser) first, in their order: `make test` hands out test
    files in this order (pytest-xdist --dist loadfile), so the long ones start at once instead of
    one of them ending the run on one worker while the others have finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_setup(item) -> None:
    _scan_streamlit_components_once()


def _scan_streamlit_components_once() -> None:
    """Each AppTest makes a new Streamlit runtime, which scans every installed distribution's
    metadata for custom components (streamlit.components.v2.manifest_scanner): 0.4 s of CPU per
    AppTest, half of a typical one. The installed packages do not change during a test session, so
    the scan's answer is kept. Only once the tests have imported Streamlit themselves."""
    if "streamlit" not in sys.modules:
        return
    try:
        from streamlit.components.v2 import manifest_scanner
    except ImportError:  # a Streamlit without components v2 scans nothing
        return
    scan = getattr(manifest_scanner, "scan_component_manifests", None)
    if scan is not None and not hasattr(scan, "cache_info"):
        manifest_scanner.scan_component_manifests = functools.cache(scan)


def _isolate(monkeypatch, tmp_path) -> None:
    """No test reads the developer's environment, .env or real AWS credentials."""
    import os

    for name in list(os.environ):
        if name.lower() in Settings.model_fields or name.startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
    # Tests run at any hour: the send window is open unless a test narrows it.
    monkeypatch.setenv("SEND_DAYS", "mon-sun")
    monkeypatch.setenv("SEND_HOURS", "00:00-24:00")
    # ...and most tests mail many people at example.com: no per-company limits unless a test sets them.
    monkeypatch.setenv("MAX_NEW_PER_COMPANY_PER_DAY", "1000000")
    monkeypatch.setenv("MAX_CONTACTS_PER_COMPANY", "1000000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    _isolate(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def moto_url():
    """A moto server on loopback, for code that reaches SES over real HTTP (AWS_ENDPOINT_URL)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def _dns_server():
    from tests.dns_server import LoopbackDns

    server = LoopbackDns().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def dns_zone(_dns_server, monkeypatch):
    """Every DNS lookup of the code goes to a loopback server (dnslib), empty unless a test fills it."""
    from email_automation import sender_auth

    _dns_server.reset()
    monkeypatch.setattr(sender_auth, "make_resolver", lambda settings: _dns_server.resolver())
    return _dns_server


def make_settings(folder: Path) -> Settings:
    """The tests' settings, with the database and outbox in `folder`."""
    return load_settings(
        db_path=folder / "test.db",
        dry_run=False,
        delay_seconds=0,
        sender_email="jane@example.com",
        sender_name="Jane Sender",
        timezone="Europe/Berlin",
        outbox_dir=folder / "outbox",
        aws_region="us-east-1",
    )


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def db(settings):
    conn = init_db(settings.db_path)
    yield conn
    conn.close()


@pytest.fixture
def shared_db(settings, db):
    """`db` for a run whose test transport uses the run's connection from the send's worker thread."""
    conn = shared_connection(settings.db_path)
    yield conn
    conn.close()


def shared_connection(path, *, readonly: bool = False):
    """The database opened as `database.connect` opens it, but usable from a send's worker thread
    too: for a test transport that looks at, or changes, the database while its send is in flight
    (the run's own thread waits for the send meanwhile, so the two never use it at once)."""
    import sqlite3
    from unittest import mock

    from email_automation import database

    real = sqlite3.connect
    with mock.patch.object(sqlite3, "connect", functools.partial(real, check_same_thread=False)):
        return database.connect(path, readonly=readonly)


class Clock:
    """A settable clock for code that takes `now=`; tests move it instead of sleeping."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


CLOCK_START = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Clock:
    return Clock(CLOCK_START)


@pytest.fixture(scope="session")
def _filled_template(tmp_path_factory) -> tuple[Path, dict]:
    """tests.test_reports.fill_database run once per test session, for the `settings` and `clock`
    fixtures' values; `filled_db` copies it. Five real runs take about a second: once, not per test."""
    from .test_reports import fill_database

    folder = tmp_path_factory.mktemp("filled")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch, folder)
        settings = make_settings(folder)
        days = fill_database(settings, CLOCK_START)
    assert not Path(f"{settings.db_path}-wal").exists()  # closed: the file alone is the database
    return settings.db_path, days


@pytest.fixture
def filled_db(settings, _filled_template) -> dict:
    """A database filled by real runs (tests.test_reports.fill_database) at `settings.db_path`;
    returns the run days. Each test gets its own copy, so it may change it."""
    template, days = _filled_template
    shutil.copyfile(template, settings.db_path)
    return dict(days)
