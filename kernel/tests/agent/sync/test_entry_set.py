"""The entries an agent keeps between syncs: what is decoded, what is asked for, what is kept."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from pyspire.agent.entry_set import HeldEntries
from pyspire.proto.entries import encode_entry, read_sync_page, sync_authorized_entries_response
from pyspire.proto.errors import DecodeError
from pyspire.proto.gen.codec.spire_api_server_entry_v1 import EntryRevision
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId

AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/x/node")
CREATED = datetime(2030, 1, 1, tzinfo=UTC)


def entry(number: int, revision: int = 0, created: datetime = CREATED) -> RegistrationEntry:
    return RegistrationEntry(
        id=f"entry-{number}",
        spiffe_id=SpiffeId.parse(f"spiffe://example.org/w{number}"),
        parent_id=AGENT,
        selectors=(Selector("unix", f"uid:{number}"),),
        revision_number=revision,
        created_at=created,
    )


def revision(item: RegistrationEntry) -> EntryRevision:
    return EntryRevision(item.id, item.revision_number, int(item.created_at.timestamp()))


def test_a_full_answer_decodes_only_new_encodings() -> None:
    held = HeldEntries()
    entries = [entry(n) for n in range(3)]
    first = held.replace([encode_entry(e) for e in entries])
    assert first == entries
    assert held.decoded == 3
    changed = dataclasses.replace(entries[1], revision_number=1, hint="new")
    again = held.replace([encode_entry(entries[0]), encode_entry(changed)])
    assert again == [entries[0], changed]
    assert again[0] is first[0]
    assert held.decoded == 4
    assert held.get(entries[2].id) is None


def test_a_malformed_entry_changes_nothing() -> None:
    held = HeldEntries()
    held.replace([encode_entry(entry(1))])
    with pytest.raises(InvalidArgumentError):
        held.replace([encode_entry(entry(2)), b"\x0a\x05ab"])
    assert [e.id for e in held.entries] == ["entry-1"]


def test_revisions_name_missing_and_stale_entries_sorted() -> None:
    held = HeldEntries()
    kept = [entry(n) for n in range(4)]
    first = held.replace([encode_entry(e) for e in kept])
    revisions = [
        revision(kept[0]),
        revision(dataclasses.replace(kept[3], revision_number=2)),
        revision(dataclasses.replace(kept[1], created_at=datetime(2031, 1, 1, tzinfo=UTC))),
        EntryRevision("entry-9", 0, 0),
    ]
    assert held.wanted(revisions) == ["entry-1", "entry-3", "entry-9"]
    # A revision without a creation time compares revision numbers only (older servers).
    assert held.wanted([EntryRevision(kept[2].id, 0, 0)]) == []

    fetched = held.decode_fetched(
        [
            encode_entry(dataclasses.replace(kept[3], revision_number=2)),
            encode_entry(dataclasses.replace(kept[1], created_at=datetime(2031, 1, 1, tzinfo=UTC))),
        ]
    )
    entries, missing = held.apply(revisions, fetched)
    assert [e.id for e in entries] == ["entry-0", "entry-3", "entry-1"]
    assert entries[0] is first[0]
    assert missing == ["entry-9"]
    assert len(held) == 3
    # A later full answer reuses what was fetched (by its encoding); the entry dropped above is
    # decoded again.
    again = held.replace(
        [
            encode_entry(kept[2]),
            encode_entry(dataclasses.replace(kept[3], revision_number=2)),
        ]
    )
    assert held.decoded == 4 + 2 + 1
    assert again[1] is entries[1]


def test_read_sync_page_splits_revisions_entries_and_more() -> None:
    items = [entry(n) for n in range(2)]
    encodings = [encode_entry(e) for e in items]
    page = read_sync_page(sync_authorized_entries_response(entries=encodings, more=True))
    assert page.entries == encodings
    assert page.revisions == []
    assert page.more
    revisions = read_sync_page(
        sync_authorized_entries_response(revisions=[bytes(revision(items[0]).SerializeToString())])
    )
    assert revisions.revisions == [revision(items[0])]
    assert not revisions.more
    with pytest.raises(DecodeError):
        read_sync_page(b"\x12\x09short")
