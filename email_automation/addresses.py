"""Email addresses in the one form they are stored, compared and sent in.

Trimmed, lower-cased, with an internationalised domain in its ASCII (IDNA) form, which SES needs,
and validated by email-validator's rules (syntax only, no DNS). Shared by the CSV import and by
every command that looks a recipient up by address.
"""

from __future__ import annotations

import re
from functools import lru_cache

import email_validator
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import ATEXT, DNS_LABEL_LENGTH_LIMIT, DOMAIN_MAX_LENGTH, EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_domain_name

# A plain ASCII address: email-validator's own dot-atom local part (RFC 5322 3.2.3: no quotes, no
# second @-sign, no angle brackets), one @-sign, and a domain of letters, digits, dots and hyphens,
# the only characters an ASCII domain may keep (RFC 1123 2.1). Nearly every address in a list.
_PLAIN = re.compile("[" + ATEXT + "]+(?:\\.[" + ATEXT + "]+)*@([a-zA-Z0-9.-]+)")


# Labels of small letters and digits, hyphens only inside, at least one dot, a last label ending in
# a letter: a host name email-validator's domain check returns unchanged (RFC 952, RFC 1123 2.1).
_HOST_LABEL = "[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_HOST = re.compile(f"{_HOST_LABEL}(?:\\.{_HOST_LABEL})*\\.(?:[a-z0-9][a-z0-9-]*)?[a-z]")


@lru_cache(maxsize=65536)
def _domain(domain: str) -> tuple[str, int] | None:
    """(ASCII form, longest UTF-8 length of its forms) if email-validator accepts the domain, else None.

    Cached: a list repeats a few thousand company domains, and this is most of email-validator's cost.
    """
    if _plain_host(domain):
        return domain, len(domain)
    try:
        info = validate_email_domain_name(domain)
    except EmailNotValidError:
        return None
    return info["ascii_domain"], max(len(info["ascii_domain"]), len(info["domain"].encode()))


def _plain_host(domain: str) -> bool:
    """True for a lower-case host name email-validator's domain check accepts unchanged, without it.

    That check looks at each character three times in Python (77 µs a domain, which a list with a
    new domain on every other row pays per row). For small letters, digits, dots and hyphens every
    character check passes and UTS-46 changes nothing; what remains is this: dots and hyphens in
    place (`_HOST`), a last label ending in a letter, no `--` (an R-LDH or Punycode label, RFC 5890),
    lengths, and no special-use name. Anything else goes to email-validator.
    """
    return (_HOST.fullmatch(domain) is not None and "--" not in domain and len(domain) <= DOMAIN_MAX_LENGTH
            and max(map(len, domain.split("."))) <= DNS_LABEL_LENGTH_LIMIT
            and not any(domain.endswith("." + name) for name in email_validator.SPECIAL_USE_DOMAIN_NAMES))


def plain_form(address: str) -> str | None:
    """The stored form of a trimmed plain ASCII `local@domain`, or None when only `validate_email` can tell.

    Mirrors `validate_email` step by step for this case, with email-validator's own pattern and
    domain check: `split_email` returns the two halves as they are, ASCII needs no Unicode
    normalisation, and 254 is its limit for every form it measures. It only ever accepts; every
    refusal is left to `validate_email` for the exact reason, and so is everything when a caller
    changed email-validator's global options. One regular expression and a cached domain: the CSV
    import calls it for every row.
    """
    if email_validator.STRICT or email_validator.TEST_ENVIRONMENT or not email_validator.GLOBALLY_DELIVERABLE:
        return None
    match = _PLAIN.fullmatch(address)
    if match is None:
        return None
    after_at = match.start(1)
    # UTS-46 maps capitals to small letters before any check of email-validator's that could tell
    # them apart, so `Example.COM` shares `example.com`'s verdict and cache entry.
    known = _domain(match[1].lower())
    if known is None or len(address) > EMAIL_MAX_LENGTH or after_at + known[1] > EMAIL_MAX_LENGTH:
        return None
    return (address[:after_at] + known[0]).lower()


def normalize_email(raw: str) -> str:
    """The stored form of an address: trimmed, lower-cased, domain in ASCII; email-validator's rules.

    Raises:
        EmailNotValidError: with email-validator's explanation.
    """
    address = raw.strip()
    plain = plain_form(address)
    if plain is not None:
        return plain
    result = validate_email(address, check_deliverability=False)
    return (result.ascii_email or result.normalized).lower()


def lookup_form(raw: str) -> str:
    """The stored form of an address a user typed; trimmed and lower-cased when it is not valid."""
    try:
        return normalize_email(raw)
    except EmailNotValidError:
        return raw.strip().lower()
