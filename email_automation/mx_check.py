"""CHECK_MX: at import, an address whose domain cannot receive mail is a reject, with the reason.

Mail goes to a domain's MX hosts, or, without MX records, to its A/AAAA address (the implicit MX
of RFC 5321 §5.1). A domain with neither, one that does not exist, or one that publishes a
"null MX" (RFC 7505: it accepts no mail) can only bounce, and every bounce counts against the
sender. Each domain is looked up once per import, each lookup bounded in time; a DNS failure
(time-out, SERVFAIL) is never a reject, and after a few in a row the check stops for the import.
"""

from __future__ import annotations

import logging
from typing import Any

import dns.exception
import dns.resolver

log = logging.getLogger("email_automation.import")

LOOKUP_SECONDS = 3.0
GIVE_UP_AFTER = 3  # DNS failures in a row: the resolver is down, not the domains


class DomainCheck:
    """`check(domain)`: why mail to `domain` cannot be delivered, or None (also when DNS cannot tell)."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver
        self.cache: dict[str, str | None] = {}
        self.failures = 0

    def __call__(self, domain: str) -> str | None:
        domain = domain.lower().rstrip(".")
        if domain not in self.cache:
            self.cache[domain] = self._problem(domain)
        return self.cache[domain]

    def _problem(self, domain: str) -> str | None:
        if self.failures >= GIVE_UP_AFTER:
            return None
        mx = self._ask(domain, "MX")
        if mx is None:
            return None
        if mx == "NXDOMAIN":
            return f"domain {domain} does not exist (DNS: NXDOMAIN)"
        if mx:
            if all(str(r.exchange) == "." for r in mx):
                return f"domain {domain} accepts no mail (null MX, RFC 7505)"
            return None
        for kind in ("A", "AAAA"):
            found = self._ask(domain, kind)
            if found is None or (found and found != "NXDOMAIN"):
                return None
        return f"domain {domain} has no MX or A/AAAA record: no mail can be delivered to it"

    def _ask(self, domain: str, kind: str) -> Any:
        """The answer's records, [] for none, "NXDOMAIN", or None when DNS did not answer."""
        try:
            answer = self.resolver.resolve(domain, kind)
        except dns.resolver.NXDOMAIN:
            self.failures = 0
            return "NXDOMAIN"
        except dns.resolver.NoAnswer:
            self.failures = 0
            return []
        except (dns.exception.DNSException, OSError) as err:
            self.failures += 1
            if self.failures == GIVE_UP_AFTER:
                log.warning("CHECK_MX: DNS failed %d times in a row (%s); the rest of the import is not checked",
                            GIVE_UP_AFTER, type(err).__name__)
            return None
        self.failures = 0
        return list(answer)


def for_settings(settings: Any, resolver: dns.resolver.Resolver | None = None) -> DomainCheck | None:
    """The import's domain check with CHECK_MX on, else None."""
    if not settings.check_mx:
        return None
    if resolver is None:
        from .sender_auth import make_resolver

        resolver = make_resolver(settings)
        resolver.lifetime = min(resolver.lifetime, LOOKUP_SECONDS)
    return DomainCheck(resolver)
