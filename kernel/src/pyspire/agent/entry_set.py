"""The agent's authorized entries between syncs, so that a sync decodes only what changed.

SPIRE's SyncAuthorizedEntries answers in one of two ways (:mod:`pyspire.server.api.entry`):

- **in full** (at most a page of entries): every entry's encoding. :meth:`HeldEntries.replace`
  reuses each entry whose encoding is byte for byte the one it holds and decodes only the
  others, so a steady-state sync of unchanged entries decodes nothing;
- **by revisions** (more than a page): ``{id, revision_number, created_at}`` of each entry.
  :meth:`HeldEntries.wanted` names the entries missing here or stale (another revision, or
  another creation time: an entry deleted and created again under the same id), sorted, as
  SPIRE's agent asks for them; :meth:`HeldEntries.apply` then keeps the listed entries, the
  fetched ones replacing what was held, and drops the rest.

Both keep the server's order. Decoding goes through
:func:`~pyspire.proto.entry_reader.read_entry`, which validates IDs and selectors; an entry
that does not decode raises :class:`~pyspire_sdk.errors.InvalidArgumentError` naming it, and
nothing held changes. Sans-IO: no sockets, no clock.
"""

from __future__ import annotations

__all__ = ["HeldEntries"]

from collections.abc import Iterable, Mapping, Sequence

from pyspire.proto.entry_reader import read_entry
from pyspire.proto.gen.codec.spire_api_server_entry_v1 import EntryRevision
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry


def _created_seconds(entry: RegistrationEntry) -> int:
    created = entry.created_at
    return int(created.timestamp()) if created is not None else 0


def _decode(encoding: bytes, field: str) -> RegistrationEntry:
    return read_entry(encoding, field)


def is_stale(entry: RegistrationEntry, revision: EntryRevision) -> bool:
    """Whether ``entry`` is not the one ``revision`` describes (SPIRE's rule: another revision
    number, or, when the server sends one, another creation time)."""
    if entry.revision_number != revision.revision_number:
        return True
    return bool(revision.created_at) and _created_seconds(entry) != revision.created_at


class HeldEntries:
    """The entries the server last authorized, with the encodings they arrived in."""

    def __init__(self) -> None:
        self._by_id: dict[str, RegistrationEntry] = {}
        self._by_encoding: dict[bytes, RegistrationEntry] = {}
        self._fetched: dict[bytes, RegistrationEntry] = {}
        self.decoded = 0
        """Entries decoded so far (for tests and metrics: unchanged entries are not)."""

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def entries(self) -> list[RegistrationEntry]:
        """The held entries, in the server's order."""
        return list(self._by_id.values())

    def get(self, entry_id: str) -> RegistrationEntry | None:
        return self._by_id.get(entry_id)

    def clear(self) -> None:
        """Forget everything (the next sync decodes every entry)."""
        self._by_id = {}
        self._by_encoding = {}
        self._fetched = {}

    def replace(self, encodings: Sequence[bytes]) -> list[RegistrationEntry]:
        """Hold exactly the entries of a full answer (their encodings, in order); returns them.

        An entry whose encoding is held is reused without decoding."""
        held = self._by_encoding
        by_encoding: dict[bytes, RegistrationEntry] = {}
        by_id: dict[str, RegistrationEntry] = {}
        decoded = 0
        for index, encoding in enumerate(encodings):
            entry = held.get(encoding)
            if entry is None:
                entry = _decode(encoding, f"entries[{index}]")
                decoded += 1
            by_encoding[encoding] = entry
            by_id[entry.id] = entry
        self._by_encoding = by_encoding
        self._by_id = by_id
        self.decoded += decoded
        return list(by_id.values())

    def wanted(self, revisions: Iterable[EntryRevision]) -> list[str]:
        """The ids of listed entries missing here or stale, sorted (what to ask for in full)."""
        held = self._by_id
        return sorted(
            {
                revision.id
                for revision in revisions
                if (entry := held.get(revision.id)) is None or is_stale(entry, revision)
            }
        )

    def decode_fetched(self, encodings: Sequence[bytes]) -> dict[str, RegistrationEntry]:
        """Entries the server sent in full after its revisions, by id (to pass to
        :meth:`apply`)."""
        fetched: dict[str, RegistrationEntry] = {}
        by_encoding: dict[bytes, RegistrationEntry] = {}
        for index, encoding in enumerate(encodings):
            entry = _decode(encoding, f"entries[{index}]")
            fetched[entry.id] = entry
            by_encoding[encoding] = entry
        self.decoded += len(encodings)
        self._fetched = by_encoding
        return fetched

    def apply(
        self, revisions: Sequence[EntryRevision], fetched: Mapping[str, RegistrationEntry]
    ) -> tuple[list[RegistrationEntry], list[str]]:
        """Hold the entries ``revisions`` list: a fetched one if it matches its revision, else
        the held one if that does. Returns the entries, in the server's order, and the ids
        listed that neither provides (the server did not send them: they are left out)."""
        held = self._by_id
        by_id: dict[str, RegistrationEntry] = {}
        missing: list[str] = []
        for revision in revisions:
            if not revision.id:
                raise InvalidArgumentError("invalid entry_revisions: an entry id is empty")
            entry = fetched.get(revision.id)
            if entry is None or is_stale(entry, revision):
                entry = held.get(revision.id)
            if entry is None or is_stale(entry, revision):
                missing.append(revision.id)
                continue
            by_id[revision.id] = entry
        self._by_encoding = {
            encoding: entry
            for encodings in (self._by_encoding, self._fetched)
            for encoding, entry in encodings.items()
            if by_id.get(entry.id) is entry
        }
        self._fetched = {}
        self._by_id = by_id
        return list(by_id.values()), missing
