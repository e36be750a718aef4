"""CHECK_MX: a domain that cannot receive mail is a reject at import; DNS trouble never is.

DNS answers come from conftest's loopback dnslib server (`dns_zone`), never the internet.
"""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from email_automation.cli import app
from email_automation.database import connect
from email_automation.mx_check import GIVE_UP_AFTER, DomainCheck

runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def zone(dns_zone):
    dns_zone.mx["good.org"] = [(10, "mx.good.org")]
    dns_zone.a["a-only.org"] = ["192.0.2.1"]  # no MX: mail goes to the A record (RFC 5321 §5.1)
    dns_zone.mx["null.org"] = [(0, ".")]  # RFC 7505: accepts no mail
    dns_zone.txt["nomail.org"] = ["v=spf1 -all"]  # exists, but neither MX nor A
    dns_zone.failing.add("flaky.org")
    return dns_zone


def test_import_rejects_undeliverable_domains_with_the_reason(zone, tmp_path, monkeypatch):
    monkeypatch.setenv("CHECK_MX", "true")
    db = str(tmp_path / "mx.db")
    cli("init", "--db", db)
    rows = ["ann@good.org", "bob@a-only.org", "cy@null.org", "dee@nomail.org", "eve@missing.org",
            "fay@flaky.org", "gus@good.org"]
    (tmp_path / "r.csv").write_text("email\n" + "\n".join(rows) + "\n")

    result = cli("import", str(tmp_path / "r.csv"), "--db", db)

    assert result.exit_code == 0, result.output
    imported = [r[0] for r in connect(db).execute("SELECT email FROM recipients ORDER BY id")]
    assert imported == ["ann@good.org", "bob@a-only.org", "fay@flaky.org", "gus@good.org"]  # DNS failure: kept
    with open(tmp_path / "r.rejects.csv", newline="", encoding="utf-8-sig") as f:
        rejects = {row["email"]: row["reason"] for row in csv.DictReader(f)}
    assert rejects == {
        "cy@null.org": "domain null.org accepts no mail (null MX, RFC 7505)",
        "dee@nomail.org": "domain nomail.org has no MX or A/AAAA record: no mail can be delivered to it",
        "eve@missing.org": "domain missing.org does not exist (DNS: NXDOMAIN)",
    }


def test_without_check_mx_nothing_is_looked_up(zone, tmp_path):
    db = str(tmp_path / "mx.db")
    cli("init", "--db", db)
    (tmp_path / "r.csv").write_text("email\neve@missing.org\n")
    assert cli("import", str(tmp_path / "r.csv"), "--db", db, "--json").exit_code == 0
    assert connect(db).execute("SELECT count(*) FROM recipients").fetchone()[0] == 1


def test_each_domain_is_asked_once_and_a_dead_resolver_stops_the_checks(zone):
    asked = []

    class Counting:
        def __init__(self, resolver):
            self.resolver = resolver

        def resolve(self, name, kind):
            asked.append((name, kind))
            return self.resolver.resolve(name, kind)

    check = DomainCheck(Counting(zone.resolver()))
    assert [check("good.org"), check("GOOD.org"), check("good.org.")] == [None] * 3
    assert asked == [("good.org", "MX")]
    zone.failing.update({f"down{i}.org" for i in range(10)})
    assert all(check(f"down{i}.org") is None for i in range(10))
    assert len(asked) == 1 + GIVE_UP_AFTER  # then no more lookups for this import
