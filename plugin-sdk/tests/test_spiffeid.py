"""SPIFFE IDs and trust domains against every rule of the SPIFFE-ID standard."""

from __future__ import annotations

import copy
import pickle
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyspire_sdk.errors import InvalidArgumentError, InvalidSpiffeIdError
from pyspire_sdk.spiffeid import (
    MAX_SPIFFE_ID_BYTES,
    MAX_TRUST_DOMAIN_BYTES,
    SpiffeId,
    TrustDomain,
    parse_many,
)

TD_CHARS = string.ascii_lowercase + string.digits + ".-_"
PATH_CHARS = string.ascii_letters + string.digits + ".-_"

VALID_IDS = [
    "spiffe://example.org",
    "spiffe://example.org/workload",
    "spiffe://example.org/ns/default/sa/backend",
    "spiffe://domain.test/path/element",
    "spiffe://a",
    "spiffe://1.2.3.4/path",
    "spiffe://example..org/x",  # no DNS-label rules
    "spiffe://-x/y",
    "spiffe://under_score.td/Case/Sensitive",
    "spiffe://td/.a/...",  # dots inside a segment are fine; only '.' and '..' are forbidden
    "spiffe://td/a./..b/-/_",
]

# (input, a fragment the error must contain): one or more rows per rule of the standard.
INVALID_IDS = [
    ("", "it is empty"),
    ("example.org/workload", "scheme is missing or is not 'spiffe'"),
    ("192.168.2.2:6688", "scheme is missing or is not 'spiffe'"),
    ("http://domain.test/path/element", "scheme is missing or is not 'spiffe'"),
    ("spiffe:path/element", "scheme must be followed by '//'"),
    ("spiffe:/path/element", "scheme must be followed by '//'"),
    ("SPIFFE://domain.test/path", "scheme must be lower case"),
    ("Spiffe://domain.test/path", "scheme must be lower case"),
    ("spiffe://", "trust domain is missing"),
    ("spiffe:///path/element", "trust domain is missing"),
    ("spiffe://Domain.test/path", "trust domain must be lower case"),
    ("spiffe://DOMAIN.TEST", "trust domain must be lower case"),
    ("spiffe://domain.test:8080/path/element", "must not include a port"),
    ("spiffe://domain.test:/path/element", "must not include a port"),
    ("spiffe://user:password@test.org/path/element", "must not include user info"),
    ("spiffe://user@test.org/path/element", "must not include user info"),
    ("spiffe://domain%2Etest/path", "trust domain must not be percent-encoded"),
    ("spiffe://[::1]/path", "trust domain must not be an IPv6 address"),
    ("spiffe://a[b/path", "trust domain has a forbidden character '['"),
    ("spiffe://dom ain/path", "trust domain has a forbidden character ' '"),
    ("spiffe://d\u00f6main/path", "trust domain has a forbidden character"),
    ("spiffe://%F0%9F%A4%AF/path", "trust domain must not be percent-encoded"),
    ("spiffe://domain.test/path/element?query=1", "query is not allowed"),
    ("spiffe://domain.test?query=1", "query is not allowed"),
    ("spiffe://domain.test/path/element#fragment-1", "fragment is not allowed"),
    ("spiffe://domain.test/path/element?#fragment-1", "fragment is not allowed"),
    ("spiffe://domain.test/", "path must not end with '/'"),
    ("spiffe://domain.test/path/", "path must not end with '/'"),
    ("spiffe://domain.test//", "path has an empty segment"),
    ("spiffe://domain.test//path/element", "path has an empty segment"),
    ("spiffe://domain.test/path//element", "path has an empty segment"),
    ("spiffe://domain.test/.", "path must not have a '.' segment"),
    ("spiffe://domain.test/./path", "path must not have a '.' segment"),
    ("spiffe://domain.test/path/./element", "path must not have a '.' segment"),
    ("spiffe://domain.test/..", "path must not have a '..' segment"),
    ("spiffe://domain.test/path/../element", "path must not have a '..' segment"),
    ("spiffe://domain.test/path/..", "path must not have a '..' segment"),
    ("spiffe://domain.test/path/elem%5uent", "path must not be percent-encoded"),
    ("spiffe://domain.test/path/%F0%9F%A4%AF", "path must not be percent-encoded"),
    ("spiffe://domain.test/pa:th/element", "path has a forbidden character ':'"),
    ("spiffe://domain.test/pa@th/element", "path has a forbidden character '@'"),
    ("spiffe://domain.test/path/elem[ent", "path has a forbidden character '['"),
    ("spiffe://domain.test/p!a$t&h'", "path has a forbidden character '!'"),
    ("spiffe://domain.test/a b", "path has a forbidden character ' '"),
    ("spiffe://domain.test/caf\u00e9", "path has a forbidden character"),
    ("spiffe://domain.test/spiffe://domain.test/path", "path has a forbidden character ':'"),
    ("spiffe://domain.test/a\\b", "path has a forbidden character"),
]


