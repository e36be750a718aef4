"""`doctor`'s sender-authentication checks: DKIM, custom MAIL FROM, DMARC and SPF.

Gmail and Yahoo ask bulk senders for SPF and DKIM and a DMARC record aligned with the From
domain (https://support.google.com/mail/answer/81126). SES signs with DKIM once the domain's
Easy DKIM records are in place (GetEmailIdentity `DkimAttributes`); SPF aligns with the From
domain only through a custom MAIL FROM domain (`MailFromAttributes`), whose SPF record must
include amazonses.com (https://docs.aws.amazon.com/ses/latest/dg/mail-from.html). DMARC and SPF
are read from DNS (TXT) with dnspython; a DNS failure is a WARN, never a FAIL.
"""

from __future__ import annotations

from typing import Any

import dns.exception
import dns.resolver
from botocore.exceptions import BotoCoreError, ClientError

from .doctor import FAIL, OK, WARN, Check

SES_SPF_INCLUDE = "include:amazonses.com"
DNS_LIFETIME_SECONDS = 5.0


def make_resolver(settings: Any) -> dns.resolver.Resolver:
    """The system's resolver, each lookup bounded (a dead DNS server must not hang doctor)."""
    resolver = dns.resolver.Resolver()
    resolver.lifetime = min(DNS_LIFETIME_SECONDS, settings.send_timeout_seconds)
    return resolver


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str] | None:
    """The TXT strings at `name` ([] when there are none), or None when DNS gave no answer."""
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.DNSException, OSError):
        return None
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def _tagged(records: list[str], version: str) -> list[str]:
    return [r for r in records if r.strip().lower().startswith(version)]


def dmarc_applies(record: str) -> bool:
    """Whether receivers apply a DMARC record: it needs a valid `p` tag, or else a `rua` tag with at
    least one valid URI (a `mailto:` one here), with which they act as if it said p=none
    (RFC 7489 section 6.6.3); without either they apply none."""
    tags = dict(part.strip().partition("=")[::2] for part in record.split(";"))
    tags = {name.strip().lower(): value.strip() for name, value in tags.items()}
    reports = [uri.strip().lower() for uri in tags.get("rua", "").split(",")]
    return (tags.get("p", "").lower() in ("none", "quarantine", "reject")
            or any(uri.startswith("mailto:") and "@" in uri for uri in reports))


def spf_mechanisms(record: str) -> list[str]:
    """The record's mechanisms a receiver evaluates, lower-cased, `+` dropped: those up to and
    including the first `all`, since nothing after it is evaluated (RFC 7208 section 5.1)."""
    terms = [term.lower().removeprefix("+") for term in record.split()[1:]]
    mechanisms = [term for term in terms if "=" not in term.split(":")[0]]  # `name=value` is a modifier
    ends = next((n for n, term in enumerate(mechanisms) if term.lstrip("-~?") == "all"), len(mechanisms))
    return mechanisms[:ends + 1]


def spf_passes_nobody(record: str) -> bool:
    """Whether an SPF record can pass no server: no mechanism before its first `all`, that `all`
    not qualified `+`, and no `redirect=` where no `all` ends the record (RFC 7208 sections 5.1
    and 6.1: with no match the result is "neutral", with `-all` "fail", with `~all` "softfail")."""
    mechanisms = spf_mechanisms(record)
    if mechanisms and mechanisms[-1] == "all":
        return False
    if not mechanisms and any(term.lower().startswith("redirect=") for term in record.split()[1:]):
        return False
    return all(term.lstrip("-~?") == "all" for term in mechanisms)


def check_dmarc(resolver: dns.resolver.Resolver, domain: str) -> Check:
    """A DMARC record for the From domain, or for its parent domains (RFC 7489 §6.6.3)."""
    name = "DMARC"
    labels = domain.lower().rstrip(".").split(".")
    for start in range(len(labels) - 1):
        where = "_dmarc." + ".".join(labels[start:])
        found = txt_records(resolver, where)
        if found is None:
            return Check(name, WARN, f"could not look up {where} (DNS did not answer)", "run doctor again later")
        records = _tagged(found, "v=dmarc1")
        if len(records) > 1:
            return Check(name, FAIL, f"{where} has {len(records)} DMARC records; receivers then apply none",
                         "keep exactly one TXT record starting v=DMARC1")
        if records and not dmarc_applies(records[0]):
            return Check(name, WARN, f"{where}: {records[0]} has no valid p= policy and no valid rua=, so receivers "
                         "apply no DMARC: Gmail and Yahoo require it from bulk senders",
                         f'make it "v=DMARC1; p=none; rua=mailto:dmarc@{domain}"')
        if records:
            return Check(name, OK, f"{where}: {records[0]}")
    return Check(name, WARN, f"no DMARC record for {domain}: Gmail and Yahoo require one from bulk senders",
                 f'add a TXT record _dmarc.{domain} = "v=DMARC1; p=none; rua=mailto:dmarc@{domain}"')


