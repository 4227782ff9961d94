"""Rows to records and back: the column lists and record assembly.

Reading builds records from rows already validated when written (see
:class:`pyspire_sdk.stored_records.Decoder`); building many at once
(:func:`assemble_all_entries`) is tuned for 100,000 entries.
"""

from __future__ import annotations

__all__ = [
    "CHILD_CHUNK",
    "ENTRY_COLUMNS",
    "KIND_DNS",
    "KIND_FEDERATES",
    "KIND_SELECTOR",
    "NODE_COLUMNS",
    "Row",
    "assemble_all_entries",
    "assemble_entries",
    "datetime_or_none",
    "micros_or_none",
    "node_from_row",
    "node_params",
    "relationship_from_row",
]

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pyspire_sdk.model import (
    AttestedNode,
    FederationProfile,
    FederationRelationship,
    RegistrationEntry,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.stored_records import Decoder, from_micros, gc_paused, to_micros

ENTRY_COLUMNS = (
    "pk, entry_id, spiffe_id, parent_id, x509_svid_ttl, jwt_svid_ttl, admin, downstream, "
    "expires_at, revision_number, store_svid, hint, created_at"
)
NODE_COLUMNS = (
    "pk, spiffe_id, attestation_type, serial_number, expires_at, new_serial_number, "
    "new_expires_at, banned, can_reattest, agent_version"
)
CHILD_CHUNK = 300
"""Entries whose lists are fetched per query (three IN lists of this size stay far below
SQLite's limit on bound parameters)."""

KIND_SELECTOR = 0
KIND_DNS = 1
KIND_FEDERATES = 2

Row = Sequence[Any]


def micros_or_none(moment: datetime | None) -> int | None:
    """:func:`~pyspire_sdk.stored_records.to_micros`, passing ``None`` through."""
    return None if moment is None else to_micros(moment)


def datetime_or_none(value: int | None) -> datetime | None:
    """:func:`~pyspire_sdk.stored_records.from_micros`, passing ``None`` through."""
    return None if value is None else from_micros(value)


def assemble_entries(rows: Iterable[Row], children: Iterable[Row]) -> list[RegistrationEntry]:
    """Entries from entry rows and child rows ``(entry_pk, kind, position, a, b)`` that come
    ordered by entry and position."""
    decoder = Decoder()
    selectors: dict[int, list[Selector]] = {}
    dns_names: dict[int, list[str]] = {}
    federates: dict[int, list[TrustDomain]] = {}
    for pk, kind, _position, first, second in children:
        if kind == KIND_SELECTOR:
            selectors.setdefault(pk, []).append(decoder.selector(first, second))
        elif kind == KIND_DNS:
            dns_names.setdefault(pk, []).append(first)
        else:
            federates.setdefault(pk, []).append(decoder.trust_domain(first))
    return build_entries(decoder, rows, selectors, dns_names, federates)


def build_entries(
    decoder: Decoder,
    rows: Iterable[Row],
    selectors: dict[int, list[Selector]],
    dns_names: dict[int, list[str]],
    federates: dict[int, list[TrustDomain]],
) -> list[RegistrationEntry]:
    empty: tuple[Any, ...] = ()
    spiffe_id = decoder.spiffe_id
    parent_id = decoder.shared_spiffe_id
    result: list[RegistrationEntry] = []
    append = result.append
    for row in rows:
        pk = row[0]
        dns = dns_names.get(pk)
        feds = federates.get(pk)
        expires_at = row[8]
        append(
            RegistrationEntry(
                spiffe_id(row[2]),
                parent_id(row[3]),
                tuple(selectors.get(pk, empty)),
                row[1],
                row[4],
                row[5],
                tuple(feds) if feds else empty,
                bool(row[6]),
                bool(row[7]),
                None if expires_at is None else from_micros(expires_at),
                tuple(dns) if dns else empty,
                row[9],
                bool(row[10]),
                row[11],
                from_micros(row[12]),
            )
        )
    return result


def assemble_all_entries(
    rows: Sequence[Row],
    selector_rows: Sequence[Row],
    dns_rows: Sequence[Row],
    federates_rows: Sequence[Row],
) -> list[RegistrationEntry]:
    """Every entry from the four full-table reads of :meth:`SqliteDataStore.list_all_entries`.

    Entry rows come ordered by ``pk`` and selector rows by ``(entry_pk, position)``, so each
    entry's selectors are one slice of the selector list, found by bisection.
    """
    with gc_paused():
        decoder = Decoder()
        make_selector = decoder.selector
        selector_pks = [row[0] for row in selector_rows]
        all_selectors = [make_selector(row[1], row[2]) for row in selector_rows]
        dns_names: dict[int, list[str]] = {}
        for pk, name in dns_rows:
            dns_names.setdefault(pk, []).append(name)
        federates: dict[int, list[TrustDomain]] = {}
        for pk, name in federates_rows:
            federates.setdefault(pk, []).append(decoder.trust_domain(name))
        empty: tuple[Any, ...] = ()
        spiffe_id = decoder.spiffe_id
        parent_id = decoder.shared_spiffe_id
        result: list[RegistrationEntry] = []
        append = result.append
        start = 0
        for row in rows:
            pk = row[0]
            end = bisect_right(selector_pks, pk, start)
            dns = dns_names.get(pk) if dns_names else None
            feds = federates.get(pk) if federates else None
            expires_at = row[8]
            append(
                RegistrationEntry(
                    spiffe_id(row[2]),
                    parent_id(row[3]),
                    tuple(all_selectors[start:end]),
                    row[1],
                    row[4],
                    row[5],
                    tuple(feds) if feds else empty,
                    bool(row[6]),
                    bool(row[7]),
                    None if expires_at is None else from_micros(expires_at),
                    tuple(dns) if dns else empty,
                    row[9],
                    bool(row[10]),
                    row[11],
                    from_micros(row[12]),
                )
            )
            start = end
        return result


def node_from_row(decoder: Decoder, row: Row, selectors: tuple[Selector, ...]) -> AttestedNode:
    """The node of an ``attested_nodes`` row read with :data:`NODE_COLUMNS`."""
    return AttestedNode(
        spiffe_id=decoder.spiffe_id(row[1]),
        attestation_type=row[2],
        x509_svid_serial_number=row[3],
        x509_svid_expires_at=datetime_or_none(row[4]),
        selectors=selectors,
        banned=bool(row[7]),
        can_reattest=bool(row[8]),
        agent_version=row[9],
        new_x509_svid_serial_number=row[5],
        new_x509_svid_expires_at=datetime_or_none(row[6]),
    )


def node_params(node: AttestedNode) -> tuple[Any, ...]:
    """The node's mutable columns, in the order the store's INSERT and UPDATE name them."""
    return (
        node.attestation_type,
        node.x509_svid_serial_number,
        micros_or_none(node.x509_svid_expires_at),
        node.new_x509_svid_serial_number,
        micros_or_none(node.new_x509_svid_expires_at),
        int(node.banned),
        int(node.can_reattest),
        node.agent_version,
    )


def relationship_from_row(decoder: Decoder, row: Row) -> FederationRelationship:
    """The relationship of a ``federation_relationships`` row."""
    return FederationRelationship(
        trust_domain=decoder.trust_domain(row[0]),
        bundle_endpoint_url=row[1],
        profile=FederationProfile(row[2]),
        endpoint_spiffe_id=None if row[3] is None else decoder.spiffe_id(row[3]),
    )
