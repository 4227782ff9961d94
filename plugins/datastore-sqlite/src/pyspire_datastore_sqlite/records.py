"""Rows to records and back: the column lists and record assembly.

Reading builds records from rows already validated when written (see
:class:`pyspire_sdk.stored_records.Decoder`); building many at once
(:func:`assemble_all_entries`) is tuned for 100,000 entries.
"""

from __future__ import annotations

__all__ = [
    "CHILD_CHUNK",
    "ENTRY_COLUMNS",
    "NODE_COLUMNS",
    "Row",
    "datetime_or_none",
    "micros_or_none",
    "node_from_row",
    "node_params",
    "relationship_from_row",
]

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pyspire_sdk.model import (
    AttestedNode,
    FederationProfile,
    FederationRelationship,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.stored_records import ENTRY_ROW, Decoder, from_micros, to_micros

ENTRY_COLUMNS = ", ".join(f"{column}" for column in ENTRY_ROW)
"""The entry row's columns in :data:`~pyspire_sdk.stored_records.ENTRY_ROW` order."""
NODE_COLUMNS = (
    "pk, spiffe_id, attestation_type, serial_number, expires_at, new_serial_number, "
    "new_expires_at, banned, can_reattest, agent_version"
)
CHILD_CHUNK = 300
"""Entries whose lists are fetched per query (three IN lists of this size stay far below
SQLite's limit on bound parameters)."""

Row = Sequence[Any]


def micros_or_none(moment: datetime | None) -> int | None:
    """:func:`~pyspire_sdk.stored_records.to_micros`, passing ``None`` through."""
    return None if moment is None else to_micros(moment)


def datetime_or_none(value: int | None) -> datetime | None:
    """:func:`~pyspire_sdk.stored_records.from_micros`, passing ``None`` through."""
    return None if value is None else from_micros(value)


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
