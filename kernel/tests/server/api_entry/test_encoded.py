"""The cache of encoded entries: reused bytes are the entry's own encoding (byte for byte what
betterproto writes for it), and a changed entry is encoded again."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from datetime import UTC, datetime

import pytest

from pyspire.proto.convert import entry_to_proto
from pyspire.proto.entries import get_authorized_entries_response
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.server.api.encoded import EncodedEntries
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


def test_cached_responses_are_betterprotos_bytes() -> None:
    entries = [
        make_entry(number, selectors=number % 5, value_size=40 * number) for number in range(25)
    ]
    cache = EncodedEntries()
    assembled = get_authorized_entries_response(cache.encoded_many(entries))
    plain = entry_pb.GetAuthorizedEntriesResponse(entries=[entry_to_proto(e) for e in entries])
    assert assembled == bytes(plain)
    assert cache.encoded_many(entries) == cache.encoded_many(entries)
    assert cache.hits == 50


def test_revisions_are_betterprotos_bytes() -> None:
    entry = make_entry(7)
    expected = entry_pb.EntryRevision(
        id=entry.id, revision_number=7, created_at=int(CREATED.timestamp())
    )
    assert EncodedEntries().revision(entry) == bytes(expected)


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
        .parse(get_authorized_entries_response([data]))
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


HELD_ENTRIES = 5000
OVERHEAD_PER_ENTRY = 200
"""Bytes the cache may hold per entry beyond its encoding's payload (an agent's entries are
all in it): 118 with the full encoding in a field of the slot, 379 when every slot carried a
dictionary of masks and the ids an ordered dictionary's links."""


def test_the_cache_holds_little_beside_each_encoding() -> None:
    entries = [make_entry(number) for number in range(HELD_ENTRIES)]
    cache = EncodedEntries()
    gc.collect()
    tracemalloc.start()
    try:
        for entry in entries:
            cache.encoded(entry)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    payload = sum(len(cache.encoded(entry)) for entry in entries)
    overhead = (held - payload) / HELD_ENTRIES
    assert overhead <= OVERHEAD_PER_ENTRY, f"{overhead:.0f} bytes per entry beside the encoding"


def test_other_masks_are_kept_beside_the_full_encoding() -> None:
    cache = EncodedEntries()
    entry = make_entry(1)
    full = cache.encoded(entry)
    narrow = cache.encoded(entry, frozenset({"spiffe_id"}))
    assert narrow != full
    assert cache.encoded(entry) is full
    assert cache.encoded(entry, frozenset({"spiffe_id"})) is narrow
    assert (cache.hits, cache.misses) == (2, 2)
