"""doctor's DKIM, MAIL FROM, DMARC and SPF checks, and the SES contact list check.

DNS answers come from the loopback dnslib server of conftest's `dns_zone`, never the internet.
GetEmailIdentity's DkimAttributes/MailFromAttributes cannot be set in moto, so those answers come
from botocore's Stubber; the contact-list check runs against moto, which implements contact lists.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from email_automation.doctor import FAIL, OK, WARN
from email_automation.sender_auth import check_contact_list, check_sender_auth


def identity(dkim="SUCCESS", signing=True, mail_from="bounce.example.com", mail_from_status="SUCCESS"):
    answer = {"IdentityType": "DOMAIN", "VerifiedForSendingStatus": True,
              "DkimAttributes": {"SigningEnabled": signing, "Status": dkim}}
    if mail_from:
        answer["MailFromAttributes"] = {"MailFromDomain": mail_from, "MailFromDomainStatus": mail_from_status,
                                        "BehaviorOnMxFailure": "USE_DEFAULT_VALUE"}
    return answer


@pytest.fixture
def ses():
    client = boto3.client("sesv2", region_name="us-east-1")
    with Stubber(client) as stub:
        yield client, stub


def statuses(checks):
    return {c.name: (c.status, c.detail) for c in checks}


def test_a_fully_authenticated_sender_is_all_ok(settings, ses, dns_zone):
    client, stub = ses
    stub.add_response("get_email_identity", identity(), {"EmailIdentity": "example.com"})
    dns_zone.txt["_dmarc.example.com"] = ["v=DMARC1; p=quarantine; rua=mailto:d@example.com"]
    dns_zone.txt["bounce.example.com"] = ["google-site-verification=x", "v=spf1 include:amazonses.com ~all"]
    checks = check_sender_auth(settings, client=client, resolver=dns_zone.resolver())
    assert statuses(checks) == {
        "DKIM": (OK, "SES signs mail from example.com with DKIM"),
        "MAIL FROM": (OK, "bounce.example.com is verified"),
        "DMARC": (OK, "_dmarc.example.com: v=DMARC1; p=quarantine; rua=mailto:d@example.com"),
        "SPF": (OK, "bounce.example.com: v=spf1 include:amazonses.com ~all"),
    }


@pytest.mark.parametrize("answer, records, name, status, detail", [
    (identity(dkim="FAILED"), {}, "DKIM", FAIL, "DKIM of example.com is FAILED: SES cannot find its DKIM records"),
    (identity(dkim="PENDING", signing=False), {}, "DKIM", WARN, "DKIM of example.com is PENDING, signing off"),
    (identity(mail_from_status="FAILED"), {}, "MAIL FROM", FAIL, "bounce.example.com is FAILED: SES cannot read its MX record"),
    (identity(), {"_dmarc.example.com": ["v=DMARC1; p=none", "v=DMARC1; p=reject"]}, "DMARC", FAIL,
     "_dmarc.example.com has 2 DMARC records; receivers then apply none"),
    (identity(), {}, "DMARC", WARN, "no DMARC record for example.com: Gmail and Yahoo require one from bulk senders"),
    (identity(), {"bounce.example.com": ["v=spf1 include:_spf.google.com ~all"]}, "SPF", WARN,
     "bounce.example.com: v=spf1 include:_spf.google.com ~all does not include amazonses.com"),
    (identity(), {"bounce.example.com": ["v=spf1 -all", "v=spf1 include:amazonses.com ~all"]}, "SPF", FAIL,
     "bounce.example.com has 2 SPF records (a permanent error for receivers)"),
    (identity(), {}, "SPF", WARN, "no SPF record at bounce.example.com"),
])
def test_each_problem_is_named_with_its_fix(settings, ses, dns_zone, answer, records, name, status, detail):
    client, stub = ses
    stub.add_response("get_email_identity", answer, {"EmailIdentity": "example.com"})
    dns_zone.txt.update(records)
    [check] = [c for c in check_sender_auth(settings, client=client, resolver=dns_zone.resolver()) if c.name == name]
    assert (check.status, check.detail) == (status, detail)
    assert check.hint


def test_dmarc_of_the_parent_domain_covers_a_subdomain_sender(settings, dns_zone):
    smtp = settings.model_copy(update={"transport": "smtp", "sender_email": "jane@mail.example.com"})
    dns_zone.txt["_dmarc.example.com"] = ["v=DMARC1; p=none"]
    dns_zone.txt["mail.example.com"] = ["v=spf1 include:relay.example.net -all"]
    assert statuses(check_sender_auth(smtp, resolver=dns_zone.resolver())) == {
        "DMARC": (OK, "_dmarc.example.com: v=DMARC1; p=none"),
        "SPF": (OK, "mail.example.com: v=spf1 include:relay.example.net -all")}


@pytest.mark.parametrize("dmarc, spf, name, status, detail", [
    ("v=DMARC1", "v=spf1 include:relay.example.net ~all", "DMARC", WARN,
     "_dmarc.example.com: v=DMARC1 has no valid p= policy and no valid rua=, so receivers apply no DMARC: Gmail and Yahoo "
     "require it from bulk senders"),
    ("v=DMARC1; p=never", "v=spf1 include:relay.example.net ~all", "DMARC", WARN,
     "_dmarc.example.com: v=DMARC1; p=never has no valid p= policy and no valid rua=, so receivers apply no DMARC: Gmail "
     "and Yahoo require it from bulk senders"),
    ("v=DMARC1; rua=mailto:d@example.com", "v=spf1 -all", "DMARC", OK,  # read as p=none (RFC 7489 6.6.3)
     "_dmarc.example.com: v=DMARC1; rua=mailto:d@example.com"),
    ("v=DMARC1; p=none", "v=spf1 -all", "SPF", FAIL, "example.com: v=spf1 -all lets no server pass SPF: every message fails it or is neutral"),
    ("v=DMARC1; p=none", "v=spf1 ~all", "SPF", FAIL, "example.com: v=spf1 ~all lets no server pass SPF: every message fails it or is neutral"),
    ("v=DMARC1; p=none", "v=spf1 redirect=_spf.relay.example.net", "SPF", OK,
     "example.com: v=spf1 redirect=_spf.relay.example.net"),
    # Nothing after the first `all` is evaluated (RFC 7208 5.1), and `redirect` is ignored beside it (6.1).
    ("v=DMARC1; p=none", "v=spf1 -all include:relay.example.net", "SPF", FAIL,
     "example.com: v=spf1 -all include:relay.example.net lets no server pass SPF: every message fails it or is neutral"),
    ("v=DMARC1; p=none", "v=spf1 ?all redirect=_spf.relay.example.net", "SPF", FAIL,
     "example.com: v=spf1 ?all redirect=_spf.relay.example.net lets no server pass SPF: every message fails it or is "
     "neutral"),
    ("v=DMARC1; p=none", "v=spf1 ip4:192.0.2.7 -all", "SPF", OK, "example.com: v=spf1 ip4:192.0.2.7 -all"),
    ("v=DMARC1; rua=https://d.example.com/r", "v=spf1 -all", "DMARC", WARN,  # no valid (mailto) URI
     "_dmarc.example.com: v=DMARC1; rua=https://d.example.com/r has no valid p= policy and no valid rua=, so receivers "
     "apply no DMARC: Gmail and Yahoo require it from bulk senders"),
])
def test_a_dmarc_record_receivers_ignore_or_an_spf_record_nobody_passes_is_not_ok(settings, dns_zone, dmarc, spf, name, status, detail):
    """doctor said OK to a DMARC record receivers ignore and to an SPF record every message fails."""
    smtp = settings.model_copy(update={"transport": "smtp"})
    dns_zone.txt["_dmarc.example.com"] = [dmarc]
    dns_zone.txt["example.com"] = [spf]
    [check] = [c for c in check_sender_auth(smtp, resolver=dns_zone.resolver()) if c.name == name]
    assert (check.status, check.detail) == (status, detail)
    assert check.hint or status == OK


def test_ses_include_with_an_explicit_pass_qualifier_counts(settings, ses, dns_zone):
    client, stub = ses
    stub.add_response("get_email_identity", identity(), {"EmailIdentity": "example.com"})
    dns_zone.txt["bounce.example.com"] = ["v=spf1 +include:amazonses.com -all"]
    checks = statuses(check_sender_auth(settings, client=client, resolver=dns_zone.resolver()))
    assert checks["SPF"] == (OK, "bounce.example.com: v=spf1 +include:amazonses.com -all")


def test_a_dns_failure_is_a_warning_never_a_failure(settings, dns_zone):
    smtp = settings.model_copy(update={"transport": "smtp"})
    dns_zone.failing.update({"_dmarc.example.com", "example.com"})
    assert statuses(check_sender_auth(smtp, resolver=dns_zone.resolver())) == {
        "DMARC": (WARN, "could not look up _dmarc.example.com (DNS did not answer)"),
        "SPF": (WARN, "could not look up example.com (DNS did not answer)")}


def test_without_a_custom_mail_from_spf_is_not_ours_to_check(settings, ses, dns_zone):
    client, stub = ses
    stub.add_response("get_email_identity", identity(mail_from=None), {"EmailIdentity": "example.com"})
    checks = statuses(check_sender_auth(settings, client=client, resolver=dns_zone.resolver()))
    assert "SPF" not in checks and checks["MAIL FROM"][0] == WARN


@pytest.fixture
def moto_ses():
    with mock_aws():
        yield boto3.client("sesv2", region_name="us-east-1")


@pytest.mark.parametrize("default, topic, status, detail", [
    ("OPT_IN", "jobs", OK, "outreach, topic jobs (opt-in by default)"),
    ("OPT_OUT", "jobs", WARN, "topic jobs defaults to OPT_OUT: SES refuses new contacts who never opted in"),
    ("OPT_IN", "news", FAIL, "outreach has no topic 'news' (it has: jobs)"),
])
def test_the_contact_list_and_topic_are_checked(settings, moto_ses, default, topic, status, detail):
    moto_ses.create_contact_list(ContactListName="outreach", Topics=[
        {"TopicName": "jobs", "DisplayName": "Jobs", "Description": "d", "DefaultSubscriptionStatus": default}])
    check = check_contact_list(settings.model_copy(update={"ses_contact_list": "outreach", "ses_topic": topic}), moto_ses)
    assert (check.status, check.detail) == (status, detail)


def test_a_missing_contact_list_fails(settings, moto_ses):
    check = check_contact_list(settings.model_copy(update={"ses_contact_list": "outreach"}), moto_ses)
    assert (check.status, check.detail) == (FAIL, "no contact list 'outreach' in this region")
