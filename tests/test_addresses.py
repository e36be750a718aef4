"""addresses: the stored form of an address is email-validator's, whichever path computes it."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings as hypothesis_settings, strategies as st

from email_automation.addresses import normalize_email, plain_form

PROPERTY = hypothesis_settings(max_examples=150, deadline=None, derandomize=True)

# Near the edges of what email-validator accepts: every character class of a local part, dots
# in every place, quotes and brackets, non-ASCII, domains with underscores, IDNA labels, reserved
# names, and labels long enough to cross the 254-character limit. Mostly plausible addresses, so
# that the fast path has many to take.
_ATOM = st.text(alphabet="abzAZ09_+-!#$%&'*/=?^`{|}~", min_size=1, max_size=8)
_LOCAL = st.one_of(st.lists(_ATOM, min_size=1, max_size=3).map(".".join),
                   st.text(alphabet="abZ09._+-'\"<> @üé\\", min_size=0, max_size=12))
_LABEL = st.one_of(st.text(alphabet="abcXYZ019-", min_size=1, max_size=8),
                   st.text(alphabet="abc9-_ü", min_size=0, max_size=4),
                   st.sampled_from(["xn--bcher-kva", "ab--cd", "example", "localhost", "test", "a" * 63, "b" * 64,
                                    "例え"]))
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=5).map(".".join)
_TLD = st.one_of(st.sampled_from(["com", "COM", "example", "test", "local", "1", "co", "", "c0m", "xn--p1ai", "invalid",
                                  "onion", "arpa", "localhost"]),
                 st.text(alphabet="aZ9-", min_size=1, max_size=4))


@st.composite
def addresses(draw) -> str:
    local = draw(_LOCAL) * draw(st.sampled_from([1, 1, 1, 10]))
    return draw(st.sampled_from(["", "", " ", "\t"])) + local + "@" + draw(_DOMAIN) + "." + draw(_TLD)


def reference(address: str) -> str | EmailNotValidError:
    """email-validator's own verdict on the trimmed address: the stored form or the refusal."""
    try:
        result = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as err:
        return err
    return (result.ascii_email or result.normalized).lower()


@PROPERTY
@given(addresses())
@example("f.nguyen12@Company1617.Example.com")
@example("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com")  # 254: accepted
@example("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com")  # 255: refused
@example("x@xn--bcher-kva.example")  # the Unicode form is the one measured
@example("bob@exa_mple.com")
@example("a..b@example.com")
@example("a@x.-ab")  # a hyphen after a dot
@example("a@sub.localhost")  # special-use
@example("a@ab--cd.com")  # an R-LDH label
@example("a@" + "b" * 64 + ".com")  # a label longer than DNS allows
def test_the_fast_path_gives_email_validators_form_or_stands_aside(address):
    expected = reference(address)
    fast = plain_form(address.strip())
    if fast is not None:
        assert fast == expected  # it only ever accepts, and as email-validator would
    if isinstance(expected, EmailNotValidError):
        try:
            normalize_email(address)
        except EmailNotValidError as err:
            assert str(err) == str(expected)
        else:
            raise AssertionError(f"{address!r} accepted, email-validator refuses it: {expected}")
    else:
        assert normalize_email(address) == expected


def test_the_fast_path_takes_the_usual_address():
    # The guard above could pass with a fast path that never accepts: this one must not be refused.
    assert plain_form("Ann.Lee+jobs@Example.COM") == "ann.lee+jobs@example.com"
