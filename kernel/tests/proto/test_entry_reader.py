"""The direct entry reader agrees with the general path (codec, then conversion) on any bytes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyspire.proto.convert import entry_from_proto
from pyspire.proto.entries import encode_entry
from pyspire.proto.entry_reader import read_entry
from pyspire.proto.gen.codec.spire_api_types import decode_Entry, write_Entry, write_SPIFFEID
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

_PATHS = st.sampled_from(["/w", "/ns/a/sa/b", "/spire/agent/x/node"])
_TEXT = st.text(max_size=12)


@st.composite
def entries(draw: st.DrawFn) -> RegistrationEntry:
    moments = st.one_of(
        st.none(),
        st.integers(min_value=1, max_value=4_000_000_000).map(
            lambda s: datetime.fromtimestamp(s, UTC)
        ),
    )
    return RegistrationEntry(
        id=draw(_TEXT),
        spiffe_id=SpiffeId.from_path(TrustDomain("example.org"), draw(_PATHS)),
        parent_id=SpiffeId.from_path(TrustDomain(draw(st.sampled_from(["a.org", "b.org"]))), "/p"),
        selectors=tuple(
            Selector(draw(st.sampled_from(["unix", "k8s"])), value)
            for value in draw(st.lists(st.sampled_from(["uid:1", "ns:a", "sa:b"]), max_size=3))
        ),
        x509_svid_ttl=draw(st.integers(min_value=0, max_value=2**31 - 1)),
        jwt_svid_ttl=draw(st.integers(min_value=0, max_value=300)),
        federates_with=tuple(
            TrustDomain(name) for name in draw(st.lists(st.sampled_from(["c.org", "d.org"])))
        ),
        admin=draw(st.booleans()),
        downstream=draw(st.booleans()),
        expires_at=draw(moments),
        dns_names=tuple(draw(st.lists(_TEXT, max_size=2))),
        revision_number=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        store_svid=draw(st.booleans()),
        hint=draw(_TEXT),
        created_at=draw(moments),
    )


def general(data: bytes) -> RegistrationEntry | str:
    try:
        return entry_from_proto(decode_Entry(data), "entry")
    except InvalidArgumentError as error:
        return str(error)


def direct(data: bytes) -> RegistrationEntry | str:
    try:
        return read_entry(data, "entry")
    except InvalidArgumentError as error:
        return str(error)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entry=entries(), cut=st.integers(min_value=0), flip=st.integers(min_value=0))
def test_read_entry_agrees_with_the_general_path(
    entry: RegistrationEntry, cut: int, flip: int
) -> None:
    data = encode_entry(entry)
    assert direct(data) == entry
    assert direct(data[: cut % (len(data) + 1)]) == general(data[: cut % (len(data) + 1)])
    damaged = bytearray(data)
    damaged[flip % len(data)] ^= 1 << (flip % 8)
    assert direct(bytes(damaged)) == general(bytes(damaged))


@pytest.mark.parametrize(
    "data",
    [
        # A negative TTL, a message field sent twice (merged), an unknown field, no parent.
        write_Entry(
            spiffe_id=write_SPIFFEID(trust_domain="example.org", path="/w"),
            parent_id=write_SPIFFEID(trust_domain="example.org", path="/p"),
            x509_svid_ttl=-1,
        ),
        write_Entry(
            spiffe_id=write_SPIFFEID(trust_domain="example.org"),
            parent_id=write_SPIFFEID(trust_domain="example.org", path="/p"),
        )
        + b"\x12"
        + bytes([len(write_SPIFFEID(path="/w"))])
        + write_SPIFFEID(path="/w"),
        write_Entry(
            spiffe_id=write_SPIFFEID(trust_domain="example.org", path="/w"),
            parent_id=write_SPIFFEID(trust_domain="example.org", path="/p"),
        )
        + b"\x82\x01\x00\xf8\x07\x01",
        write_Entry(spiffe_id=write_SPIFFEID(trust_domain="example.org", path="/w")),
        write_Entry(
            spiffe_id=write_SPIFFEID(trust_domain="example.org", path="/w"),
            parent_id=write_SPIFFEID(trust_domain="example.org", path="/p"),
            expires_at=2**62,
        ),
    ],
    ids=["negative-ttl", "merged-id", "unknown-fields", "no-parent", "timestamp-range"],
)
def test_unusual_encodings_are_read_as_the_general_path_reads_them(data: bytes) -> None:
    assert direct(data) == general(data)
