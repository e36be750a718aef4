"""A loopback DNS server (dnslib) for tests: TXT records from a dict, nothing else, never the internet.

    server = LoopbackDns(); server.start()
    server.txt["_dmarc.example.com"] = ["v=DMARC1; p=none"]
    resolver = server.resolver()   # a dnspython resolver that asks only this server
"""

from __future__ import annotations

import dns.resolver
from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _Zone(BaseResolver):
    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}
        self.failing: set[str] = set()  # names answered with SERVFAIL

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name in self.failing:
            reply.header.rcode = RCODE.SERVFAIL
        elif name not in self.txt:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for text in self.txt[name]:
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(text), ttl=60))
        return reply


class LoopbackDns:
    def __init__(self) -> None:
        self.zone = _Zone()
        self.server = DNSServer(self.zone, address="127.0.0.1", port=0, logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))

    @property
    def txt(self) -> dict[str, list[str]]:
        return self.zone.txt

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
        self.zone.txt.clear()
        self.zone.failing.clear()

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 2.0
        return resolver
