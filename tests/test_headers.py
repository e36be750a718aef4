"""Every header a message carries decodes back to exactly what was meant, on every supported Python.

Property-based: random Unicode subjects and display names go through `build_message`, the wire
bytes are parsed back the way a receiving client does (email.parser with policy.default) and the
way older code does (email.header.decode_header), and both must give the exact text.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.header import decode_header
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings as hypothesis_settings, strategies as st

from email_automation import headers
from email_automation.email_templates import RenderedEmail
from email_automation.errors import ConfigError, PermanentSendError
from email_automation.messages import build_message

# Words whose mix of ASCII and accents made the standard library's folder drop or glue spaces.
WORDS = ["Caisse", "d'Épargne", "Île-de-France", "Société", "Générale", "Süd", "Straße", "pour", "la",
         "de", "Köln", "–", "你好", "ok", "x", "=?utf-8?q?_?=", "a" * 80, "Zoë", "Müller,", '"PhD"']
TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=120)
MIXED = st.lists(st.sampled_from(WORDS) | TEXT, min_size=1, max_size=25).map(" ".join)
PROPERTY = hypothesis_settings(max_examples=200, deadline=None, derandomize=True)
# The settings build_message reads; a plain object, as hypothesis reruns a test without its fixtures.
SETTINGS = SimpleNamespace(sender_email="jane@example.com", sender_name="", reply_to="", unsubscribe_url="")


# Python's address parser keeps the space between two encoded-words of a display name, which RFC 2047
# section 6.2 says to drop; the builder avoids that pair unless a run of non-ASCII is too long for one.
ADJACENT_ENCODED_WORDS = re.compile(r"\?=\s+=\?")


def one_line(text: str) -> str:
    """What a subject or name means: its words, single-spaced (the builder collapses white space)."""
    return " ".join(text.split())


def wire(subject: str, *, sender_name: str = "", to_name: str = "") -> bytes:
    settings = SimpleNamespace(**{**vars(SETTINGS), "sender_name": sender_name})
    rendered = RenderedEmail(subject=subject, html="<p>x</p>", text="x\n")
    return build_message(rendered, to="ada@example.org", to_name=to_name, settings=settings).as_bytes()


def header_block(raw: bytes) -> str:
    return raw.decode("ascii").split("\r\n\r\n", 1)[0]


def raw_value(raw: bytes, name: str) -> str:
    """A header's value as on the wire, unfolded (RFC 5322 section 2.2.3: remove CRLF before WSP)."""
    for field in header_block(raw).replace("\r\n ", " ").replace("\r\n\t", "\t").split("\r\n"):
        field_name, _, value = field.partition(":")
        if field_name.lower() == name.lower():
            return value.removeprefix(" ")
    raise AssertionError(f"no {name} header")


def decoded(value: str) -> str:
    """email.header.decode_header's reading, joined back into one string."""
    return "".join(part.decode(charset or "ascii") if isinstance(part, bytes) else part
                   for part, charset in decode_header(value))


def assert_well_formed(raw: bytes) -> None:
    lines = header_block(raw).split("\r\n")
    assert all(len(line) <= 78 for line in lines), [line for line in lines if len(line) > 78]
    assert all(len(line) <= 76 for line in lines if "=?" in line)  # RFC 2047 section 2
    assert not [line for line in lines if line != line.rstrip()], "a header line ends in white space"
    assert "?==?" not in header_block(raw)  # two encoded-words glued together (CPython gh-144156)


@PROPERTY
@given(subject=MIXED)
@example(subject="Caisse Caisse Île-de-France Köln Société d'Épargne Straße pour Köln Générale Société –")
@example(subject="Île-de-France la Île-de-France la Générale Société Süd d'Épargne Straße Köln d'Épargne "
                 "d'Épargne Île-de-France ok 你好 ok x Société")
def test_any_subject_decodes_to_exactly_what_was_meant(subject):
    raw = wire(subject)
    assert raw.isascii()
    assert_well_formed(raw)
    received = email.message_from_bytes(raw, policy=email.policy.default)
    assert received["Subject"] == one_line(subject)
    assert decoded(raw_value(raw, "Subject")) == one_line(subject)


