"""Registration entries of a ``-data`` document, in protobuf's JSON mapping of
``spire.api.types.Entry``, read and encoded for the Entry API.

Reading accepts what SPIRE's CLI accepts (``.proto`` or lowerCamel field names, IDs as objects
or ``spiffe://`` strings, selectors as objects or ``type:value`` strings) and names the place of
anything unexpected (``entries[1].selectors[0]``). Each entry is encoded by the generated codec
(:mod:`pyspire.proto.gen.codec.spire_api_types`) when its batch is sent. Writing entries as JSON
(``-output json``) is the codec's ``json_Entry``.
"""

from __future__ import annotations

__all__ = [
    "ENTRY_JSON_FIELDS",
    "INT64_MAX",
    "EntryDraft",
    "entries_from_document",
]

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire.proto.gen.codec.spire_api_types import write_Entry, write_Selector, write_SPIFFEID
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.limits import MAX_TTL_SECONDS
from pyspire_sdk.model import ENTRY_DATASTORE_FIELDS
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId

INT64_MAX = 2**63 - 1
"""The largest value of an ``int64`` field (expiry times)."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_STRING_FIELDS = ("id", "hint")
_BOOL_FIELDS = ("admin", "downstream", "store_svid")
_INT_FIELDS = {
    "x509_svid_ttl": MAX_TTL_SECONDS,
    "jwt_svid_ttl": MAX_TTL_SECONDS,
    "expires_at": INT64_MAX,
}
_ID_FIELDS = ("spiffe_id", "parent_id")
_LIST_FIELDS = ("selectors", "federates_with", "dns_names")
_READ_ONLY_FIELDS = (
    *sorted(ENTRY_DATASTORE_FIELDS - {"id"}),
    "additional_attributes",  # the wire's, with no stored counterpart
)
ENTRY_JSON_FIELDS: frozenset[str] = frozenset(
    (*_STRING_FIELDS, *_BOOL_FIELDS, *_INT_FIELDS, *_ID_FIELDS, *_LIST_FIELDS, *_READ_ONLY_FIELDS)
)
"""The fields a ``-data`` entry may have: every entry field (:data:`pyspire_sdk.model.
ENTRY_FIELDS`, which a test holds this to) and the wire's ``additional_attributes``."""
_KNOWN_FIELDS = {
    spelling: name
    for name in (
        *_STRING_FIELDS,
        *_BOOL_FIELDS,
        *_INT_FIELDS,
        *_ID_FIELDS,
        *_LIST_FIELDS,
        *_READ_ONLY_FIELDS,
    )
    for spelling in (name, _camel(name))
}


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _json_id(value: object, where: str) -> SpiffeId:
    if isinstance(value, str):
        try:
            return SpiffeId.parse(value)
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"{where}: {error}") from None
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"{where}: expected an object with trust_domain and path, found {_type_name(value)}"
        )
    unknown = sorted(set(value) - {"trust_domain", "trustDomain", "path"})
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown field {unknown[0]!r}")
    trust_domain = value.get("trust_domain", value.get("trustDomain", ""))
    path = value.get("path", "")
    if not isinstance(trust_domain, str) or not isinstance(path, str):
        raise InvalidArgumentError(f"{where}: trust_domain and path must be strings")
    try:
        return SpiffeId.from_path(trust_domain, path)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"{where}: {error}") from None


def _json_int(value: object, where: str, limit: int) -> int:
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{where}: expected an integer, found a boolean")
    if isinstance(value, str):
        try:
            number = int(value, 10)
        except ValueError:
            raise InvalidArgumentError(f"{where}: {value!r} is not an integer") from None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise InvalidArgumentError(f"{where}: expected an integer, found {_type_name(value)}")
    if number < 0 or number > limit:
        raise InvalidArgumentError(f"{where}: {number} is out of range (0 to {limit})")
    return number


def _json_strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise InvalidArgumentError(f"{where}: expected an array, found {_type_name(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidArgumentError(
                f"{where}[{index}]: expected a string, found {_type_name(item)}"
            )
    return list(value)


