"""The SDK-level codecs (entries, SVID batches, bundles, claims) write exactly the bytes the
betterproto messages write, and read them back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import json_format

from pyspire.proto import bundles, claims, entries, svids
from pyspire.proto.convert import bundle_to_proto, entry_to_proto, x509_svid_to_proto
from pyspire.proto.gen.codec import google_protobuf, spire_api_server_entry_v1, spire_api_types
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.proto.messages import EncodedMessage
from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry, X509Svid
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

from .differential import google_class

MOMENT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def sample_entries() -> list[RegistrationEntry]:
    return [
        RegistrationEntry(
            id="0b5c3a1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
            spiffe_id=SpiffeId.parse("spiffe://example.org/ns/prod/sa/frontend"),
            parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/k8s_psat/c/node-1"),
            selectors=(Selector("k8s", "ns:prod"), Selector("k8s", "sa:frontend")),
            x509_svid_ttl=3600,
            jwt_svid_ttl=300,
            federates_with=(TrustDomain("other.org"), TrustDomain("third.org")),
            admin=True,
            downstream=True,
            expires_at=MOMENT,
            dns_names=("frontend.prod.svc", "é.example"),
            revision_number=2**40,
            store_svid=True,
            hint="frontend" * 20,
            created_at=MOMENT,
        ),
        RegistrationEntry(
            spiffe_id=SpiffeId.parse("spiffe://example.org/w"),
            parent_id=SpiffeId.parse("spiffe://example.org/spire/server"),
            selectors=(),
        ),
    ]


@pytest.mark.parametrize(
    "fields",
    [
        entries.ENTRY_FIELDS,
        frozenset(),
        frozenset({"spiffe_id", "selectors", "hint"}),
        frozenset({"expires_at", "created_at", "revision_number", "admin"}),
    ],
)
def test_entries_are_encoded_as_betterproto_encodes_them(fields: frozenset[str]) -> None:
    for entry in sample_entries():
        assert entries.encode_entry(entry, fields) == bytes(masked(entry, fields))
        assert entries.encode_entry_revision(entry) == bytes(revision(entry))


def masked(entry: RegistrationEntry, fields: frozenset[str]) -> pb.Entry:
    """betterproto's ``Entry`` with only ``fields`` (and the id) set."""
    full = entry_to_proto(entry)
    return pb.Entry(id=entry.id, **{name: getattr(full, name) for name in fields})


def revision(entry: RegistrationEntry) -> entry_pb.EntryRevision:
    full = entry_to_proto(entry)
    return entry_pb.EntryRevision(
        id=entry.id, revision_number=full.revision_number, created_at=full.created_at
    )


def test_an_unknown_mask_field_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown fields: nope"):
        entries.encode_entry(sample_entries()[0], frozenset({"nope"}))


def test_masks() -> None:
    assert entries.mask_fields(None) == entries.ENTRY_FIELDS
    assert entries.mask_fields(spire_api_types.EntryMask()) == frozenset()
    assert entries.mask_fields(spire_api_types.EntryMask(hint=True)) == {"hint"}


def test_responses_are_betterprotos_bytes() -> None:
    encoded_entries = [entries.encode_entry(entry) for entry in sample_entries()]
    revisions = [entries.encode_entry_revision(entry) for entry in sample_entries()]
    full = [entry_to_proto(entry) for entry in sample_entries()]
    assert entries.get_authorized_entries_response(encoded_entries) == bytes(
        entry_pb.GetAuthorizedEntriesResponse(entries=full)
    )
    assert entries.sync_authorized_entries_response(
        revisions=revisions, entries=encoded_entries, more=True
    ) == bytes(
        entry_pb.SyncAuthorizedEntriesResponse(
            entry_revisions=[revision(entry) for entry in sample_entries()],
            entries=full,
            more=True,
        )
    )
    assert entries.list_entries_response(encoded_entries, "7") == bytes(
        entry_pb.ListEntriesResponse(entries=full, next_page_token="7")
    )
    for size in (0, 127, 128, 16_383, 16_384, 3_000_000):
        assert entries.framed_entry_size(size) == len(entries.list_entries_response([b"\0" * size]))


