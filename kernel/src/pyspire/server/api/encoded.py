"""Registration entries encoded once, and responses assembled from the cached bytes.

betterproto needs about 150 µs to encode one ``spire.api.types.Entry``; an agent sync of 10,000
entries would spend seconds of the event loop in the encoder on every call. Entries change rarely,
so this module encodes each entry once per output mask and keeps the bytes (:class:`EncodedEntries`,
a bounded LRU cache). A response is then assembled by concatenation: on the wire a repeated
message field is the concatenation of its elements, each a tag, a varint length and the element's
own encoding. The result is byte for byte what betterproto would produce for the same message
(the tests compare both).

grpclib encodes a reply by calling ``SerializeToString()`` on it after checking it is an instance
of the method's reply type. :class:`EncodedGetAuthorizedEntriesResponse` and its siblings are
such instances whose serialization returns the prebuilt bytes, so the generated service code and
any grpclib server send them unchanged. Their dataclass fields are left empty: a caller inside
the process reads the content with :meth:`PrebuiltMessage.decode`.

Stale bytes are never served: a cached encoding is used only when the cached entry is the very
entry being encoded, or equal to it (a re-read entry after a reload), so an entry that changed
without a new revision (deleted and re-created under the same id, say) is encoded again.
"""

from __future__ import annotations

__all__ = [
    "ALL_ENTRY_FIELDS",
    "MAX_RESPONSE_BYTES",
    "EncodedEntries",
    "EncodedGetAuthorizedEntriesResponse",
    "EncodedListEntriesResponse",
    "EncodedSyncAuthorizedEntriesResponse",
    "PrebuiltMessage",
    "encode_entry_revision",
    "encode_varint",
    "entry_to_masked_proto",
    "framed_size",
    "get_authorized_entries_response",
    "list_entries_response",
    "mask_fields",
    "sync_authorized_entries_response",
]

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import betterproto

from pyspire.proto.convert import selector_to_proto, spiffe_id_to_proto, to_timestamp
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.proto.prebuilt import PrebuiltMessage, field_metadata
from pyspire.proto.wire import encode_varint, length_delimited
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry, X509Svid

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""The largest response the entry APIs send: gRPC's default receive limit (4 MiB)."""

ALL_ENTRY_FIELDS: frozenset[str] = frozenset(
    {
        "spiffe_id",
        "parent_id",
        "selectors",
        "x509_svid_ttl",
        "federates_with",
        "admin",
        "downstream",
        "expires_at",
        "dns_names",
        "revision_number",
        "store_svid",
        "jwt_svid_ttl",
        "hint",
        "created_at",
    }
)
"""The ``Entry`` fields an output mask can select (``id`` is always sent). The mask's
``additional_attributes`` has no stored counterpart here and selects nothing."""

_FIELD_VALUES: dict[str, Callable[[RegistrationEntry], Any]] = {
    "spiffe_id": lambda entry: spiffe_id_to_proto(entry.spiffe_id),
    "parent_id": lambda entry: spiffe_id_to_proto(entry.parent_id),
    "selectors": lambda entry: [selector_to_proto(s) for s in entry.selectors],
    "x509_svid_ttl": lambda entry: entry.x509_svid_ttl,
    "federates_with": lambda entry: [domain.name for domain in entry.federates_with],
    "admin": lambda entry: entry.admin,
    "downstream": lambda entry: entry.downstream,
    "expires_at": lambda entry: to_timestamp(entry.expires_at),
    "dns_names": lambda entry: list(entry.dns_names),
    "revision_number": lambda entry: entry.revision_number,
    "store_svid": lambda entry: entry.store_svid,
    "jwt_svid_ttl": lambda entry: entry.jwt_svid_ttl,
    "hint": lambda entry: entry.hint,
    "created_at": lambda entry: to_timestamp(entry.created_at),
}

# Tags of the length-delimited fields assembled here: (field number << 3) | wire type 2.
_TAG_FIELD_1 = b"\x0a"
_TAG_FIELD_2 = b"\x12"
_MORE_TRUE = b"\x18\x01"  # SyncAuthorizedEntriesResponse.more (field 3, varint) = true
_TAG_REVISION_NUMBER = b"\x10"  # EntryRevision.revision_number (field 2, varint)
_TAG_CREATED_AT = b"\x18"  # EntryRevision.created_at (field 3, varint)


