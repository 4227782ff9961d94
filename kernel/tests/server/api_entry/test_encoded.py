"""Responses assembled from cached entry encodings are byte for byte betterproto's own."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import grpclib.encoding.proto
import pytest

from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.server.api.encoded import (
    ALL_ENTRY_FIELDS,
    EncodedEntries,
    EncodedGetAuthorizedEntriesResponse,
    EncodedSyncAuthorizedEntriesResponse,
    encode_entry_revision,
    encode_varint,
    entry_to_masked_proto,
    framed_size,
    get_authorized_entries_response,
    list_entries_response,
    mask_fields,
    sync_authorized_entries_response,
)
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

CREATED = datetime(2030, 1, 1, tzinfo=UTC)


def make_entry(number: int, *, selectors: int = 2, value_size: int = 8) -> RegistrationEntry:
    return RegistrationEntry(
        id=f"entry-{number}",
        spiffe_id=SpiffeId.parse(f"spiffe://example.org/workload/{number}"),
        parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/x"),
        selectors=tuple(
            Selector("k8s", f"label:{index}:" + "v" * value_size) for index in range(selectors)
        ),
        x509_svid_ttl=3600,
        jwt_svid_ttl=300,
        federates_with=(TrustDomain("other.org"),),
        admin=number % 2 == 0,
        downstream=number % 3 == 0,
        expires_at=datetime(2031, 1, 1, tzinfo=UTC),
        dns_names=(f"w{number}.example.org",),
        revision_number=number,
        store_svid=True,
        hint=f"hint-{number}",
        created_at=CREATED,
    )


@pytest.mark.parametrize(
    "value", [0, 1, 127, 128, 300, 16_383, 16_384, 2**31 - 1, 2**63 - 1, -1, -(2**63)]
)
def test_varint_matches_betterproto(value: int) -> None:
    # revision_number is int64 field 11 of Entry: tag 0x58, then the varint (0 is not sent).
    encoded = bytes(pb.Entry(revision_number=value))
    if value == 0:
        assert encoded == b""
        assert encode_varint(value) == b"\x00"
    else:
        assert encoded == b"\x58" + encode_varint(value)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 3_000_000])
def test_framed_size_counts_tag_length_and_payload(size: int) -> None:
    assert framed_size(size) == 1 + len(encode_varint(size)) + size


@pytest.mark.parametrize(
    ("revision", "created_at"), [(0, None), (7, CREATED), (2**40, None), (0, CREATED)]
)
def test_revision_encoding_matches_betterproto(revision: int, created_at: datetime | None) -> None:
    entry = dataclasses.replace(make_entry(1), revision_number=revision, created_at=created_at)
    expected = entry_pb.EntryRevision(
        id=entry.id,
        revision_number=revision,
        created_at=int(created_at.timestamp()) if created_at else 0,
    )
    assert encode_entry_revision(entry) == bytes(expected)


def test_get_authorized_entries_bytes_equal_betterproto() -> None:
    entries = [make_entry(number) for number in range(25)]
    cache = EncodedEntries()
    for fields in (ALL_ENTRY_FIELDS, frozenset({"spiffe_id", "revision_number"}), frozenset()):
        assembled = get_authorized_entries_response(cache.encoded_many(entries, fields))
        plain = entry_pb.GetAuthorizedEntriesResponse(
            entries=[entry_to_masked_proto(entry, fields) for entry in entries]
        )
        assert bytes(assembled) == bytes(plain)
        assert assembled.SerializeToString() == bytes(plain)
        assert len(assembled) == len(bytes(plain))
        assert assembled.decode() == plain


def test_large_entries_use_multibyte_lengths() -> None:
    entries = [make_entry(number, selectors=40, value_size=100) for number in range(3)]
    cache = EncodedEntries()
    assembled = get_authorized_entries_response(cache.encoded_many(entries))
    plain = entry_pb.GetAuthorizedEntriesResponse(
        entries=[entry_to_masked_proto(entry, ALL_ENTRY_FIELDS) for entry in entries]
    )
    assert len(bytes(plain)) > 3 * 4000
    assert bytes(assembled) == bytes(plain)


@pytest.mark.parametrize("more", [False, True])
def test_sync_response_bytes_equal_betterproto(more: bool) -> None:
    entries = [make_entry(number) for number in range(5)]
    cache = EncodedEntries()
    assembled = sync_authorized_entries_response(
        revisions=[cache.revision(entry) for entry in entries[:3]],
        entries=cache.encoded_many(entries[3:]),
        more=more,
    )
    plain = entry_pb.SyncAuthorizedEntriesResponse(
        entry_revisions=[
            entry_pb.EntryRevision(
                id=entry.id,
                revision_number=entry.revision_number,
                created_at=int(CREATED.timestamp()),
            )
            for entry in entries[:3]
        ],
        entries=[entry_to_masked_proto(entry, ALL_ENTRY_FIELDS) for entry in entries[3:]],
        more=more,
    )
    assert bytes(assembled) == bytes(plain)
    assert assembled.decode() == plain
    assert bytes(sync_authorized_entries_response()) == bytes(
        entry_pb.SyncAuthorizedEntriesResponse()
    )


@pytest.mark.parametrize("token", ["", "12345"])
def test_list_response_bytes_equal_betterproto(token: str) -> None:
    entries = [make_entry(number) for number in range(4)]
    assembled = list_entries_response(EncodedEntries().encoded_many(entries), token)
    plain = entry_pb.ListEntriesResponse(
        entries=[entry_to_masked_proto(entry, ALL_ENTRY_FIELDS) for entry in entries],
        next_page_token=token,
    )
    assert bytes(assembled) == bytes(plain)


def test_grpclib_codec_sends_the_prebuilt_bytes() -> None:
    codec = grpclib.encoding.proto.ProtoCodec()
    entries = [make_entry(number) for number in range(3)]
    response = get_authorized_entries_response(EncodedEntries().encoded_many(entries))
    data = codec.encode(response, entry_pb.GetAuthorizedEntriesResponse)
    decoded = codec.decode(data, entry_pb.GetAuthorizedEntriesResponse)
    assert isinstance(decoded, entry_pb.GetAuthorizedEntriesResponse)
    assert [entry.id for entry in decoded.entries] == ["entry-0", "entry-1", "entry-2"]
    assert decoded.entries[1].selectors[0].type == "k8s"
    sync = sync_authorized_entries_response(more=True)
    assert isinstance(sync, entry_pb.SyncAuthorizedEntriesResponse)
    decoded_sync = codec.decode(
        codec.encode(sync, entry_pb.SyncAuthorizedEntriesResponse),
        entry_pb.SyncAuthorizedEntriesResponse,
    )
    assert isinstance(decoded_sync, entry_pb.SyncAuthorizedEntriesResponse)
    assert decoded_sync.more
    # The prebuilt message keeps its generated fields empty: the content is in the bytes.
    assert isinstance(response, EncodedGetAuthorizedEntriesResponse)
    assert response.entries == []
    assert isinstance(sync, EncodedSyncAuthorizedEntriesResponse)


def test_mask_fields() -> None:
    assert mask_fields(None) == ALL_ENTRY_FIELDS
    request = entry_pb.GetAuthorizedEntriesRequest()
    assert mask_fields(request.output_mask) == ALL_ENTRY_FIELDS
    sent = entry_pb.GetAuthorizedEntriesRequest().parse(
        bytes(entry_pb.GetAuthorizedEntriesRequest(output_mask=pb.EntryMask(hint=True)))
    )
    assert mask_fields(sent.output_mask) == frozenset({"hint"})
    # An empty mask on the wire (tag, zero length) selects nothing but the id.
    empty = entry_pb.GetAuthorizedEntriesRequest().parse(b"\x0a\x00")
    assert mask_fields(empty.output_mask) == frozenset()
    masked = entry_to_masked_proto(make_entry(3), frozenset())
    assert bytes(masked) == bytes(pb.Entry(id="entry-3"))


def test_masked_proto_rejects_unknown_fields() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown fields: colour"):
        entry_to_masked_proto(make_entry(1), frozenset({"colour"}))


def test_cache_reuses_encodings_and_notices_changes() -> None:
    cache = EncodedEntries()
    entry = make_entry(1)
    first = cache.encoded(entry)
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.encoded(entry) is first
    # An equal entry (read again from the datastore) is served from the cache too.
    assert cache.encoded(dataclasses.replace(entry)) is first
    assert (cache.hits, cache.misses) == (2, 1)
    # A changed entry with the same id and revision (deleted and re-created) is encoded anew.
    changed = dataclasses.replace(entry, hint="changed")
    data = cache.encoded(changed)
    assert data != first
    assert (
        entry_pb.GetAuthorizedEntriesResponse()
        .parse(bytes(get_authorized_entries_response([data])))
        .entries[0]
        .hint
        == "changed"
    )
    # Masks are cached separately.
    narrow = cache.encoded(changed, frozenset({"hint"}))
    assert narrow == bytes(pb.Entry(id=entry.id, hint="changed"))
    assert len(cache) == 1
    cache.discard([entry.id])
    assert len(cache) == 0


def test_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache = EncodedEntries(max_entries=3)
    entries = [make_entry(number) for number in range(4)]
    for entry in entries[:3]:
        cache.encoded(entry)
    cache.encoded(entries[0])  # now the most recently used
    cache.encoded(entries[3])  # evicts entry-1
    assert len(cache) == 3
    misses = cache.misses
    cache.encoded(entries[0])
    assert cache.misses == misses
    cache.encoded(entries[1])
    assert cache.misses == misses + 1
    with pytest.raises(InvalidArgumentError, match="max_entries 0"):
        EncodedEntries(max_entries=0)