@PROPERTY
@given(sender_name=MIXED, to_name=MIXED)
@example(sender_name="Zoë Müller-Łukasiewicz, PhD", to_name='Ada "the Countess" Lovelace')
def test_any_display_name_decodes_to_exactly_what_was_meant(sender_name, to_name):
    raw = wire("Hello", sender_name=sender_name, to_name=to_name)
    assert_well_formed(raw)
    for header, name, address in (("From", sender_name, "jane@example.com"), ("To", to_name, "ada@example.org")):
        assert decoded(raw_value(raw, header)) == (f"{one_line(name)} <{address}>" if one_line(name) else address)
        mailbox = email.message_from_bytes(raw, policy=email.policy.default)[header].addresses
        if not ADJACENT_ENCODED_WORDS.search(raw_value(raw, header)):
            assert [(m.display_name, m.addr_spec) for m in mailbox] == [(one_line(name), address)]


def test_plain_ascii_subjects_stay_readable_on_the_wire():
    raw = wire("A quick introduction from Jane, about the role at ACME " * 3)
    assert "=?" not in raw_value(raw, "Subject")
    assert raw_value(raw, "Subject") == ("A quick introduction from Jane, about the role at ACME " * 3).strip()
    assert_well_formed(raw)


def test_an_encoded_subject_never_splits_a_character():
    subject = "你好" * 60 + "😀" * 30  # 3- and 4-byte UTF-8 characters
    raw = wire(subject)
    for word in raw_value(raw, "Subject").split():
        text, charset = decode_header(word)[0]
        text.decode(charset)  # each encoded-word is valid UTF-8 on its own
    assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == subject


@pytest.mark.parametrize("bad", ["Hello\x00there", "Hi \x1b[31mred", "caf\x85e", "del\x7fete"])
def test_a_control_character_in_the_subject_refuses_that_recipient(bad):
    with pytest.raises(PermanentSendError, match=r"^recipient ada@example.org: the subject has a control character "
                                                 r"U\+00[0-9A-F]{2} at position \d+; a header cannot carry it$") as info:
        wire(bad)
    assert info.value.code == "InvalidHeader"


def test_a_control_character_in_the_recipient_name_refuses_that_recipient():
    with pytest.raises(PermanentSendError, match=r"^recipient ada@example.org: the name \(first_name, last_name\) "
                                                 r"has a control character U\+000D at position 4"):
        wire("Hello", to_name="Ada\r\nBcc: x@example.net")


def test_a_control_character_in_sender_name_is_a_config_error_naming_it():
    with pytest.raises(ConfigError) as info:
        wire("Hello", sender_name="Jane\r\nBcc: x@example.net")
    assert str(info.value) == ("invalid setting SENDER_NAME=Jane\\r\\nBcc: x@example.net: "
                               "has a control character U+000D at position 5")


def test_tab_is_the_one_control_a_header_may_carry():
    assert headers.forbidden_character("a\tb") is None
    assert headers.forbidden_character("a\x0bb") == "a control character U+000B at position 2"


def test_the_run_summary_from_decodes_exactly_too():
    from datetime import datetime, timezone

    from email_automation.config import load_settings
    from email_automation.run_daily import RunReport
    from email_automation.summary_report import build_summary

    # The standard library folded this name so that it arrived as "... Soci été ...".
    name = "pour Straße Köln ACME Île-de-France Société Köln Île-de-France"
    settings = load_settings(sender_email="jane@example.com", sender_name=name, report_email="me@example.org")
    raw = build_summary(settings, RunReport(), now=datetime(2026, 11, 25, 7, 5, tzinfo=timezone.utc)).as_bytes()
    assert_well_formed(raw)
    assert decoded(raw_value(raw, "From")) == f"{name} <jane@example.com>"
    assert email.message_from_bytes(raw, policy=email.policy.default)["From"].addresses[0].display_name == name


@PROPERTY
@given(st.emails())
@example("a@ex(c)ample.com")
@example("a@ex:a.com")
@example("a(comment)@example.com")
@example("a@[192.0.2.1]")
@example('"quoted local"@example.com')
@example("back\\slash@example.com")
def test_the_envelope_is_written_as_smtplib_would_write_it(address):
    """The SMTP transport writes MAIL FROM:<a> and RCPT TO:<a> itself, without smtplib's quoteaddr
    (which parses each address again): the same text for every address a message is built for."""
    from smtplib import quoteaddr

    from email_automation.messages import build_wire

    try:
        message = build_wire(RenderedEmail("Hi", "<p>Hi</p>", "Hi\n"), to=address,
                             settings=SimpleNamespace(**{**vars(SETTINGS), "sender_email": address}))
    except (PermanentSendError, ConfigError):
        return  # not an address a message is built for (nor one a sender may have)
    for envelope in (message.sender, *message.recipients):
        assert quoteaddr(envelope) == f"<{envelope}>"