@pytest.mark.parametrize("text", VALID_IDS)
def test_valid_ids_parse_and_format_back_exactly(text: str) -> None:
    spiffe_id = SpiffeId.parse(text)
    assert str(spiffe_id) == text
    assert SpiffeId.parse(str(spiffe_id)) == spiffe_id


@pytest.mark.parametrize(("text", "rule"), INVALID_IDS)
def test_invalid_ids_name_the_broken_rule(text: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeIdError) as raised:
        SpiffeId.parse(text)
    message = str(raised.value)
    assert rule in message
    assert message.startswith("invalid SPIFFE ID ")
    assert message == message.rstrip(".")


def test_invalid_id_error_is_an_invalid_argument_and_a_value_error() -> None:
    with pytest.raises(InvalidArgumentError):
        SpiffeId.parse("nope")
    with pytest.raises(ValueError, match="scheme"):
        SpiffeId.parse("nope")


@pytest.mark.parametrize("value", [None, 42, b"spiffe://example.org"])
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidSpiffeIdError, match="expected a string"):
        SpiffeId.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", range(256))
def test_every_byte_in_the_trust_domain(code: int) -> None:
    char = chr(code)
    text = f"spiffe://a{char}b/path"
    if char in TD_CHARS:
        assert SpiffeId.parse(text).trust_domain.name == f"a{char}b"
        assert TrustDomain(f"a{char}b").name == f"a{char}b"
    elif char == "/":
        # the authority ends at the first '/': this is the trust domain 'a' with path '/b/path'
        assert SpiffeId.parse(text).path == "/b/path"
    else:
        with pytest.raises(InvalidSpiffeIdError):
            SpiffeId.parse(text)
        with pytest.raises(InvalidSpiffeIdError):
            TrustDomain(f"a{char}b")


@pytest.mark.parametrize("code", range(256))
def test_every_byte_in_a_path_segment(code: int) -> None:
    char = chr(code)
    text = f"spiffe://example.org/a{char}b"
    if char in PATH_CHARS:
        assert SpiffeId.parse(text).path == f"/a{char}b"
        assert SpiffeId.from_segments("example.org", f"a{char}b").path == f"/a{char}b"
    elif char == "/":
        assert SpiffeId.parse(text).segments == ("a", "b")
    else:
        with pytest.raises(InvalidSpiffeIdError):
            SpiffeId.parse(text)
        with pytest.raises(InvalidSpiffeIdError):
            SpiffeId.from_path("example.org", f"/a{char}b")


def _id_of_length(size: int) -> str:
    prefix = "spiffe://example.org/"
    return prefix + "a" * (size - len(prefix))


def test_id_of_exactly_2048_bytes_is_accepted() -> None:
    text = _id_of_length(MAX_SPIFFE_ID_BYTES)
    assert len(text.encode()) == 2048
    spiffe_id = SpiffeId.parse(text)
    assert str(spiffe_id) == text
    assert SpiffeId.from_path("example.org", spiffe_id.path) == spiffe_id


def test_id_of_2049_bytes_is_rejected_everywhere() -> None:
    text = _id_of_length(MAX_SPIFFE_ID_BYTES + 1)
    path = text[len("spiffe://example.org") :]
    with pytest.raises(InvalidSpiffeIdError, match="2049 bytes, longer than the 2048 allowed"):
        SpiffeId.parse(text)
    with pytest.raises(InvalidSpiffeIdError, match="2049 bytes"):
        SpiffeId.from_path("example.org", path)
    with pytest.raises(InvalidSpiffeIdError, match="2049 bytes"):
        SpiffeId.from_segments("example.org", path[1:])
    with pytest.raises(InvalidSpiffeIdError, match="2049 bytes"):
        SpiffeId(TrustDomain("example.org"), path)


def test_length_is_counted_in_bytes_not_characters() -> None:
    text = _id_of_length(MAX_SPIFFE_ID_BYTES - 1) + "\u00e9"  # 2047 characters + one 2-byte one
    with pytest.raises(InvalidSpiffeIdError, match="2049 bytes"):
        SpiffeId.parse(text)


