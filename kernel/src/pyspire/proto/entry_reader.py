"""``spire.api.types.Entry`` bytes read straight into a :class:`RegistrationEntry`.

An agent reads every entry it is authorized for when it starts (a thousand or more), so this
reader skips the intermediate wire messages: it walks the entry's fields once, and its SPIFFE
IDs, selectors and timestamps, which repeat across entries (one parent, shared selectors, one
creation second), are converted once per distinct encoding and then looked up.

It reads the encoding Google's runtime (and :func:`pyspire.proto.entries.encode_entry`) writes.
Anything else (a field it does not know, a message field sent twice, which protobuf merges, a
negative or oversized number, a value that does not validate) is handed to the general path,
:func:`~pyspire.proto.gen.codec.spire_api_types.decode_Entry` and
:func:`~pyspire.proto.convert.entry_from_proto`, which gives the same answer or the error naming
the field; so the two paths agree on every input (a test holds them to it).
"""

from __future__ import annotations

__all__ = ["read_entry"]

import functools
from datetime import datetime

from pyspire.proto.convert import (
    entry_from_proto,
    from_timestamp,
    selectors_from_proto,
    spiffe_id_from_proto,
    trust_domains_from_proto,
)
from pyspire.proto.gen.codec.spire_api_types import (
    FIELD_NUMBERS,
    decode_Entry,
    decode_Selector,
    decode_SPIFFEID,
)
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

_RECENT = 1 << 16
"""How many distinct encodings of IDs, selectors and timestamps are remembered."""

_NUMBERS = FIELD_NUMBERS["Entry"]
_LENGTH_DELIMITED = 2


def _tag(name: str, wire_type: int) -> int:
    tag = _NUMBERS[name] << 3 | wire_type
    if tag >= 0x80:
        raise RuntimeError(f"Entry.{name} no longer has a one-byte tag: the reader needs updating")
    return tag


_SELECTORS = _tag("selectors", _LENGTH_DELIMITED)
_DNS_NAMES = _tag("dns_names", _LENGTH_DELIMITED)
_FEDERATES_WITH = _tag("federates_with", _LENGTH_DELIMITED)
_TEXTS = {_tag("id", _LENGTH_DELIMITED): 0, _tag("hint", _LENGTH_DELIMITED): 1}
_IDS = {_tag("spiffe_id", _LENGTH_DELIMITED): 0, _tag("parent_id", _LENGTH_DELIMITED): 1}
_X509_SVID_TTL = _tag("x509_svid_ttl", 0)
_JWT_SVID_TTL = _tag("jwt_svid_ttl", 0)
_REVISION_NUMBER = _tag("revision_number", 0)
_EXPIRES_AT = _tag("expires_at", 0)
_CREATED_AT = _tag("created_at", 0)
_ADMIN = _tag("admin", 0)
_DOWNSTREAM = _tag("downstream", 0)
_STORE_SVID = _tag("store_svid", 0)
_SCALARS = frozenset(
    {
        _X509_SVID_TTL,
        _JWT_SVID_TTL,
        _REVISION_NUMBER,
        _EXPIRES_AT,
        _CREATED_AT,
        _ADMIN,
        _DOWNSTREAM,
        _STORE_SVID,
    }
)
"""The tags of the varint fields."""

_INT32_MAX = (1 << 31) - 1


class _UnusualError(Exception):
    """The bytes are not the plain encoding this reader handles: use the general path."""


@functools.lru_cache(maxsize=_RECENT)
def _spiffe_id(raw: bytes) -> SpiffeId:
    return spiffe_id_from_proto(decode_SPIFFEID(raw), "spiffe_id")


@functools.lru_cache(maxsize=_RECENT)
def _selector(raw: bytes) -> Selector:
    return selectors_from_proto([decode_Selector(raw)], "selectors")[0]


@functools.lru_cache(maxsize=_RECENT)
def _trust_domain(name: str) -> TrustDomain:
    return trust_domains_from_proto([name], "federates_with")[0]


@functools.lru_cache(maxsize=_RECENT)
def _moment(seconds: int) -> datetime | None:
    return from_timestamp(seconds)


def _varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    """A varint of at most nine bytes (a non-negative int64); longer ones are unusual."""
    result = shift = 0
    while position < end and shift < 63:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
    raise _UnusualError


def read_entry(data: bytes, field: str = "entry") -> RegistrationEntry:
    """The entry ``data`` encodes, validated as
    :func:`~pyspire.proto.convert.entry_from_proto` validates it; InvalidArgumentError (a
    DecodeError for bytes that do not parse) naming ``field`` otherwise."""
    try:
        return _read_plain(data)
    except Exception:  # anything unusual, malformed or invalid: the general path decides
        return entry_from_proto(decode_Entry(data), field)


def _read_plain(data: bytes) -> RegistrationEntry:
    texts = ["", ""]
    ids: list[SpiffeId | None] = [None, None]
    selectors: list[Selector] = []
    dns_names: list[str] = []
    federates_with: list[TrustDomain] = []
    scalars: dict[int, int] = {}
    position, end = 0, len(data)
    while position < end:
        tag = data[position]
        position += 1
        if tag & 7 == _LENGTH_DELIMITED:
            size = data[position]
            position += 1
            if size >= 0x80:
                size, position = _varint(data, position - 1, end)
            stop = position + size
            if stop > end:
                raise _UnusualError
            raw = data[position:stop]
            position = stop
            if tag == _SELECTORS:
                selectors.append(_selector(raw))
            elif tag in _TEXTS:
                texts[_TEXTS[tag]] = raw.decode()
            elif tag in _IDS and ids[_IDS[tag]] is None:  # sent twice: merged, unusual
                ids[_IDS[tag]] = _spiffe_id(raw)
            elif tag == _DNS_NAMES:
                dns_names.append(raw.decode())
            elif tag == _FEDERATES_WITH:
                federates_with.append(_trust_domain(raw.decode()))
            else:
                raise _UnusualError
            continue
        value = data[position]
        position += 1
        if value >= 0x80:
            value, position = _varint(data, position - 1, end)
        if tag not in _SCALARS:
            raise _UnusualError
        scalars[tag] = value
    return _entry(texts, ids, selectors, federates_with, dns_names, scalars)


def _entry(
    texts: list[str],
    ids: list[SpiffeId | None],
    selectors: list[Selector],
    federates_with: list[TrustDomain],
    dns_names: list[str],
    scalars: dict[int, int],
) -> RegistrationEntry:
    spiffe_id, parent_id = ids
    x509_svid_ttl = scalars.get(_X509_SVID_TTL, 0)
    jwt_svid_ttl = scalars.get(_JWT_SVID_TTL, 0)
    if spiffe_id is None or parent_id is None or max(x509_svid_ttl, jwt_svid_ttl) > _INT32_MAX:
        raise _UnusualError
    return RegistrationEntry(
        id=texts[0],
        spiffe_id=spiffe_id,
        parent_id=parent_id,
        selectors=tuple(selectors),
        x509_svid_ttl=x509_svid_ttl,
        jwt_svid_ttl=jwt_svid_ttl,
        federates_with=tuple(federates_with),
        admin=scalars.get(_ADMIN, 0) != 0,
        downstream=scalars.get(_DOWNSTREAM, 0) != 0,
        expires_at=_moment(scalars.get(_EXPIRES_AT, 0)),
        dns_names=tuple(dns_names),
        revision_number=scalars.get(_REVISION_NUMBER, 0),
        store_svid=scalars.get(_STORE_SVID, 0) != 0,
        hint=texts[1],
        created_at=_moment(scalars.get(_CREATED_AT, 0)),
    )
