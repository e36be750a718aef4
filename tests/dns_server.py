"""A loopback DNS server (dnslib) for tests: TXT records from a dict, nothing else, never the internet.

    server = LoopbackDns(); server.start()
    server.txt["_dmarc.example.com"] = ["v=DMARC1; p=none"]
    resolver = server.resolver()   # a dnspython resolver that asks only this server
"""

from __future__ import annotations

import dns.resolver
from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _Zone(BaseResolver):
    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}
        self.mx: dict[str, list[tuple[int, str]]] = {}
        self.a: dict[str, list[str]] = {}
        self.aaaa: dict[str, list[str]] = {}
        self.failing: set[str] = set()  # names answered with SERVFAIL

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        tables = {QTYPE.TXT: (self.txt, TXT), QTYPE.MX: (self.mx, None), QTYPE.A: (self.a, A), QTYPE.AAAA: (self.aaaa, AAAA)}
        if name in self.failing:
            reply.header.rcode = RCODE.SERVFAIL
        elif not any(name in table for table, _ in tables.values()):
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in tables:  # a known name without this type: an empty answer (NoAnswer)
            table, rdata = tables[request.q.qtype]
            for value in table.get(name, []):
                data = MX(value[1], value[0]) if rdata is None else rdata(value)
                reply.add_answer(RR(name, request.q.qtype, rdata=data, ttl=60))
        return reply


class LoopbackDns:
    def __init__(self) -> None:
        self.zone = _Zone()
        self.server = DNSServer(self.zone, address="127.0.0.1", port=0, logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))

    @property
    def txt(self) -> dict[str, list[str]]:
        return self.zone.txt

    @property
    def mx(self) -> dict[str, list[tuple[int, str]]]:
        return self.zone.mx

    @property
    def a(self) -> dict[str, list[str]]:
        return self.zone.a

    @property
    def failing(self) -> set[str]:
        return self.zone.failing

    @property
    def port(self) -> int:
        return self.server.server.server_address[1]

    def start(self) -> LoopbackDns:
        self.server.start_thread()
        return self

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        for table in (self.zone.txt, self.zone.mx, self.zone.a, self.zone.aaaa, self.zone.failing):
            table.clear()

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 2.0
        return resolver
