"""Entry validation: every rule, with the exact message an operator would read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pyspire.registry.validation import (
    is_node_alias,
    is_reserved_path,
    node_alias_parent,
    validate_dns_name,
    validate_entry,
    validate_entry_id,
    validate_text,
)
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.limits import (
    MAX_DNS_NAMES_PER_ENTRY,
    MAX_FEDERATES_WITH_PER_ENTRY,
    MAX_HINT_BYTES,
    MAX_SELECTOR_TYPE_BYTES,
    MAX_SELECTOR_VALUE_BYTES,
    MAX_SELECTORS_PER_ENTRY,
)
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain, server_id

TD = TrustDomain("example.org")
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def sid(text: str) -> SpiffeId:
    return SpiffeId.parse(text)


def make_entry(**changes: Any) -> RegistrationEntry:
    entry = RegistrationEntry(
        spiffe_id=sid("spiffe://example.org/workload"),
        parent_id=sid("spiffe://example.org/spire/agent/join_token/abc"),
        selectors=(Selector("unix", "uid:1000"),),
    )
    return replace(entry, **changes)


def broken_selector(kind: str, value: str) -> Selector:
    """A selector that bypassed its constructor (as decoding code could produce)."""
    selector = object.__new__(Selector)
    object.__setattr__(selector, "type", kind)
    object.__setattr__(selector, "value", value)
    return selector


def test_a_complete_valid_entry_is_returned_unchanged() -> None:
    entry = make_entry(
        id="e1",
        x509_svid_ttl=3600,
        jwt_svid_ttl=300,
        federates_with=(TrustDomain("partner.org"),),
        admin=True,
        downstream=True,
        expires_at=NOW + timedelta(days=1),
        dns_names=("api.example.org", "*.svc.example.org", "API-2.Example.org"),
        store_svid=True,
        hint="external",
    )
    assert validate_entry(entry, TD, now=NOW) is entry


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"spiffe_id": sid("spiffe://other.org/workload")},
            "spiffe_id 'spiffe://other.org/workload' is not a member of trust domain 'example.org'",
            id="spiffe-id-foreign",
        ),
        pytest.param(
            {"spiffe_id": sid("spiffe://example.org")},
            "spiffe_id 'spiffe://example.org' is the trust domain's own ID: a workload ID "
            "needs a path",
            id="spiffe-id-trust-domain",
        ),
        pytest.param(
            {"spiffe_id": sid("spiffe://example.org/spire/agent/x")},
            "spiffe_id 'spiffe://example.org/spire/agent/x' is in the reserved namespace "
            "'/spire' of the server and agents",
            id="spiffe-id-reserved-agent",
        ),
        pytest.param(
            {"spiffe_id": sid("spiffe://example.org/spire")},
            "spiffe_id 'spiffe://example.org/spire' is in the reserved namespace '/spire' of "
            "the server and agents",
            id="spiffe-id-reserved-root",
        ),
        pytest.param(
            {
                "spiffe_id": sid("spiffe://example.org/spire/server"),
                "parent_id": sid("spiffe://example.org/spire/server"),
            },
            "spiffe_id 'spiffe://example.org/spire/server' is in the reserved namespace "
            "'/spire' of the server and agents",
            id="spiffe-id-reserved-even-under-server",
        ),
        pytest.param(
            {"spiffe_id": "spiffe://example.org/workload"},
            "spiffe_id must be a SpiffeId, found str",
            id="spiffe-id-type",
        ),
        pytest.param(
            {"parent_id": sid("spiffe://other.org/spire/agent/x")},
            "parent_id 'spiffe://other.org/spire/agent/x' is not a member of trust domain "
            "'example.org'",
            id="parent-id-foreign",
        ),
        pytest.param(
            {"parent_id": sid("spiffe://example.org")},
            "parent_id 'spiffe://example.org' is the trust domain's own ID: a parent needs a path",
            id="parent-id-trust-domain",
        ),
        pytest.param(
            {"parent_id": None},
            "parent_id must be a SpiffeId, found NoneType",
            id="parent-id-type",
        ),
        pytest.param(
            {"selectors": ()},
            "selectors is empty: an entry needs at least one selector",
            id="selectors-empty",
        ),
        pytest.param(
            {"selectors": (Selector("unix", "uid:1"), "unix:uid:2")},
            "selectors[1] must be a Selector, found str",
            id="selector-type",
        ),
        pytest.param(
            {"selectors": (broken_selector("", "x"),)},
            "selectors[0] has an empty type",
            id="selector-empty-type",
        ),
        pytest.param(
            {"selectors": (Selector("a", "b"), broken_selector("un:ix", "x"))},
            "selectors[1] type 'un:ix' must not contain ':'",
            id="selector-colon-in-type",
        ),
        pytest.param(
            {"selectors": (broken_selector("unix", ""),)},
            "selectors[0] ('unix') has an empty value",
            id="selector-empty-value",
        ),
        pytest.param(
            {"x509_svid_ttl": -1},
            "x509_svid_ttl -1 is negative: give seconds, 0 for the default",
            id="x509-ttl-negative",
        ),
        pytest.param(
            {"jwt_svid_ttl": -5},
            "jwt_svid_ttl -5 is negative: give seconds, 0 for the default",
            id="jwt-ttl-negative",
        ),
        pytest.param(
            {"x509_svid_ttl": 2**31},
            "x509_svid_ttl 2147483648 is larger than the 2147483647 allowed",
            id="x509-ttl-too-large",
        ),
        pytest.param(
            {"jwt_svid_ttl": 1.5},
            "jwt_svid_ttl must be an integer, found float",
            id="jwt-ttl-type",
        ),
        pytest.param(
            {"dns_names": ("ok.example.org", "bad..example.org")},
            "dns_names[1] 'bad..example.org': label 2 is empty",
            id="dns-empty-label",
        ),
        pytest.param(
            {"dns_names": ("",)},
            "dns_names[0] is empty",
            id="dns-empty",
        ),
        pytest.param(
            {"dns_names": ("-api.example.org",)},
            "dns_names[0] '-api.example.org': label 1 '-api' must be letters, digits and "
            "hyphens, not starting or ending with a hyphen",
            id="dns-leading-hyphen",
        ),
        pytest.param(
            {"dns_names": ("api-.example.org",)},
            "dns_names[0] 'api-.example.org': label 1 'api-' must be letters, digits and "
            "hyphens, not starting or ending with a hyphen",
            id="dns-trailing-hyphen",
        ),
        pytest.param(
            {"dns_names": ("my_host.example.org",)},
            "dns_names[0] 'my_host.example.org': label 1 'my_host' must be letters, digits "
            "and hyphens, not starting or ending with a hyphen",
            id="dns-underscore",
        ),
        pytest.param(
            {"dns_names": ("api.example.org.",)},
            "dns_names[0] 'api.example.org.' must not end with '.'",
            id="dns-trailing-dot",
        ),
        pytest.param(
            {"dns_names": ("bücher.example",)},
            "dns_names[0] 'bücher.example' is not ASCII: give the IDNA (xn--) form",
            id="dns-non-ascii",
        ),
        pytest.param(
            {"dns_names": ("a" * 64 + ".example.org",)},
            f"dns_names[0] '{'a' * 64}.example.org': label 1 is 64 characters, longer than "
            "the 63 allowed",
            id="dns-long-label",
        ),
        pytest.param(
            {"dns_names": (".".join(["abcdefghi"] * 26),)},
            "dns_names[0] 'abcdefghi.abcdefghi.abcdefghi.abcdefghi.'... is 259 characters, "
            "longer than the 253 allowed",
            id="dns-too-long",
        ),
        pytest.param(
            {"dns_names": ("api.*.example.org",)},
            "dns_names[0] 'api.*.example.org': a wildcard must be the whole leftmost label "
            "('*.example.org')",
            id="dns-wildcard-not-leftmost",
        ),
        pytest.param(
            {"dns_names": ("*api.example.org",)},
            "dns_names[0] '*api.example.org': a wildcard must be the whole leftmost label "
            "('*.example.org')",
            id="dns-wildcard-partial-label",
        ),
        pytest.param(
            {"dns_names": ("*.*.example.org",)},
            "dns_names[0] '*.*.example.org' has more than one wildcard",
            id="dns-two-wildcards",
        ),
        pytest.param(
            {"dns_names": ("*",)},
            "dns_names[0] '*': a wildcard needs a domain after it",
            id="dns-bare-wildcard",
        ),
        pytest.param(
            {"dns_names": (42,)},
            "dns_names[0] must be a string, found int",
            id="dns-type",
        ),
        pytest.param(
            {"federates_with": (TrustDomain("partner.org"), TrustDomain("example.org"))},
            "federates_with[1] 'example.org' is our own trust domain: federate only with "
            "other trust domains",
            id="federates-with-self",
        ),
        pytest.param(
            {"federates_with": ("partner.org",)},
            "federates_with[0] must be a TrustDomain, found str",
            id="federates-with-type",
        ),
        pytest.param(
            {"hint": "é" * 513},
            "hint is 1026 bytes, longer than the 1024 allowed",
            id="hint-too-long-bytes",
        ),
        pytest.param(
            {"expires_at": NOW},
            "expires_at 2030-01-01T00:00:00+00:00 is not in the future (now is "
            "2030-01-01T00:00:00+00:00)",
            id="expires-at-now",
        ),
        pytest.param(
            {"expires_at": NOW - timedelta(seconds=1)},
            "expires_at 2029-12-31T23:59:59+00:00 is not in the future (now is "
            "2030-01-01T00:00:00+00:00)",
            id="expires-at-past",
        ),
        pytest.param(
            {"expires_at": datetime(2031, 1, 1)},  # naive on purpose
            "expires_at must be timezone-aware (UTC)",
            id="expires-at-naive",
        ),
        pytest.param(
            {"admin": 1},
            "admin must be a bool, found int",
            id="admin-type",
        ),
    ],
)
def test_each_rule_rejects_with_a_message_naming_the_field(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_entry(make_entry(**changes), TD, now=NOW)
    assert str(caught.value) == message


def test_hint_of_exactly_the_limit_is_accepted() -> None:
    entry = make_entry(hint="a" * MAX_HINT_BYTES)
    assert validate_entry(entry, TD).hint == "a" * MAX_HINT_BYTES


def test_every_list_and_string_at_its_limit_is_accepted() -> None:
    entry = make_entry(
        selectors=tuple(
            Selector("t" * MAX_SELECTOR_TYPE_BYTES, f"{index:04}" + "v" * 4092)
            for index in range(MAX_SELECTORS_PER_ENTRY)
        ),
        dns_names=tuple(f"n{index}.example.org" for index in range(MAX_DNS_NAMES_PER_ENTRY)),
        federates_with=tuple(
            TrustDomain(f"td{index}.org") for index in range(MAX_FEDERATES_WITH_PER_ENTRY)
        ),
        hint="é" * (MAX_HINT_BYTES // 2),
    )
    assert len(entry.selectors[0].value.encode()) == MAX_SELECTOR_VALUE_BYTES
    assert validate_entry(entry, TD, now=NOW) is entry


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"selectors": (Selector("unix", "v" * (1024 * 1024)),)},
            "selectors[0] value is 1048576 bytes, longer than the 4096 allowed",
            id="selector-value-of-one-mebibyte",
        ),
        pytest.param(
            {"selectors": (Selector("unix", "é" * 2049),)},
            "selectors[0] value is 4098 bytes, longer than the 4096 allowed",
            id="selector-value-counted-in-bytes",
        ),
        pytest.param(
            {"selectors": (Selector("t" * 129, "v"),)},
            "selectors[0] type is 129 bytes, longer than the 128 allowed",
            id="selector-type-too-long",
        ),
        pytest.param(
            {"selectors": tuple(Selector("unix", f"uid:{n}") for n in range(10_000))},
            "selectors has 10000 items, more than the 256 allowed",
            id="ten-thousand-selectors",
        ),
        pytest.param(
            {"dns_names": tuple(f"n{n}.example.org" for n in range(257))},
            "dns_names has 257 items, more than the 256 allowed",
            id="too-many-dns-names",
        ),
        pytest.param(
            {"federates_with": tuple(TrustDomain(f"td{n}.org") for n in range(257))},
            "federates_with has 257 items, more than the 256 allowed",
            id="too-many-federated-domains",
        ),
        pytest.param(
            {"selectors": (Selector("unix", "uid:0\nunix:uid:1000"),)},
            "selectors[0] value holds a control character (U+000A) at position 5",
            id="selector-value-newline",
        ),
        pytest.param(
            {"selectors": (Selector("unix", "uid:\x01"),)},
            "selectors[0] value holds a control character (U+0001) at position 4",
            id="selector-value-c0",
        ),
        pytest.param(
            {"selectors": (Selector("un\x1bix", "uid:1"),)},
            "selectors[0] type holds a control character (U+001B) at position 2",
            id="selector-type-escape",
        ),
        pytest.param(
            {"selectors": (Selector("unix", "uid:\u202e1"),)},
            "selectors[0] value holds a control character (U+202E) at position 4",
            id="selector-value-bidi-override",
        ),
        pytest.param(
            {"hint": "web\r\nEntry ID : forged"},
            "hint holds a control character (U+000D) at position 3",
            id="hint-newline",
        ),
        pytest.param(
            {"hint": "a\x7f"},
            "hint holds a control character (U+007F) at position 1",
            id="hint-del",
        ),
        pytest.param(
            {"hint": "a\u2028b"},
            "hint holds a control character (U+2028) at position 1",
            id="hint-line-separator",
        ),
        pytest.param(
            {"hint": "a\ud800"},
            "hint holds a control character (U+D800) at position 1",
            id="hint-lone-surrogate",
        ),
    ],
)
def test_limits_on_contents(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_entry(make_entry(**changes), TD, now=NOW)
    assert str(caught.value) == message


def test_printable_text_of_any_script_is_accepted() -> None:
    for text in ("Grüße", "東京-web", "emoji 🚀", "tab-free text with spaces", "a\u00a0b"):
        entry = make_entry(hint=text, selectors=(Selector("docker", f"label:name:{text}"),))
        assert validate_entry(entry, TD) is entry


@pytest.mark.parametrize(
    "entry_id",
    [
        "0b2f6c1e-5d1e-4c5f-9d1f-6f0c2b8e7a11",
        "web-frontend.v2",
        "my_entry",
        "A",
        "x" * 255,
        "...",
    ],
)
def test_entry_ids_like_spire_accepts(entry_id: str) -> None:
    assert validate_entry_id(entry_id) == entry_id


@pytest.mark.parametrize(
    ("entry_id", "message"),
    [
        ("../../etc/passwd", "id '../../etc/passwd' may hold only ASCII letters, digits, "),
        ("a/b", "id 'a/b' may hold only"),
        ("bad id!", "id 'bad id!' may hold only"),
        ("a:b", "id 'a:b' may hold only"),
        ("entry\n", "id 'entry\\n' may hold only"),
        ("ünïcode", "id 'ünïcode' may hold only"),
        (".", "id '.' is not a name"),
        ("..", "id '..' is not a name"),
        ("", "id is empty"),
        ("x" * 256, "id is 256 characters, longer than the 255 allowed"),
    ],
)
def test_entry_ids_outside_the_rules_are_refused(entry_id: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_entry_id(entry_id)
    assert str(caught.value).startswith(message)


def test_validate_text_names_the_field() -> None:
    assert validate_text("v1.2.3", "agent_version", max_bytes=10) == "v1.2.3"
    with pytest.raises(InvalidArgumentError, match=r"^key_id is 11 bytes, longer than the 10"):
        validate_text("k" * 11, "key_id", max_bytes=10)
    with pytest.raises(InvalidArgumentError, match=r"^key_id holds a control character"):
        validate_text("k\x00", "key_id", max_bytes=10)
    with pytest.raises(InvalidArgumentError, match=r"^key_id must be a string, found int"):
        validate_text(5, "key_id", max_bytes=10)


def test_zero_ttls_mean_the_default_and_are_accepted() -> None:
    entry = make_entry(x509_svid_ttl=0, jwt_svid_ttl=0)
    assert validate_entry(entry, TD) is entry


def test_expiry_in_the_past_is_accepted_when_no_time_is_given() -> None:
    entry = make_entry(expires_at=NOW - timedelta(days=1))
    assert validate_entry(entry, TD) is entry


def test_parent_may_be_any_id_in_the_trust_domain() -> None:
    for parent in (
        "spiffe://example.org/spire/server",
        "spiffe://example.org/spire/agent/x509pop/abc",
        "spiffe://example.org/some/workload",
    ):
        entry = make_entry(parent_id=sid(parent))
        assert validate_entry(entry, TD).parent_id == sid(parent)


def test_duplicates_are_dropped_keeping_the_first() -> None:
    entry = make_entry(
        selectors=(Selector("a", "1"), Selector("b", "2"), Selector("a", "1")),
        dns_names=("x.example.org", "y.example.org", "x.example.org"),
        federates_with=(TrustDomain("b.org"), TrustDomain("a.org"), TrustDomain("b.org")),
    )
    validated = validate_entry(entry, TD)
    assert validated.selectors == (Selector("a", "1"), Selector("b", "2"))
    assert validated.dns_names == ("x.example.org", "y.example.org")
    assert validated.federates_with == (TrustDomain("b.org"), TrustDomain("a.org"))


def test_mask_limits_the_checks_to_the_named_fields() -> None:
    partial = make_entry(selectors=(), hint="short")
    assert validate_entry(partial, TD, mask=frozenset({"hint"})) is partial
    with pytest.raises(InvalidArgumentError, match=r"^selectors is empty"):
        validate_entry(partial, TD, mask=frozenset({"hint", "selectors"}))


def test_mask_with_unknown_fields_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_entry(make_entry(), TD, mask=frozenset({"revision_number", "nope", "hint"}))
    assert str(caught.value) == "mask names unknown or read-only fields: nope, revision_number"


def test_non_entry_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_entry("entry", TD)  # type: ignore[arg-type]
    assert str(caught.value) == "entry must be a RegistrationEntry, found str"


@pytest.mark.parametrize(
    "name",
    ["localhost", "a", "api.example.org", "*.example.org", "*.a", "xn--bcher-kva.example", "1-2"],
)
def test_valid_dns_names(name: str) -> None:
    assert validate_dns_name(name) == name


def test_node_alias_helpers() -> None:
    assert node_alias_parent(TD) == sid("spiffe://example.org/spire/server")
    assert server_id(TD) == node_alias_parent(TD)
    alias = make_entry(parent_id=node_alias_parent(TD))
    assert is_node_alias(alias)
    assert not is_node_alias(make_entry())
    assert not is_node_alias(make_entry(parent_id=sid("spiffe://example.org/spire/server2")))


@pytest.mark.parametrize(
    ("path", "reserved"),
    [
        ("/spire", True),
        ("/spire/server", True),
        ("/spire/agent/x", True),
        ("/spire2", False),
        ("/spiree/x", False),
        ("/app/spire", False),
        ("", False),
    ],
)
def test_reserved_paths(path: str, reserved: bool) -> None:
    assert is_reserved_path(path) is reserved
