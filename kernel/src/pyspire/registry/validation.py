"""Registration entry validation, by SPIRE's rules, as pure functions.

An entry that reaches the datastore has passed :func:`validate_entry`: its IDs belong to our trust
domain, it can be matched (at least one well-formed selector), its TTLs and DNS names make sense
in an X.509 certificate, and it federates only with other trust domains. The rules follow SPIRE's
Entry API (``pkg/server/api/entry.go``):

- ``parent_id`` is any ID in our trust domain with a path (an agent, a node alias's ID, another
  workload, or the server ID, which makes the entry a node alias).
- ``spiffe_id`` is a workload ID: in our trust domain, with a path, and outside the reserved
  ``/spire`` namespace (agents and the server get their IDs from attestation, never from an
  entry). SPIRE applies this to every entry, node aliases included, and so do we.

Every string field, list and chosen entry ID also keeps to the limits of
:mod:`pyspire_sdk.limits` (lengths, counts, no control characters); :func:`validate_text` applies
the same rules to the strings of other records (bundle key IDs, agent versions).

Every failure raises :class:`~pyspire_sdk.errors.InvalidArgumentError` whose message starts with
the field it is about (``spiffe_id``, ``selectors[2]``, ``dns_names[0]``...) and says why.
Nothing here does I/O or reads the wall clock: the caller passes ``now``.
"""

from __future__ import annotations

__all__ = [
    "RESERVED_PATH",
    "is_node_alias",
    "is_reserved_path",
    "node_alias_parent",
    "server_id",
    "validate_dns_name",
    "validate_entry",
    "validate_entry_id",
    "validate_text",
]

import dataclasses
import re
from collections.abc import Iterable
from datetime import datetime
from typing import TypeVar

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.limits import (
    ENTRY_ID_CHARACTERS,
    MAX_DNS_NAME_LENGTH,
    MAX_DNS_NAMES_PER_ENTRY,
    MAX_ENTRY_ID_LENGTH,
    MAX_FEDERATES_WITH_PER_ENTRY,
    MAX_HINT_BYTES,
    MAX_SELECTOR_TYPE_BYTES,
    MAX_SELECTOR_VALUE_BYTES,
    MAX_SELECTORS_PER_ENTRY,
    MAX_TTL_SECONDS,
    first_control_character,
)
from pyspire_sdk.model import ENTRY_SETTABLE_FIELDS, RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SERVER_ID_PATH, SpiffeId, TrustDomain, server_id

"""Path of the server's own ID; an entry parented by it is a node alias."""

RESERVED_PATH = "/spire"
"""The namespace reserved for the server and agents: ``/spire`` and everything under it."""

_MAX_LABEL_LENGTH = 63

_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")


def node_alias_parent(trust_domain: TrustDomain) -> SpiffeId:
    """The parent ID that makes an entry a node alias: the server's ID, as in SPIRE.

    A node alias gives its ``spiffe_id`` to every agent whose node selectors include all of the
    alias's selectors; entries parented by that ID then reach those agents.
    """
    return server_id(trust_domain)


def is_node_alias(entry: RegistrationEntry) -> bool:
    """True when ``entry`` is a node alias: its parent is the server ID of its trust domain."""
    return entry.parent_id.path == SERVER_ID_PATH


def is_reserved_path(path: str) -> bool:
    """True for ``/spire`` and every path under it (``/spire/agent/...``, ``/spire/server``)."""
    return path == RESERVED_PATH or path.startswith(RESERVED_PATH + "/")


