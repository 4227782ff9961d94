"""Registration entries encoded once, kept for the responses assembled from them.

Entries change rarely and agents ask for them constantly, so the Entry API encodes each entry
once per output mask (:func:`pyspire.proto.entries.encode_entry`) and keeps the bytes in
:class:`EncodedEntries`, a bounded LRU cache. Responses are then assembled from the cached
encodings by :mod:`pyspire.proto.entries` (on the wire a repeated message field is the
concatenation of its framed elements).

Stale bytes are never served: a cached encoding is used only when the cached entry is the very
entry being encoded, or equal to it (a re-read entry after a reload), so an entry that changed
without a new revision (deleted and re-created under the same id, say) is encoded again.
"""

from __future__ import annotations

__all__ = ["MAX_RESPONSE_BYTES", "EncodedEntries"]

from collections.abc import Iterable
from dataclasses import dataclass

from pyspire.proto.entries import ENTRY_FIELDS, encode_entry, encode_entry_revision
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""The largest response the entry APIs send: gRPC's default receive limit (4 MiB)."""


@dataclass(slots=True)
class _Slot:
    """One entry's encodings. Agents ask for every field (no output mask), so that encoding
    has a field of its own and a dictionary is made only for an entry someone asked for with
    another mask: a server keeps a slot for each of its agents' entries, and an empty
    dictionary would cost more than the encoding."""

    entry: RegistrationEntry
    full: bytes | None = None
    by_mask: dict[frozenset[str], bytes] | None = None
    revision: bytes | None = None


class EncodedEntries:
    """Encoded entries by (entry, output mask), the least recently used dropped past
    ``max_entries`` entry ids.

    Answers are always the encoding of the entry passed in: a cached encoding is reused only for
    the same entry (identical or equal), never for another revision of it. Not thread-safe; it
    lives on the server's event loop, and no method awaits.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        if max_entries < 1:
            raise InvalidArgumentError(f"max_entries {max_entries} must be at least 1")
        self._max_entries = max_entries
        # Insertion ordered: the least recently used first (a use moves an id to the end).
        self._slots: dict[str, _Slot] = {}
        self.hits = 0
        """Encodings served from the cache (for metrics and tests)."""
        self.misses = 0
        """Encodings computed."""

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def max_entries(self) -> int:
        """How many entry ids the cache holds at most."""
        return self._max_entries

    def _slot(self, entry: RegistrationEntry) -> _Slot:
        slots = self._slots
        slot = slots.pop(entry.id, None)
        if slot is None or not (slot.entry is entry or slot.entry == entry):
            slot = _Slot(entry)
        else:
            slot.entry = entry
        slots[entry.id] = slot
        if len(slots) > self._max_entries:
            del slots[next(iter(slots))]
        return slot

    def encoded(self, entry: RegistrationEntry, fields: frozenset[str] = ENTRY_FIELDS) -> bytes:
        """The encoding of ``entry`` as a ``spire.api.types.Entry`` with ``fields`` selected."""
        slot = self._slot(entry)
        if fields is ENTRY_FIELDS or fields == ENTRY_FIELDS:
            data = slot.full
            if data is None:
                self.misses += 1
                data = slot.full = encode_entry(entry, fields)
            else:
                self.hits += 1
            return data
        by_mask = slot.by_mask
        if by_mask is None:
            by_mask = slot.by_mask = {}
        data = by_mask.get(fields)
        if data is None:
            self.misses += 1
            data = by_mask[fields] = encode_entry(entry, fields)
        else:
            self.hits += 1
        return data

    def encoded_many(
        self, entries: Iterable[RegistrationEntry], fields: frozenset[str] = ENTRY_FIELDS
    ) -> list[bytes]:
        """:meth:`encoded` for each of ``entries``, in order."""
        encoded = self.encoded
        return [encoded(entry, fields) for entry in entries]

    def revision(self, entry: RegistrationEntry) -> bytes:
        """The encoding of the ``EntryRevision`` of ``entry``."""
        slot = self._slot(entry)
        data = slot.revision
        if data is None:
            data = slot.revision = encode_entry_revision(entry)
        return data

    def discard(self, entry_ids: Iterable[str]) -> None:
        """Forget the encodings of these entries (deleted ones, to free the memory early)."""
        for entry_id in entry_ids:
            self._slots.pop(entry_id, None)

    def clear(self) -> None:
        """Forget everything."""
        self._slots.clear()
