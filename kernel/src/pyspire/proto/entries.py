"""Registration entries on the wire: ``spire.api.types.Entry`` and the Entry API's responses,
written from SDK records by the generated codecs.

Encoding goes straight from a :class:`~pyspire_sdk.model.RegistrationEntry` to bytes (no
intermediate message objects), so a cold entry costs a few microseconds; responses are then
assembled from encoded entries (a repeated message field is the concatenation of its framed
elements), which is how cached encodings are reused. Reading goes through the generated
decoders and :func:`pyspire.proto.convert.entry_from_proto`, which validates IDs and selectors.
"""

from __future__ import annotations

__all__ = [
    "ENTRY_FIELDS",
    "SyncPage",
    "decode_entries",
    "encode_entry",
    "encode_entry_revision",
    "framed_entry_size",
    "get_authorized_entries_response",
    "list_entries_response",
    "mask_fields",
    "read_sync_page",
    "sync_authorized_entries_response",
]

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyspire.proto.convert import entry_from_proto
from pyspire.proto.errors import DecodeError
from pyspire.proto.gen.codec.spire_api_server_entry_v1 import (
    FIELD_NUMBERS as ENTRY_API_FIELD_NUMBERS,
)
from pyspire.proto.gen.codec.spire_api_server_entry_v1 import (
    EntryRevision,
    decode_EntryRevision,
    write_EntryRevision,
    write_GetAuthorizedEntriesResponse,
    write_ListEntriesResponse,
    write_SyncAuthorizedEntriesResponse,
)
from pyspire.proto.gen.codec.spire_api_types import (
    Entry,
    EntryMask,
    write_Entry,
    write_Selector,
    write_SPIFFEID,
)
from pyspire.proto.runtime import field_size, read_varint, skip_field, truncated
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import ENTRY_FIELDS as MODEL_ENTRY_FIELDS
from pyspire_sdk.model import RegistrationEntry

ENTRY_FIELDS: frozenset[str] = frozenset(MODEL_ENTRY_FIELDS) - {"id"}
"""The ``Entry`` fields an output mask can select (``id`` is always sent). The mask's
``additional_attributes`` has no stored counterpart and selects nothing."""

_LIST_ENTRIES_FIELD = ENTRY_API_FIELD_NUMBERS["ListEntriesResponse"]["entries"]

_SYNC_FIELDS = ENTRY_API_FIELD_NUMBERS["SyncAuthorizedEntriesResponse"]
_SYNC_REVISION_TAG = _SYNC_FIELDS["entry_revisions"] << 3 | 2
_SYNC_ENTRY_TAG = _SYNC_FIELDS["entries"] << 3 | 2
_SYNC_MORE_TAG = _SYNC_FIELDS["more"] << 3
_SYNC_RESPONSE = "spire.api.server.entry.v1.SyncAuthorizedEntriesResponse"


def _seconds(moment: datetime | None) -> int:
    return int(moment.timestamp()) if moment is not None else 0


def encode_entry(entry: RegistrationEntry, fields: frozenset[str] = ENTRY_FIELDS) -> bytes:
    """The encoding of ``entry`` as a ``spire.api.types.Entry`` with only ``fields`` (and
    ``id``) set; byte for byte what Google's runtime writes for the same message."""
    if fields is ENTRY_FIELDS or fields == ENTRY_FIELDS:
        spiffe_id = entry.spiffe_id
        parent_id = entry.parent_id
        return write_Entry(
            id=entry.id,
            spiffe_id=write_SPIFFEID(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path),
            parent_id=write_SPIFFEID(trust_domain=parent_id.trust_domain.name, path=parent_id.path),
            selectors=[write_Selector(type=s.type, value=s.value) for s in entry.selectors],
            x509_svid_ttl=entry.x509_svid_ttl,
            federates_with=[domain.name for domain in entry.federates_with],
            admin=entry.admin,
            downstream=entry.downstream,
            expires_at=_seconds(entry.expires_at),
            dns_names=entry.dns_names,
            revision_number=entry.revision_number,
            store_svid=entry.store_svid,
            jwt_svid_ttl=entry.jwt_svid_ttl,
            hint=entry.hint,
            created_at=_seconds(entry.created_at),
        )
    unknown = fields - ENTRY_FIELDS
    if unknown:
        raise InvalidArgumentError(
            f"output mask names unknown fields: {', '.join(sorted(unknown))}"
        )
    return write_Entry(id=entry.id, **{name: _MASKED[name](entry) for name in fields})