def validate_text(value: object, field: str, *, max_bytes: int) -> str:
    """Check a free-text string field and return it unchanged: a ``str`` of at most
    ``max_bytes`` bytes of UTF-8, without control characters (see
    :func:`pyspire_sdk.limits.first_control_character`)."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{field} must be a string, found {type(value).__name__}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InvalidArgumentError(f"{field} is {size} bytes, longer than the {max_bytes} allowed")
    position = first_control_character(value)
    if position is not None:
        raise InvalidArgumentError(
            f"{field} holds a control character (U+{ord(value[position]):04X}) at position "
            f"{position}"
        )
    return value


def validate_entry_id(entry_id: object) -> str:
    """Check an entry ID a caller chose and return it unchanged: 1 to 255 of ASCII letters,
    digits, ``.``, ``_`` and ``-`` (SPIRE's rule, which UUIDs meet), and not ``.`` or ``..``."""
    if not isinstance(entry_id, str):
        raise InvalidArgumentError(f"id must be a string, found {type(entry_id).__name__}")
    if not entry_id:
        raise InvalidArgumentError("id is empty")
    if len(entry_id) > MAX_ENTRY_ID_LENGTH:
        raise InvalidArgumentError(
            f"id is {len(entry_id)} characters, longer than the {MAX_ENTRY_ID_LENGTH} allowed"
        )
    if not ENTRY_ID_CHARACTERS.issuperset(entry_id):
        raise InvalidArgumentError(
            f"id {entry_id!r} may hold only ASCII letters, digits, '.', '_' and '-'"
        )
    if entry_id in (".", ".."):
        raise InvalidArgumentError(f"id {entry_id!r} is not a name")
    return entry_id


def _describe(value: object) -> str:
    return str(value) if isinstance(value, SpiffeId | TrustDomain) else type(value).__name__


def _check_parent_id(parent_id: object, trust_domain: TrustDomain) -> None:
    if not isinstance(parent_id, SpiffeId):
        raise InvalidArgumentError(
            f"parent_id must be a SpiffeId, found {type(parent_id).__name__}"
        )
    if parent_id.trust_domain != trust_domain:
        raise InvalidArgumentError(
            f"parent_id '{parent_id}' is not a member of trust domain '{trust_domain}'"
        )
    if not parent_id.path:
        raise InvalidArgumentError(
            f"parent_id '{parent_id}' is the trust domain's own ID: a parent needs a path"
        )


def _check_spiffe_id(spiffe_id: object, trust_domain: TrustDomain) -> None:
    if not isinstance(spiffe_id, SpiffeId):
        raise InvalidArgumentError(
            f"spiffe_id must be a SpiffeId, found {type(spiffe_id).__name__}"
        )
    if spiffe_id.trust_domain != trust_domain:
        raise InvalidArgumentError(
            f"spiffe_id '{spiffe_id}' is not a member of trust domain '{trust_domain}'"
        )
    if not spiffe_id.path:
        raise InvalidArgumentError(
            f"spiffe_id '{spiffe_id}' is the trust domain's own ID: a workload ID needs a path"
        )
    if is_reserved_path(spiffe_id.path):
        raise InvalidArgumentError(
            f"spiffe_id '{spiffe_id}' is in the reserved namespace '{RESERVED_PATH}' of the "
            "server and agents"
        )


def _check_selectors(selectors: object) -> tuple[Selector, ...]:
    if not isinstance(selectors, tuple | list):
        raise InvalidArgumentError(
            f"selectors must be a tuple of Selector, found {type(selectors).__name__}"
        )
    if not selectors:
        raise InvalidArgumentError("selectors is empty: an entry needs at least one selector")
    _check_count("selectors", selectors, MAX_SELECTORS_PER_ENTRY)
    for index, selector in enumerate(selectors):
        field = f"selectors[{index}]"
        if not isinstance(selector, Selector):
            raise InvalidArgumentError(
                f"{field} must be a Selector, found {type(selector).__name__}"
            )
        if not isinstance(selector.type, str) or not selector.type:
            raise InvalidArgumentError(f"{field} has an empty type")
        validate_text(selector.type, f"{field} type", max_bytes=MAX_SELECTOR_TYPE_BYTES)
        if ":" in selector.type:
            raise InvalidArgumentError(f"{field} type {selector.type!r} must not contain ':'")
        if not isinstance(selector.value, str) or not selector.value:
            raise InvalidArgumentError(f"{field} ({selector.type!r}) has an empty value")
        validate_text(selector.value, f"{field} value", max_bytes=MAX_SELECTOR_VALUE_BYTES)
    return _unique(selectors)


def _check_count(field: str, items: tuple[object, ...] | list[object], limit: int) -> None:
    if len(items) > limit:
        raise InvalidArgumentError(f"{field} has {len(items)} items, more than the {limit} allowed")


def _check_ttl(field: str, ttl: object) -> None:
    if not isinstance(ttl, int) or isinstance(ttl, bool):
        raise InvalidArgumentError(f"{field} must be an integer, found {type(ttl).__name__}")
    if ttl < 0:
        raise InvalidArgumentError(f"{field} {ttl} is negative: give seconds, 0 for the default")
    if ttl > MAX_TTL_SECONDS:
        raise InvalidArgumentError(f"{field} {ttl} is larger than the {MAX_TTL_SECONDS} allowed")


def validate_dns_name(name: object) -> str:
    """Check one DNS name for an X.509 SAN and return it unchanged.

    Accepted: an RFC 1123 host name (ASCII labels of 1 to 63 letters, digits and hyphens, not
    starting or ending with a hyphen; at most 253 characters; no trailing dot), optionally with
    a wildcard ``*`` as the whole leftmost label followed by at least one more label. The reason
    for a rejection is returned without the field name; :func:`validate_entry` adds it.
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(f"must be a string, found {type(name).__name__}")
    if not name:
        raise InvalidArgumentError("is empty")
    if not name.isascii():
        raise InvalidArgumentError(f"{name!r} is not ASCII: give the IDNA (xn--) form")
    if name.endswith("."):
        raise InvalidArgumentError(f"{name!r} must not end with '.'")
    if len(name) > MAX_DNS_NAME_LENGTH:
        raise InvalidArgumentError(
            f"{name[:40]!r}... is {len(name)} characters, longer than the "
            f"{MAX_DNS_NAME_LENGTH} allowed"
        )
    labels = name.split(".")
    if "*" in name:
        if name.count("*") > 1:
            raise InvalidArgumentError(f"{name!r} has more than one wildcard")
        if labels[0] != "*":
            raise InvalidArgumentError(
                f"{name!r}: a wildcard must be the whole leftmost label ('*.example.org')"
            )
        if len(labels) < 2:
            raise InvalidArgumentError(f"{name!r}: a wildcard needs a domain after it")
        labels = labels[1:]
        first_position = 2
    else:
        first_position = 1
    for position, label in enumerate(labels, start=first_position):
        if not label:
            raise InvalidArgumentError(f"{name!r}: label {position} is empty")
        if len(label) > _MAX_LABEL_LENGTH:
            raise InvalidArgumentError(
                f"{name!r}: label {position} is {len(label)} characters, longer than the "
                f"{_MAX_LABEL_LENGTH} allowed"
            )
        if _LABEL_RE.fullmatch(label) is None:
            raise InvalidArgumentError(
                f"{name!r}: label {position} {label!r} must be letters, digits and hyphens, "
                "not starting or ending with a hyphen"
            )
    return name


def _check_dns_names(names: object) -> tuple[str, ...]:
    if not isinstance(names, tuple | list):
        raise InvalidArgumentError(
            f"dns_names must be a tuple of str, found {type(names).__name__}"
        )
    _check_count("dns_names", names, MAX_DNS_NAMES_PER_ENTRY)
    for index, name in enumerate(names):
        try:
            validate_dns_name(name)
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"dns_names[{index}] {error}") from None
    return _unique(names)


def _check_federates_with(domains: object, trust_domain: TrustDomain) -> tuple[TrustDomain, ...]:
    if not isinstance(domains, tuple | list):
        raise InvalidArgumentError(
            f"federates_with must be a tuple of TrustDomain, found {type(domains).__name__}"
        )
    _check_count("federates_with", domains, MAX_FEDERATES_WITH_PER_ENTRY)
    for index, domain in enumerate(domains):
        if not isinstance(domain, TrustDomain):
            raise InvalidArgumentError(
                f"federates_with[{index}] must be a TrustDomain, found {_describe(domain)}"
            )
        if domain == trust_domain:
            raise InvalidArgumentError(
                f"federates_with[{index}] '{domain}' is our own trust domain: federate only "
                "with other trust domains"
            )
    return _unique(domains)


def _check_hint(hint: object) -> None:
    validate_text(hint, "hint", max_bytes=MAX_HINT_BYTES)


def _check_expires_at(expires_at: object, now: datetime | None) -> None:
    if expires_at is None:
        return
    if not isinstance(expires_at, datetime):
        raise InvalidArgumentError(
            f"expires_at must be a datetime or None, found {type(expires_at).__name__}"
        )
    if expires_at.tzinfo is None:
        raise InvalidArgumentError("expires_at must be timezone-aware (UTC)")
    if now is not None and expires_at <= now:
        raise InvalidArgumentError(
            f"expires_at {expires_at.isoformat()} is not in the future (now is {now.isoformat()})"
        )


def _check_flag(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{field} must be a bool, found {type(value).__name__}")


_T = TypeVar("_T")


def _unique(values: Iterable[_T]) -> tuple[_T, ...]:
    """The values in order with later duplicates dropped, as the datastore stores them."""
    return tuple(dict.fromkeys(values))


def validate_entry(
    entry: RegistrationEntry,
    trust_domain: TrustDomain,
    *,
    now: datetime | None = None,
    mask: frozenset[str] | None = None,
) -> RegistrationEntry:
    """Check ``entry`` against SPIRE's rules and return it normalised.

    Only the fields named in ``mask`` are checked (all of
    :data:`~pyspire_sdk.model.ENTRY_SETTABLE_FIELDS` when ``None``), so an update that leaves
    ``selectors`` alone may carry an empty placeholder there, as in SPIRE.
    ``expires_at`` must be later than ``now`` when both are given; without ``now`` only its type
    is checked (a stored entry may legitimately be in the past by the time it is read back).

    The returned entry has duplicates dropped (first occurrence wins) from ``selectors``,
    ``dns_names`` and ``federates_with``, and is otherwise equal to ``entry``.
    Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` naming the first field at fault.
    """
    if not isinstance(entry, RegistrationEntry):
        raise InvalidArgumentError(
            f"entry must be a RegistrationEntry, found {type(entry).__name__}"
        )
    fields = ENTRY_SETTABLE_FIELDS if mask is None else mask
    unknown = fields - ENTRY_SETTABLE_FIELDS
    if unknown:
        raise InvalidArgumentError(
            f"mask names unknown or read-only fields: {', '.join(sorted(unknown))}"
        )
    normalised = _checked_fields(entry, fields, trust_domain, now)
    if not isinstance(entry.id, str):
        raise InvalidArgumentError(f"id must be a string, found {type(entry.id).__name__}")
    if normalised == (entry.selectors, entry.dns_names, entry.federates_with):
        return entry
    selectors, dns_names, federates_with = normalised
    return dataclasses.replace(
        entry, selectors=selectors, dns_names=dns_names, federates_with=federates_with
    )


def _checked_fields(
    entry: RegistrationEntry,
    fields: frozenset[str],
    trust_domain: TrustDomain,
    now: datetime | None,
) -> tuple[tuple[Selector, ...], tuple[str, ...], tuple[TrustDomain, ...]]:
    """Check the ``fields`` of ``entry`` in a fixed order (the first at fault is named); its
    selectors, DNS names and federated trust domains, normalised when checked."""
    selectors, dns_names, federates_with = entry.selectors, entry.dns_names, entry.federates_with
    if "parent_id" in fields:
        _check_parent_id(entry.parent_id, trust_domain)
    if "spiffe_id" in fields:
        _check_spiffe_id(entry.spiffe_id, trust_domain)
    if "selectors" in fields:
        selectors = _check_selectors(entry.selectors)
    if "x509_svid_ttl" in fields:
        _check_ttl("x509_svid_ttl", entry.x509_svid_ttl)
    if "jwt_svid_ttl" in fields:
        _check_ttl("jwt_svid_ttl", entry.jwt_svid_ttl)
    if "dns_names" in fields:
        dns_names = _check_dns_names(entry.dns_names)
    if "federates_with" in fields:
        federates_with = _check_federates_with(entry.federates_with, trust_domain)
    if "hint" in fields:
        _check_hint(entry.hint)
    if "expires_at" in fields:
        _check_expires_at(entry.expires_at, now)
    for flag in ("admin", "downstream", "store_svid"):
        if flag in fields:
            _check_flag(flag, getattr(entry, flag))
    return selectors, dns_names, federates_with