def test_entries_read_back_validated() -> None:
    wire = entries.get_authorized_entries_response(
        [entries.encode_entry(entry) for entry in sample_entries()]
    )
    response = spire_api_server_entry_v1.decode_GetAuthorizedEntriesResponse(wire)
    assert entries.decode_entries(response.entries) == sample_entries()
    broken = spire_api_types.Entry(
        spiffe_id=spire_api_types.SPIFFEID("example.org", "no-slash"),
        parent_id=spire_api_types.SPIFFEID("example.org", "/p"),
    )
    with pytest.raises(InvalidArgumentError, match=r"entries\[1\]\.spiffe_id"):
        entries.decode_entries([response.entries[0], broken])


def sample_svid(hint: str = "") -> X509Svid:
    return X509Svid(
        spiffe_id=SpiffeId.parse("spiffe://example.org/w"),
        cert_chain=(b"leaf" * 100, b"intermediate"),
        expires_at=MOMENT,
        hint=hint,
    )


def test_svid_batches_are_written_as_before() -> None:
    results = [(0, "OK", sample_svid()), (5, "entry not found", None), (0, "", sample_svid("h"))]
    ours = svids.batch_new_x509_svid_response(results)
    assert ours == bytes(
        svid_pb.BatchNewX509SvidResponse(
            results=[
                svid_pb.BatchNewX509SvidResponseResult(
                    status=pb.Status(code=code, message=message),
                    **({"svid": x509_svid_to_proto(svid)} if svid is not None else {}),
                )
                for code, message, svid in results
            ]
        )
    )
    read = svids.read_batch_new_x509_svid_response(ours)
    assert [(code, message) for code, message, _ in read] == [(c, m) for c, m, _ in results]
    assert read[1][2] is None
    assert read[2][2] == spire_api_types.decode_X509SVID(svids.encode_x509_svid(sample_svid("h")))
    assert svids.encode_x509_svid(sample_svid()) == bytes(x509_svid_to_proto(sample_svid()))


def test_svid_batch_requests_both_ways() -> None:
    items = [("e1", b"csr-1"), ("", b""), ("é", b"\x00" * 300)]
    ours = svids.batch_new_x509_svid_request(items)
    betterproto_request = svid_pb.BatchNewX509SvidRequest(
        params=[svid_pb.NewX509SvidParams(entry_id=e, csr=c) for e, c in items]
    )
    assert ours == bytes(betterproto_request)
    assert svids.read_batch_new_x509_svid_request(ours) == items


def sample_bundle() -> Bundle:
    return Bundle(
        trust_domain=TrustDomain("example.org"),
        x509_authorities=(X509Authority(b"root-1"), X509Authority(b"root-2", tainted=True)),
        jwt_authorities=(JwtAuthority("kid", b"pkix", MOMENT, tainted=True),),
        sequence_number=2**63,
        refresh_hint=300,
    )


def test_bundles_both_ways() -> None:
    data = bundles.encode_bundle(sample_bundle())
    assert data == bytes(bundle_to_proto(sample_bundle()))
    assert bundles.decode_bundle(data) == sample_bundle()
    with pytest.raises(InvalidArgumentError, match=r"federated\.trust_domain"):
        bundles.decode_bundle(b"", "federated")


def test_claims_both_ways() -> None:
    document = {
        "sub": "spiffe://example.org/w",
        "aud": ["a", "b"],
        "exp": 1_900_000_000,
        "ratio": 0.5,
        "admin": False,
        "nothing": None,
        "nested": {"list": [1, {"deep": True}]},
    }
    data = claims.encode_claims(document)
    google = google_class("google.protobuf.Struct").FromString(data)
    assert json_format.MessageToDict(google) == {
        **document,
        "exp": 1_900_000_000.0,
        "nested": {"list": [1.0, {"deep": True}]},
    }
    assert claims.claims_from_struct(google_protobuf.decode_Struct(data)) == document
    assert claims.claims_from_struct(None) == {}
    with pytest.raises(InvalidArgumentError, match="set is not JSON"):
        claims.encode_claims({"x": {1, 2}})


def test_encoded_messages_carry_bytes_through_grpclib() -> None:
    message = EncodedMessage.FromString(memoryview(b"\x0a\x00"))
    assert message.SerializeToString() == b"\x0a\x00"
    assert isinstance(message.data, bytes)
    with pytest.raises(TypeError, match="without a decoder"):
        message.decode()
    typed = EncodedMessage(b"\x0a\x00", spire_api_server_entry_v1.decode_ListEntriesResponse)
    assert typed.decode() == spire_api_server_entry_v1.ListEntriesResponse(
        entries=[spire_api_types.Entry()]
    )