def test_trust_domain_of_exactly_255_bytes_is_accepted_and_256_rejected() -> None:
    name = "a" * MAX_TRUST_DOMAIN_BYTES
    assert TrustDomain(name).name == name
    assert SpiffeId.parse(f"spiffe://{name}/x").trust_domain.name == name
    with pytest.raises(InvalidSpiffeIdError, match="256 bytes, longer than the 255 allowed"):
        TrustDomain(name + "a")
    with pytest.raises(InvalidSpiffeIdError, match="256 bytes"):
        SpiffeId.parse(f"spiffe://{name}a/x")


def test_error_message_shortens_a_huge_input() -> None:
    with pytest.raises(InvalidSpiffeIdError) as raised:
        SpiffeId.parse("x" * 10_000)
    assert len(str(raised.value)) < 300


# -- TrustDomain ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("example.org", "example.org"),
        ("spiffe://example.org", "example.org"),
        ("1.2.3.4", "1.2.3.4"),
        ("a_b-c.d", "a_b-c.d"),
    ],
)
def test_trust_domain_parse_accepts_a_name_or_a_trust_domain_id(text: str, name: str) -> None:
    assert TrustDomain.parse(text) == TrustDomain(name)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "trust domain is missing"),
        ("Example.org", "must be lower case"),
        ("example.org:443", "must not include a port"),
        ("user@example.org", "must not include user info"),
        ("exa%6Dple.org", "must not be percent-encoded"),
        ("exa mple", "forbidden character ' '"),
        ("spiffe://example.org/path", "a trust domain ID has no path"),
        ("spiffe://example.org/", "path must not end with '/'"),
        ("SPIFFE://example.org", "scheme must be lower case"),
        ("http://example.org", "scheme is missing or is not 'spiffe'"),
        ("spiffe://", "trust domain is missing"),
    ],
)
def test_trust_domain_parse_rejections_name_the_rule(text: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeIdError, match="invalid") as raised:
        TrustDomain.parse(text)
    assert rule in str(raised.value)


def test_trust_domain_constructor_rejects_a_scheme_and_non_strings() -> None:
    with pytest.raises(InvalidSpiffeIdError, match="must not include a scheme"):
        TrustDomain("spiffe://example.org")
    with pytest.raises(InvalidSpiffeIdError, match="must be a string"):
        TrustDomain(None)  # type: ignore[arg-type]


def test_trust_domain_id_and_str() -> None:
    domain = TrustDomain("example.org")
    assert str(domain) == "example.org"
    assert domain.id == SpiffeId.parse("spiffe://example.org")
    assert str(domain.id) == "spiffe://example.org"
    assert domain.id.is_trust_domain_id()
    assert repr(domain) == "TrustDomain('example.org')"


# -- SpiffeId construction --------------------------------------------------------------------


def test_from_segments_builds_and_checks_each_segment() -> None:
    assert str(SpiffeId.from_segments("example.org", "ns", "default")) == (
        "spiffe://example.org/ns/default"
    )
    assert SpiffeId.from_segments(TrustDomain("example.org")) == TrustDomain("example.org").id
    with pytest.raises(InvalidSpiffeIdError, match="must not contain '/'"):
        SpiffeId.from_segments("example.org", "a/b")
    with pytest.raises(InvalidSpiffeIdError, match="must not be empty"):
        SpiffeId.from_segments("example.org", "a", "")
    with pytest.raises(InvalidSpiffeIdError, match=r"'\.\.' segment"):
        SpiffeId.from_segments("example.org", "..")
    with pytest.raises(InvalidSpiffeIdError, match="forbidden character ':'"):
        SpiffeId.from_segments("example.org", "pa:th")
    with pytest.raises(InvalidSpiffeIdError, match="must be lower case"):
        SpiffeId.from_segments("Example.org", "x")
    with pytest.raises(InvalidSpiffeIdError, match="must be a string"):
        SpiffeId.from_segments("example.org", 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("relative", "path must start with '/'"),
        ("/", "path must not end with '/'"),
        ("/a/", "path must not end with '/'"),
        ("//a", "empty segment"),
        ("/a/.", "'.' segment"),
        ("/%41", "percent-encoded"),
    ],
)
def test_from_path_and_constructor_check_the_path(path: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeIdError, match=rule):
        SpiffeId.from_path("example.org", path)
    with pytest.raises(InvalidSpiffeIdError, match=rule):
        SpiffeId(TrustDomain("example.org"), path)


def test_constructor_wants_a_trust_domain_object() -> None:
    with pytest.raises(InvalidSpiffeIdError, match="must be a TrustDomain"):
        SpiffeId("example.org", "/x")  # type: ignore[arg-type]