def framed_size(payload_size: int) -> int:
    """Bytes one element of a repeated message field (numbers 1 to 15) takes on the wire: tag,
    varint length and payload."""
    if payload_size < 0x80:
        return 2 + payload_size
    return 1 + len(encode_varint(payload_size)) + payload_size


def _frame(tag: bytes, items: Iterable[bytes]) -> list[bytes]:
    parts: list[bytes] = []
    append = parts.append
    for item in items:
        append(tag)
        size = len(item)
        append(bytes((size,)) if size < 0x80 else encode_varint(size))
        append(item)
    return parts


def mask_fields(mask: pb.EntryMask | None) -> frozenset[str]:
    """The entry fields an output mask selects: all of them when the mask was not sent.

    A mask that was sent selects exactly the fields it sets to true (``id`` is always kept), as
    in SPIRE; so "absent" and "everything true" give the same answer and share cached bytes.
    """
    if mask is None or not betterproto.serialized_on_wire(mask):
        return ALL_ENTRY_FIELDS
    return frozenset(name for name in ALL_ENTRY_FIELDS if getattr(mask, name))


def entry_to_masked_proto(entry: RegistrationEntry, fields: frozenset[str]) -> pb.Entry:
    """The wire form of ``entry`` with only ``fields`` (and ``id``) set."""
    unknown = fields - ALL_ENTRY_FIELDS
    if unknown:
        raise InvalidArgumentError(
            f"output mask names unknown fields: {', '.join(sorted(unknown))}"
        )
    values = {name: _FIELD_VALUES[name](entry) for name in fields}
    return pb.Entry(id=entry.id, **values)


def encode_entry_revision(entry: RegistrationEntry) -> bytes:
    """The encoding of ``EntryRevision{id, revision_number, created_at}`` for ``entry``, written
    directly (it is three scalars; betterproto would cost as much as for a whole entry)."""
    entry_id = entry.id.encode()
    parts = [_TAG_FIELD_1, encode_varint(len(entry_id)), entry_id]
    if entry.revision_number:
        parts += [_TAG_REVISION_NUMBER, encode_varint(entry.revision_number)]
    created_at = to_timestamp(entry.created_at)
    if created_at:
        parts += [_TAG_CREATED_AT, encode_varint(created_at)]
    return b"".join(parts)