_MASKED: dict[str, Callable[[RegistrationEntry], Any]] = {
    "spiffe_id": lambda entry: write_SPIFFEID(
        trust_domain=entry.spiffe_id.trust_domain.name, path=entry.spiffe_id.path
    ),
    "parent_id": lambda entry: write_SPIFFEID(
        trust_domain=entry.parent_id.trust_domain.name, path=entry.parent_id.path
    ),
    "selectors": lambda entry: [
        write_Selector(type=s.type, value=s.value) for s in entry.selectors
    ],
    "x509_svid_ttl": lambda entry: entry.x509_svid_ttl,
    "federates_with": lambda entry: [domain.name for domain in entry.federates_with],
    "admin": lambda entry: entry.admin,
    "downstream": lambda entry: entry.downstream,
    "expires_at": lambda entry: _seconds(entry.expires_at),
    "dns_names": lambda entry: entry.dns_names,
    "revision_number": lambda entry: entry.revision_number,
    "store_svid": lambda entry: entry.store_svid,
    "jwt_svid_ttl": lambda entry: entry.jwt_svid_ttl,
    "hint": lambda entry: entry.hint,
    "created_at": lambda entry: _seconds(entry.created_at),
}


def mask_fields(mask: EntryMask | None) -> frozenset[str]:
    """The entry fields an output mask selects: all of them when the mask was not sent.

    A mask that was sent selects exactly the fields it sets to true (``id`` is always kept), as
    in SPIRE; so "absent" and "everything true" give the same answer.
    """
    if mask is None:
        return ENTRY_FIELDS
    return frozenset(name for name in ENTRY_FIELDS if getattr(mask, name))


def encode_entry_revision(entry: RegistrationEntry) -> bytes:
    """The encoding of ``EntryRevision{id, revision_number, created_at}`` for ``entry``."""
    return write_EntryRevision(
        id=entry.id,
        revision_number=entry.revision_number,
        created_at=_seconds(entry.created_at),
    )


def framed_entry_size(payload_size: int) -> int:
    """Bytes one encoded entry of ``payload_size`` bytes adds to an Entry API response."""
    return field_size(_LIST_ENTRIES_FIELD, payload_size)


def get_authorized_entries_response(entries: Sequence[bytes]) -> bytes:
    """``GetAuthorizedEntriesResponse{entries}`` from encoded entries."""
    return write_GetAuthorizedEntriesResponse(entries=entries)


def sync_authorized_entries_response(
    *, revisions: Sequence[bytes] = (), entries: Sequence[bytes] = (), more: bool = False
) -> bytes:
    """``SyncAuthorizedEntriesResponse{entry_revisions, entries, more}`` from encoded parts."""
    return write_SyncAuthorizedEntriesResponse(
        entry_revisions=revisions, entries=entries, more=more
    )


def list_entries_response(entries: Sequence[bytes], next_page_token: str = "") -> bytes:
    """``ListEntriesResponse{entries, next_page_token}`` from encoded entries."""
    return write_ListEntriesResponse(entries=entries, next_page_token=next_page_token)


def decode_entries(messages: Sequence[Entry], field: str = "entries") -> list[RegistrationEntry]:
    """SDK entries from decoded wire entries, validated; errors name ``field[index]``."""
    return [
        entry_from_proto(message, f"{field}[{index}]") for index, message in enumerate(messages)
    ]


@dataclass(frozen=True, slots=True)
class SyncPage:
    """One ``SyncAuthorizedEntriesResponse`` as the agent reads it: revisions decoded (they are
    small and always all needed), entries left as their encodings (``spire.api.types.Entry``
    bytes), so that a reader holding an entry with the same encoding need not decode it again.
    """

    revisions: list[EntryRevision]
    entries: list[bytes]
    more: bool


def read_sync_page(data: bytes) -> SyncPage:
    """Split an encoded ``SyncAuthorizedEntriesResponse`` into its parts (see :class:`SyncPage`).

    Unknown fields are skipped; the entries' own bytes are checked only when they are decoded.
    Raises :class:`~pyspire.proto.errors.DecodeError` for bytes that are not such a message.
    """
    revisions: list[EntryRevision] = []
    entries: list[bytes] = []
    more = False
    position, end = 0, len(data)
    while position < end:
        tag, position = read_varint(data, position, end, _SYNC_RESPONSE)
        if tag in (_SYNC_ENTRY_TAG, _SYNC_REVISION_TAG):
            size, position = read_varint(data, position, end, _SYNC_RESPONSE)
            stop = position + size
            if stop > end:
                raise truncated(_SYNC_RESPONSE)
            if tag == _SYNC_ENTRY_TAG:
                entries.append(data[position:stop])
            else:
                revisions.append(decode_EntryRevision(data[position:stop]))
            position = stop
        elif tag == _SYNC_MORE_TAG:
            value, position = read_varint(data, position, end, f"{_SYNC_RESPONSE}.more")
            more = value != 0
        else:
            position = skip_field(data, position, end, tag, _SYNC_RESPONSE, 0)
    if position != end:
        raise DecodeError(_SYNC_RESPONSE, "truncated")
    return SyncPage(revisions, entries, more)
