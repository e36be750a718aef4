"""Email addresses in the one form they are stored, compared and sent in.

Trimmed, lower-cased, with an internationalised domain in its ASCII (IDNA) form, which SES needs,
and validated by email-validator's rules (syntax only, no DNS). Shared by the CSV import and by
every command that looks a recipient up by address.
"""

from __future__ import annotations

from functools import lru_cache

import email_validator
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import DOT_ATOM_TEXT, EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_domain_name


@lru_cache(maxsize=65536)
def _domain(domain: str) -> tuple[str, int] | None:
    """(ASCII form, longest UTF-8 length of its forms) if email-validator accepts the domain, else None.

    Cached: a list repeats a few thousand company domains, and this is most of email-validator's cost.
    """
    try:
        info = validate_email_domain_name(domain)
    except EmailNotValidError:
        return None
    return info["ascii_domain"], max(len(info["ascii_domain"]), len(info["domain"].encode()))


def _plain_address(address: str) -> str | None:
    """The stored form of a plain ASCII `local@domain`, or None when only `validate_email` can tell.

    Mirrors `validate_email` step by step for this case, with email-validator's own pattern and
    domain check: no quotes, `<` or second `@` means `split_email` returns the two halves as they
    are, ASCII needs no Unicode normalisation, and 254 is its limit for every form it measures.
    It only ever accepts; every refusal is left to `validate_email` for the exact reason, and so is
    everything when a caller changed email-validator's global options.
    """
    if not address.isascii() or address.count("@") != 1 or '"' in address or "<" in address:
        return None
    if email_validator.STRICT or email_validator.TEST_ENVIRONMENT or not email_validator.GLOBALLY_DELIVERABLE:
        return None
    local, _, domain = address.partition("@")
    if not DOT_ATOM_TEXT.match(local) or not domain or domain[0] == "[":
        return None
    known = _domain(domain)
    if known is None or len(address) > EMAIL_MAX_LENGTH or len(local) + 1 + known[1] > EMAIL_MAX_LENGTH:
        return None
    return f"{local}@{known[0]}".lower()


def normalize_email(raw: str) -> str:
    """The stored form of an address: trimmed, lower-cased, domain in ASCII; email-validator's rules.

    Raises:
        EmailNotValidError: with email-validator's explanation.
    """
    address = raw.strip()
    plain = _plain_address(address)
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