def _json_selectors(value: object, where: str) -> list[Selector]:
    if not isinstance(value, list):
        raise InvalidArgumentError(f"{where}: expected an array, found {_type_name(value)}")
    selectors = []
    for index, item in enumerate(value):
        place = f"{where}[{index}]"
        if isinstance(item, str):
            try:
                selector = Selector.parse(item)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"{place}: {error}") from None
        elif isinstance(item, Mapping):
            unknown = sorted(set(item) - {"type", "value"})
            if unknown:
                raise InvalidArgumentError(f"{place}: unknown field {unknown[0]!r}")
            kind, text = item.get("type"), item.get("value")
            if not isinstance(kind, str) or not isinstance(text, str):
                raise InvalidArgumentError(f"{place}: type and value must be strings")
            try:
                selector = Selector(kind, text)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"{place}: {error}") from None
        else:
            raise InvalidArgumentError(
                f"{place}: expected an object with type and value, found {_type_name(item)}"
            )
        selectors.append(selector)
    return selectors


@dataclass(frozen=True, slots=True)
class EntryDraft:
    """One entry of a ``-data`` document, checked, as plain values.

    The entry is encoded (:meth:`encoded`) only when its batch is sent: done batch by batch it
    overlaps the server's work on the previous batch, while every entry was still checked
    before the first one is sent.
    """

    fields: Mapping[str, Any]

    @property
    def id(self) -> str:
        """The entry ID the document gives, or ``""``."""
        value: str = self.fields.get("id", "")
        return value

    @property
    def name(self) -> str:
        """How failures name the entry: its ID, or its SPIFFE ID, or ``""``."""
        spiffe_id = self.fields.get("spiffe_id")
        return self.id or (str(spiffe_id) if spiffe_id is not None else "")

    def encoded(self) -> bytes:
        """The entry as the API carries it: an encoded ``spire.api.types.Entry``."""
        values = dict(self.fields)
        for name in _ID_FIELDS:
            if name in values:
                spiffe_id: SpiffeId = values[name]
                values[name] = write_SPIFFEID(
                    trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path
                )
        if "selectors" in values:
            values["selectors"] = [
                write_Selector(type=selector.type, value=selector.value)
                for selector in values["selectors"]
            ]
        return write_Entry(**values)


def _json_entry(item: object, where: str) -> EntryDraft:
    if not isinstance(item, Mapping):
        raise InvalidArgumentError(f"{where}: expected an object, found {_type_name(item)}")
    fields: dict[str, Any] = {}
    for key, value in item.items():
        name = _KNOWN_FIELDS.get(key)
        if name is None:
            raise InvalidArgumentError(f"{where}.{key}: unknown field")
        if name in _READ_ONLY_FIELDS:
            continue
        if name in _STRING_FIELDS:
            if not isinstance(value, str):
                raise InvalidArgumentError(
                    f"{where}.{name}: expected a string, found {_type_name(value)}"
                )
            fields[name] = value
        elif name in _BOOL_FIELDS:
            if not isinstance(value, bool):
                raise InvalidArgumentError(
                    f"{where}.{name}: expected a boolean, found {_type_name(value)}"
                )
            fields[name] = value
        elif name in _INT_FIELDS:
            fields[name] = _json_int(value, f"{where}.{name}", _INT_FIELDS[name])
        elif name in _ID_FIELDS:
            fields[name] = _json_id(value, f"{where}.{name}")
        elif name == "selectors":
            fields[name] = _json_selectors(value, f"{where}.{name}")
        else:
            fields[name] = _json_strings(value, f"{where}.{name}")
    return EntryDraft(fields)


def entries_from_document(document: object) -> list[EntryDraft]:
    """The entries of a ``-data`` document: ``{"entries": [Entry, ...]}``, all checked.

    Each entry uses the ``spire.api.types.Entry`` JSON mapping (``.proto`` or lowerCamel field
    names; IDs as ``{"trust_domain", "path"}`` objects or ``spiffe://`` strings; selectors as
    ``{"type", "value"}`` objects or ``type:value`` strings). Read-only fields
    (``revision_number``, ``created_at``) are ignored. Anything else unexpected raises
    :class:`InvalidArgumentError` naming the place (``entries[1].selectors[0]``).
    """
    if not isinstance(document, Mapping):
        raise InvalidArgumentError(
            f'expected an object {{"entries": [...]}}, found {_type_name(document)}'
        )
    unknown = sorted(set(document) - {"entries"})
    if unknown:
        raise InvalidArgumentError(f"unknown field {unknown[0]!r}: only 'entries' is expected")
    items = document.get("entries")
    if items is None:
        raise InvalidArgumentError("'entries' is missing")
    if not isinstance(items, list):
        raise InvalidArgumentError(f"'entries' must be an array, found {_type_name(items)}")
    if not items:
        raise InvalidArgumentError("'entries' is empty")
    return [_json_entry(item, f"entries[{index}]") for index, item in enumerate(items)]
