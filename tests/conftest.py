"""Shared fixtures: a fresh database per test, settings pointing at it, a fixed clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from email_automation.config import Settings, load_settings
from email_automation.database import init_db


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the developer's environment, .env or real AWS credentials."""
    import os

    for name in list(os.environ):
        if name.lower() in Settings.model_fields or name.startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.chdir(tmp_path)


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


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(
        db_path=tmp_path / "test.db",
        dry_run=False,
        delay_seconds=0,
        sender_email="jane@example.com",
        sender_name="Jane Sender",
        timezone="Europe/Berlin",
        outbox_dir=tmp_path / "outbox",
        aws_region="us-east-1",
    )


@pytest.fixture
def db(settings):
    conn = init_db(settings.db_path)
    yield conn
    conn.close()


class Clock:
    """A settable clock for code that takes `now=`; tests move it instead of sleeping."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc))
