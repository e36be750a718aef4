"""The MIME message a recipient's mail client receives."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import datetime, timezone

import pytest

from email_automation.email_templates import RenderedEmail
from email_automation.errors import ConfigError, PermanentSendError
from email_automation.config import load_settings
from email_automation.messages import build_message, build_wire, check_wire, recipient_name

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)
RENDERED = RenderedEmail(subject="Hello Ada", html="<p>Hi Ada</p>", text="Hi Ada\n")


def parse(message) -> email.message.EmailMessage:
    """What a receiving client sees: the wire bytes parsed back."""
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)


def content(part) -> str:
    """A decoded body with line ends normalised (quoted-printable lines end in CRLF on the wire)."""
    return part.get_content().replace("\r\n", "\n")


def test_headers_and_structure(settings):
    settings = settings.model_copy(update={"reply_to": "replies@example.com"})
    received = parse(build_message(RENDERED, to="ada@example.org", settings=settings, now=NOW))
    assert received["From"] == "Jane Sender <jane@example.com>"
    assert received["To"] == "ada@example.org"
    assert received["Reply-To"] == "replies@example.com"
    assert received["Subject"] == "Hello Ada"
    assert received["Date"] == "Wed, 25 Nov 2026 07:00:00 +0000"
    assert received["Message-ID"].endswith("@example.com>")
    assert received.get_content_type() == "multipart/alternative"
    parts = list(received.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert content(parts[0]) == "Hi Ada\n"
    assert content(parts[1]) == "<p>Hi Ada</p>\n"


def test_the_date_is_written_in_the_zone_it_was_given(settings):
    """The Date field is made once a second; the same instant in two zones is still two fields."""
    from datetime import timedelta

    berlin = NOW.astimezone(timezone(timedelta(hours=1)))
    dates = [parse(build_message(RENDERED, to="ada@example.org", settings=settings, now=moment))["Date"]
             for moment in (NOW, berlin, NOW.replace(microsecond=999_999))]
    assert dates == ["Wed, 25 Nov 2026 07:00:00 +0000", "Wed, 25 Nov 2026 08:00:00 +0100",
                     "Wed, 25 Nov 2026 07:00:00 +0000"]


def test_to_shows_the_recipients_name_when_known(settings):
    received = parse(build_message(RENDERED, to="ada@example.org", to_name="Ada Lovelace", settings=settings))
    assert received["To"] == "Ada Lovelace <ada@example.org>"


def test_recipient_name_is_first_and_last_name():
    assert recipient_name({"first_name": " Ada ", "last_name": "Lovelace"}) == "Ada Lovelace"
    assert recipient_name({"first_name": "", "last_name": None}) == ""
    assert recipient_name({"email": "x@example.org"}) == ""


def test_the_mailto_unsubscribe_goes_to_reply_to(settings):
    settings = settings.model_copy(update={"reply_to": "replies@example.com"})
    received = parse(build_message(RENDERED, to="ada@example.org", settings=settings))
    assert received["List-Unsubscribe"] == "<mailto:replies@example.com?subject=unsubscribe>"


def test_the_longest_accepted_unsubscribe_url_keeps_every_line_within_998(settings):
    url = "https://example.com/u?e={email}&t="
    url += "a" * (536 - len(url))  # the longest load_settings accepts
    settings = load_settings(unsubscribe_url=url, sender_email="jane@example.com")
    # 64 characters that each become 3 once URL-quoted, then the longest domain (RFC 5321 section 4.5.3.1).
    longest_address = "+" * 64 + "@" + ".".join(["d" * 63] * 3) + "." + "d" * 61
    raw = build_message(RENDERED, to=longest_address, settings=settings).as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) == 998


def test_no_reply_to_unless_configured(settings):
    assert "Reply-To" not in parse(build_message(RENDERED, to="ada@example.org", settings=settings))


def test_message_ids_are_unique_and_can_use_another_domain(settings):
    first = build_message(RENDERED, to="ada@example.org", settings=settings)
    second = build_message(RENDERED, to="ada@example.org", settings=settings, message_id_domain="mail.example.net")
    assert first["Message-ID"] != second["Message-ID"]
    assert second["Message-ID"].endswith("@mail.example.net>")


def test_one_click_unsubscribe_for_an_https_url(settings):
    settings = settings.model_copy(update={"unsubscribe_url": "https://example.com/unsubscribe?email={email}"})
    received = parse(build_message(RENDERED, to="ada+x@example.org", settings=settings))
    assert received["List-Unsubscribe"] == (
        "<https://example.com/unsubscribe?email=ada%2Bx%40example.org>, "
        "<mailto:jane@example.com?subject=unsubscribe>")
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize(("url", "problem"), [
    ("http://example.com/u/{email}", "must be an https:// URL"),
    ("https://example.com/unsubscribe", "must contain {email}"),
])
def test_an_unusable_unsubscribe_url_stops_before_any_message_is_built(settings, url, problem):
    # Settings changed in code skip load_settings' check; the builder checks again.
    settings = settings.model_copy(update={"unsubscribe_url": url})
    with pytest.raises(ConfigError, match=f"^invalid setting UNSUBSCRIBE_URL={re.escape(url)}: {re.escape(problem)}"):
        build_message(RENDERED, to="ada@example.org", settings=settings)


def test_mailto_unsubscribe_only_when_no_url(settings):
    received = parse(build_message(RENDERED, to="ada@example.org", settings=settings))
    assert received["List-Unsubscribe"] == "<mailto:jane@example.com?subject=unsubscribe>"
    assert "List-Unsubscribe-Post" not in received


def test_long_unsubscribe_url_is_folded_between_uris_never_encoded(settings):
    url = "https://example.com/unsubscribe?token=" + "a" * 150 + "&email={email}"
    settings = settings.model_copy(update={"unsubscribe_url": url})
    raw = build_message(RENDERED, to="ada@example.org", settings=settings).as_bytes()
    header = raw.split(b"\r\nList-Unsubscribe:", 1)[1].split(b"\r\nList-Unsubscribe-Post", 1)[0]
    assert b"=?" not in header  # an RFC 2047 encoded word would break the link
    assert parse_header_value(raw, "List-Unsubscribe") == (
        f"<https://example.com/unsubscribe?token={'a' * 150}&email=ada%40example.org>, "
        "<mailto:jane@example.com?subject=unsubscribe>")


def parse_header_value(raw: bytes, name: str) -> str:
    return email.message_from_bytes(raw, policy=email.policy.default)[name]


def test_non_ascii_names_and_subjects_are_encoded_and_round_trip(settings):
    settings = settings.model_copy(update={"sender_name": "Zoë Müller-Łukasiewicz, PhD"})
    rendered = RenderedEmail(subject="Grüße aus Köln – 你好", html="<p>Grüße, José</p>", text="Grüße, José\n")
    raw = build_message(rendered, to="jose@example.org", settings=settings).as_bytes()
    assert raw.isascii()  # 7-bit clean: any relay accepts it
    received = email.message_from_bytes(raw, policy=email.policy.default)
    assert received["From"].addresses[0].display_name == "Zoë Müller-Łukasiewicz, PhD"
    assert received["From"].addresses[0].addr_spec == "jane@example.com"
    assert received["Subject"] == "Grüße aus Köln – 你好"
    assert [content(p) for p in received.iter_parts()] == ["Grüße, José\n", "<p>Grüße, José</p>\n"]


def test_every_line_is_short_even_for_a_huge_one_line_body(settings):
    rendered = RenderedEmail(subject="S " * 200, html="<p>" + "word " * 2000 + "</p>", text="x" * 5000)
    raw = build_message(rendered, to="ada@example.org", settings=settings).as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    received = email.message_from_bytes(raw, policy=email.policy.default)
    assert content(list(received.iter_parts())[0]) == "x" * 5000 + "\n"


def test_line_breaks_in_a_subject_cannot_inject_headers(settings):
    rendered = RenderedEmail(subject="Hi\r\nBcc: victim@example.net", html="<p>x</p>", text="x")
    with pytest.raises(PermanentSendError, match="^recipient ada@example.org: the subject has a control character U"):
        build_message(rendered, to="ada@example.org", settings=settings)


def test_internationalised_domains_are_sent_as_punycode(settings):
    received = parse(build_message(RENDERED, to="anna@bücher.de", settings=settings))
    assert received["To"] == "anna@xn--bcher-kva.de"


@pytest.mark.parametrize("bad", ["not-an-address", "a@b.com, c@d.com", "ada@example.org\r\nBcc: x@y.z", "jösé@example.org"])
def test_unusable_recipient_is_a_permanent_send_error(settings, bad):
    with pytest.raises(PermanentSendError, match="^recipient ") as info:
        build_message(RENDERED, to=bad, settings=settings)
    assert info.value.code == "InvalidAddress"


def test_missing_sender_is_a_config_error(settings):
    with pytest.raises(ConfigError, match="^SENDER_EMAIL is not set"):
        build_message(RENDERED, to="ada@example.org", settings=settings.model_copy(update={"sender_email": ""}))


def test_invalid_reply_to_is_a_config_error(settings):
    settings = settings.model_copy(update={"reply_to": "nobody"})
    with pytest.raises(ConfigError, match="^invalid setting REPLY_TO=nobody: is not an email address$"):
        build_message(RENDERED, to="ada@example.org", settings=settings)


@pytest.mark.parametrize(("to", "to_name", "subject", "changed"), [
    ("ada@example.org", "Ada", "Hello", {}),
    ("jösé@example.org", "", "Hello", {}),
    ("a@b.com, c@d.com", "", "Hello", {}),
    ("ada@example.org", "Ada\x00", "Hello", {}),
    ("ada@example.org", "", "Hi\r\nBcc: victim@example.net", {}),
    ("ada@example.org", "", "Hello", {"sender_email": ""}),
    ("ada@example.org", "", "Hello", {"reply_to": "nobody"}),
    ("ada@example.org", "", "Hello", {"sender_name": "Jane\x07"}),
    ("ada@example.org", "", "Hello", {"unsubscribe_url": "https://example.com/unsubscribe"}),
], ids=["fine", "non-ascii-local-part", "two-addresses", "name", "subject", "no-sender", "reply-to", "sender-name",
        "unsubscribe-url"])
def test_the_check_before_the_first_send_refuses_what_building_refuses(settings, to, to_name, subject, changed):
    """The run checks its whole batch with check_wire and builds each message just before it is sent."""
    settings = settings.model_copy(update=changed)
    rendered = RenderedEmail(subject=subject, html="<p>Hi</p>", text="Hi\n")
    outcomes = []
    for make in (build_wire, check_wire):
        try:
            make(rendered, to=to, to_name=to_name, settings=settings)
            outcomes.append(None)
        except (ConfigError, PermanentSendError) as err:
            outcomes.append((type(err), str(err)))
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0] is None) == (not changed and to == "ada@example.org" and to_name == "Ada")


@pytest.mark.parametrize("changed", [{}, {"reply_to": "replies@example.com"},
                                     {"unsubscribe_url": "https://example.com/u?e={email}"}], ids=["plain", "reply-to", "url"])
@pytest.mark.parametrize("thread", [(), ("<first@example.com>",)], ids=["first", "follow-up"])
def test_the_headers_of_the_check_build_the_same_message(settings, changed, thread):
    """The run builds each message with the headers its check made: the same bytes as building
    from scratch, but for the Message-ID and the MIME boundary, which are new for every message."""
    settings = settings.model_copy(update=changed)
    rendered = RenderedEmail(subject="Grüße, Ada", html="<p>Hi Ada</p>", text="Hi Ada\n")
    args = dict(to="ada@example.org", to_name="Ada Lovelace", settings=settings, now=NOW, thread=thread)
    made = check_wire(rendered, **{k: v for k, v in args.items() if k != "now"})
    again, fresh = build_wire(rendered, checked=made, **args), build_wire(rendered, **args)

    def unique(wire) -> bytes:
        data = wire.data.replace(wire.message_id.encode(), b"<id>")
        return re.sub(rb"=+[0-9a-f]{32}==", b"<boundary>", data)

    assert unique(again) == unique(fresh)
    assert (again.sender, again.recipients, again.to) == (fresh.sender, fresh.recipients, fresh.to)
    assert again.message_id != fresh.message_id


def test_a_message_built_with_the_checks_headers_does_not_make_them_again(settings, monkeypatch):
    from email_automation import messages

    made = check_wire(RENDERED, to="ada@example.org", to_name="Ada", settings=settings)

    def again(*args, **kwargs):
        raise AssertionError("headers made twice")

    monkeypatch.setattr(messages, "_headers", again)
    wire = build_wire(RENDERED, to="ada@example.org", to_name="Ada", settings=settings, now=NOW, checked=made)
    assert wire.to == made.to_header