@dataclass(slots=True)
class _Slot:
    entry: RegistrationEntry
    by_mask: dict[frozenset[str], bytes] = field(default_factory=dict)
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
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
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
        slot = slots.get(entry.id)
        if slot is not None:
            cached = slot.entry
            if cached is entry or cached == entry:
                slot.entry = entry
                slots.move_to_end(entry.id)
                return slot
        slot = slots[entry.id] = _Slot(entry)
        slots.move_to_end(entry.id)
        if len(slots) > self._max_entries:
            slots.popitem(last=False)
        return slot

    def encoded(self, entry: RegistrationEntry, fields: frozenset[str] = ALL_ENTRY_FIELDS) -> bytes:
        """The encoding of ``entry`` as a ``spire.api.types.Entry`` with ``fields`` selected."""
        slot = self._slot(entry)
        data = slot.by_mask.get(fields)
        if data is None:
            self.misses += 1
            data = bytes(entry_to_masked_proto(entry, fields))
            slot.by_mask[fields] = data
        else:
            self.hits += 1
        return data

    def encoded_many(
        self, entries: Iterable[RegistrationEntry], fields: frozenset[str] = ALL_ENTRY_FIELDS
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


class EncodedGetAuthorizedEntriesResponse(PrebuiltMessage, entry_pb.GetAuthorizedEntriesResponse):
    """A prebuilt ``GetAuthorizedEntriesResponse``."""

    _plain = entry_pb.GetAuthorizedEntriesResponse
    # The generated class's field metadata, reused: the subclass adds no fields, and betterproto
    # could not resolve the generated module's type hints from this module.
    _betterproto_meta = field_metadata(entry_pb.GetAuthorizedEntriesResponse)

    def decode(self) -> entry_pb.GetAuthorizedEntriesResponse:
        """The response as an ordinary message."""
        return entry_pb.GetAuthorizedEntriesResponse().parse(self.__bytes__())


class EncodedSyncAuthorizedEntriesResponse(PrebuiltMessage, entry_pb.SyncAuthorizedEntriesResponse):
    """A prebuilt ``SyncAuthorizedEntriesResponse``."""

    _plain = entry_pb.SyncAuthorizedEntriesResponse
    _betterproto_meta = field_metadata(entry_pb.SyncAuthorizedEntriesResponse)

    def decode(self) -> entry_pb.SyncAuthorizedEntriesResponse:
        """The response as an ordinary message."""
        return entry_pb.SyncAuthorizedEntriesResponse().parse(self.__bytes__())


class EncodedListEntriesResponse(PrebuiltMessage, entry_pb.ListEntriesResponse):
    """A prebuilt ``ListEntriesResponse``."""

    _plain = entry_pb.ListEntriesResponse
    _betterproto_meta = field_metadata(entry_pb.ListEntriesResponse)

    def decode(self) -> entry_pb.ListEntriesResponse:
        """The response as an ordinary message."""
        return entry_pb.ListEntriesResponse().parse(self.__bytes__())


def get_authorized_entries_response(
    entries: Sequence[bytes],
) -> EncodedGetAuthorizedEntriesResponse:
    """``GetAuthorizedEntriesResponse{entries}`` from encoded entries (field 1)."""
    return EncodedGetAuthorizedEntriesResponse(b"".join(_frame(_TAG_FIELD_1, entries)))


def sync_authorized_entries_response(
    *, revisions: Sequence[bytes] = (), entries: Sequence[bytes] = (), more: bool = False
) -> EncodedSyncAuthorizedEntriesResponse:
    """``SyncAuthorizedEntriesResponse{entry_revisions, entries, more}`` from encoded parts."""
    parts = _frame(_TAG_FIELD_1, revisions)
    parts += _frame(_TAG_FIELD_2, entries)
    if more:
        parts.append(_MORE_TRUE)
    return EncodedSyncAuthorizedEntriesResponse(b"".join(parts))


def list_entries_response(
    entries: Sequence[bytes], next_page_token: str = ""
) -> EncodedListEntriesResponse:
    """``ListEntriesResponse{entries, next_page_token}`` from encoded entries."""
    parts = _frame(_TAG_FIELD_1, entries)
    if next_page_token:
        parts += _frame(_TAG_FIELD_2, [next_page_token.encode()])
    return EncodedListEntriesResponse(b"".join(parts))


# -- BatchNewX509SVID ----------------------------------------------------------------------
# Signing is the server's hot path; building betterproto objects for every result costs more
# than the signature itself, so the response is encoded directly. A test checks the bytes equal
# betterproto's encoding of the same response.


def encode_x509_svid(svid: X509Svid) -> bytes:
    """The wire form of ``spire.api.types.X509SVID`` for ``svid``."""
    spiffe_id = length_delimited(1, svid.spiffe_id.trust_domain.name.encode())
    if svid.spiffe_id.path:
        spiffe_id += length_delimited(2, svid.spiffe_id.path.encode())
    parts = [length_delimited(1, der) for der in svid.cert_chain]
    parts.append(length_delimited(2, spiffe_id))
    expires_at = to_timestamp(svid.expires_at)
    if expires_at:
        parts.append(b"\x18" + encode_varint(expires_at))
    if svid.hint:
        parts.append(length_delimited(4, svid.hint.encode()))
    return b"".join(parts)


def encode_status(code: int, message: str) -> bytes:
    """The wire form of ``spire.api.types.Status``."""
    return (b"\x08" + encode_varint(code) if code else b"") + (
        length_delimited(2, message.encode()) if message else b""
    )


def batch_new_x509_svid_response(
    results: Sequence[tuple[int, str, X509Svid | None]],
) -> EncodedBatchNewX509SvidResponse:
    """A ``BatchNewX509SVIDResponse`` from (status code, status message, SVID or None) per
    request item, in request order."""
    framed = []
    for code, message, svid in results:
        result = length_delimited(1, encode_status(code, message))
        if svid is not None:
            result += length_delimited(2, encode_x509_svid(svid))
        framed.append(length_delimited(1, result))
    return EncodedBatchNewX509SvidResponse(b"".join(framed))


class EncodedBatchNewX509SvidResponse(PrebuiltMessage, svid_pb.BatchNewX509SvidResponse):
    """A prebuilt ``BatchNewX509SVIDResponse``."""

    _plain = svid_pb.BatchNewX509SvidResponse
    _betterproto_meta = field_metadata(svid_pb.BatchNewX509SvidResponse)

    def decode(self) -> svid_pb.BatchNewX509SvidResponse:
        """The response as an ordinary message."""
        message: svid_pb.BatchNewX509SvidResponse = super().decode()
        return message