def test_segments_membership_and_trust_domain_id() -> None:
    spiffe_id = SpiffeId.parse("spiffe://example.org/ns/default/sa/web")
    assert spiffe_id.segments == ("ns", "default", "sa", "web")
    assert spiffe_id.is_member_of(TrustDomain("example.org"))
    assert not spiffe_id.is_member_of(TrustDomain("other.example.org"))
    assert not spiffe_id.is_trust_domain_id()
    assert TrustDomain("example.org").id.segments == ()


def test_value_semantics_hashing_and_order() -> None:
    first = SpiffeId.parse("spiffe://example.org/a")
    same = SpiffeId.from_segments("example.org", "a")
    other = SpiffeId.parse("spiffe://example.org/b")
    assert first == same
    assert hash(first) == hash(same)
    assert first != other
    assert first != "spiffe://example.org/a"  # type: ignore[comparison-overlap]
    assert len({first, same, other}) == 2
    assert sorted([other, first]) == [first, other]
    assert TrustDomain("a") < TrustDomain("b")
    assert {TrustDomain("x"): 1}[TrustDomain.parse("spiffe://x")] == 1


def test_instances_are_immutable() -> None:
    spiffe_id = SpiffeId.parse("spiffe://example.org/a")
    with pytest.raises(AttributeError):
        spiffe_id.path = "/b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        spiffe_id.trust_domain.name = "evil.org"  # type: ignore[misc]
    assert str(spiffe_id) == "spiffe://example.org/a"


def test_pickle_copy_and_repr() -> None:
    spiffe_id = SpiffeId.parse("spiffe://example.org/a")
    assert pickle.loads(pickle.dumps(spiffe_id)) == spiffe_id  # noqa: S301 - our own bytes
    assert copy.deepcopy(spiffe_id) == spiffe_id
    assert repr(spiffe_id) == "SpiffeId('spiffe://example.org/a')"


def test_parse_many_fails_on_the_first_invalid_id() -> None:
    assert parse_many(["spiffe://a/x", "spiffe://b"]) == [
        SpiffeId.parse("spiffe://a/x"),
        SpiffeId.parse("spiffe://b"),
    ]
    with pytest.raises(InvalidSpiffeIdError, match="'spiffe://b/'"):
        parse_many(["spiffe://a/x", "spiffe://b/"])


# -- properties -------------------------------------------------------------------------------

trust_domain_names = st.text(alphabet=TD_CHARS, min_size=1, max_size=60)
segments = st.text(alphabet=PATH_CHARS, min_size=1, max_size=20).filter(
    lambda segment: segment not in (".", "..")
)


@given(name=trust_domain_names, parts=st.lists(segments, max_size=8))
def test_property_from_segments_round_trips_through_text(name: str, parts: list[str]) -> None:
    spiffe_id = SpiffeId.from_segments(name, *parts)
    text = str(spiffe_id)
    assert text == "spiffe://" + name + "".join("/" + part for part in parts)
    parsed = SpiffeId.parse(text)
    assert parsed == spiffe_id
    assert hash(parsed) == hash(spiffe_id)
    assert parsed.segments == tuple(parts)
    assert parsed.trust_domain == TrustDomain(name)
    assert SpiffeId.from_path(name, spiffe_id.path) == spiffe_id


@given(text=st.text(max_size=80))
def test_property_parse_either_round_trips_or_raises_invalid(text: str) -> None:
    outcome: SpiffeId | InvalidSpiffeIdError
    try:
        outcome = SpiffeId.parse(text)
    except InvalidSpiffeIdError as error:
        outcome = error
    if isinstance(outcome, SpiffeId):
        assert str(outcome) == text
    else:
        assert str(outcome).startswith("invalid SPIFFE ID")


@given(
    name=trust_domain_names,
    path=st.one_of(
        st.just(""),
        st.text(alphabet=PATH_CHARS + "/%:@?#", max_size=30).map(lambda tail: "/" + tail),
    ),
)
def test_property_parse_agrees_with_a_reference_reading_of_the_rules(name: str, path: str) -> None:
    text = f"spiffe://{name}{path}"
    segments_ok = path == "" or all(
        segment not in ("", ".", "..") and set(segment) <= set(PATH_CHARS)
        for segment in path[1:].split("/")
    )
    if segments_ok:
        assert str(SpiffeId.parse(text)) == text
    else:
        with pytest.raises(InvalidSpiffeIdError):
            SpiffeId.parse(text)


@given(name=st.text(max_size=40))
def test_property_trust_domain_accepts_exactly_the_allowed_names(name: str) -> None:
    allowed = len(name) > 0 and set(name) <= set(TD_CHARS)
    if allowed:
        assert TrustDomain.parse(name).name == name
    else:
        with pytest.raises(InvalidSpiffeIdError):
            TrustDomain.parse(name)