def check_spf(resolver: dns.resolver.Resolver, domain: str, *, ses: bool) -> Check:
    """One SPF record at the envelope (MAIL FROM) domain that lets the sending service send."""
    name = "SPF"
    found = txt_records(resolver, domain)
    if found is None:
        return Check(name, WARN, f"could not look up {domain} (DNS did not answer)", "run doctor again later")
    records = _tagged(found, "v=spf1")
    hint = f'add a TXT record {domain} = "v=spf1 {SES_SPF_INCLUDE} ~all"' if ses else \
        f"add a TXT record at {domain} starting v=spf1 that names your SMTP provider"
    if not records:
        return Check(name, WARN, f"no SPF record at {domain}", hint)
    if len(records) > 1:  # RFC 7208 §4.5: more than one is a permanent error
        return Check(name, FAIL, f"{domain} has {len(records)} SPF records (a permanent error for receivers)",
                     "merge them into one TXT record starting v=spf1")
    if spf_passes_nobody(records[0]):
        return Check(name, FAIL, f"{domain}: {records[0]} lets no server pass SPF: every message fails it or is "
                     "neutral",
                     f"add {SES_SPF_INCLUDE} to it, before the all" if ses
                     else "add your SMTP provider's include: to it, before the all")
    if ses and SES_SPF_INCLUDE not in spf_mechanisms(records[0]):
        return Check(name, WARN, f"{domain}: {records[0]} does not include amazonses.com", hint)
    return Check(name, OK, f"{domain}: {records[0]}")


def _identity(client: Any, settings: Any) -> dict | None:
    """GetEmailIdentity of the sender's domain (where DKIM and MAIL FROM live), else its address."""
    domain = settings.sender_email.rpartition("@")[2]
    for identity in (domain, settings.sender_email):
        try:
            return client.get_email_identity(EmailIdentity=identity)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "NotFoundException":
                return None
        except BotoCoreError:
            return None
    return None


def check_dkim(identity: dict, domain: str) -> Check:
    dkim = identity.get("DkimAttributes") or {}
    status, signing = dkim.get("Status", "NOT_STARTED"), dkim.get("SigningEnabled", False)
    fix = f"SES console > Identities > {domain} > Authentication: publish the three DKIM CNAME records"
    if signing and status == "SUCCESS":
        return Check("DKIM", OK, f"SES signs mail from {domain} with DKIM")
    if status in ("FAILED", "TEMPORARY_FAILURE"):
        return Check("DKIM", FAIL, f"DKIM of {domain} is {status}: SES cannot find its DKIM records", fix)
    return Check("DKIM", WARN, f"DKIM of {domain} is {status}{'' if signing else ', signing off'}", fix)


def check_mail_from(identity: dict, domain: str) -> tuple[Check, str | None]:
    """The custom MAIL FROM check, and the domain whose SPF then matters (None: amazonses.com's)."""
    attrs = identity.get("MailFromAttributes") or {}
    mail_from, status = attrs.get("MailFromDomain"), attrs.get("MailFromDomainStatus")
    fix = f"SES console > Identities > {domain} > Custom MAIL FROM domain (e.g. bounce.{domain}), then its MX and SPF records"
    if not mail_from:
        return Check("MAIL FROM", WARN, "no custom MAIL FROM domain: SPF passes for amazonses.com, not for "
                     f"{domain}, so DMARC rests on DKIM alone", fix), None
    if status == "SUCCESS":
        return Check("MAIL FROM", OK, f"{mail_from} is verified"), mail_from
    level = FAIL if status == "FAILED" else WARN
    return Check("MAIL FROM", level, f"{mail_from} is {status}: SES cannot read its MX record", fix), mail_from


def check_sender_auth(settings: Any, *, client: Any = None, resolver: dns.resolver.Resolver | None = None) -> list[Check]:
    """DKIM and MAIL FROM (SES only), DMARC for the From domain and SPF for the envelope domain."""
    domain = settings.sender_email.rpartition("@")[2]
    if not domain:
        return []
    resolver = resolver or make_resolver(settings)
    checks: list[Check] = []
    envelope = domain  # SMTP: the envelope sender is SENDER_EMAIL
    if settings.transport == "ses":
        identity = _identity(client, settings) if client is not None else None
        if identity is None:
            return [check_dmarc(resolver, domain)]  # the identity check above already says why
        checks.append(check_dkim(identity, domain))
        mail_from, envelope = check_mail_from(identity, domain)
        checks.append(mail_from)
    checks.append(check_dmarc(resolver, domain))
    if envelope:
        checks.append(check_spf(resolver, envelope, ses=settings.transport == "ses"))
    return checks


def check_contact_list(settings: Any, client: Any) -> Check:
    """SES_CONTACT_LIST exists, has SES_TOPIC, and the topic lets new contacts be mailed."""
    name = "SES contact list"
    try:
        found = client.get_contact_list(ContactListName=settings.ses_contact_list)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code")
        if code == "NotFoundException":
            return Check(name, FAIL, f"no contact list {settings.ses_contact_list!r} in this region",
                         "create it (README, 'Unsubscribe without hosting anything') or fix SES_CONTACT_LIST")
        return Check(name, WARN, f"could not read it ({code})", "allow ses:GetContactList on the contact list")
    except BotoCoreError as err:
        return Check(name, WARN, f"could not read it ({err})", "check the network and AWS_REGION")
    topics = {t["TopicName"]: t for t in found.get("Topics", [])}
    if not settings.ses_topic:
        return Check(name, OK, f"{settings.ses_contact_list} (no SES_TOPIC: unsubscribes are from the whole list)")
    topic = topics.get(settings.ses_topic)
    if topic is None:
        return Check(name, FAIL, f"{settings.ses_contact_list} has no topic {settings.ses_topic!r} "
                     f"(it has: {', '.join(sorted(topics)) or 'none'})", "fix SES_TOPIC or add the topic to the list")
    if topic.get("DefaultSubscriptionStatus") != "OPT_IN":
        return Check(name, WARN, f"topic {settings.ses_topic} defaults to {topic.get('DefaultSubscriptionStatus')}: "
                     "SES refuses new contacts who never opted in", "set the topic's DefaultSubscriptionStatus to OPT_IN")
    return Check(name, OK, f"{settings.ses_contact_list}, topic {settings.ses_topic} (opt-in by default)")
