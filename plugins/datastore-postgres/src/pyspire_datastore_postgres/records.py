"""Rows to records and back: the column lists and the records that are not entries.

Entries are assembled by :mod:`pyspire_sdk.stored_records` from rows read with
:data:`ENTRY_COLUMNS` (its ``ENTRY_ROW`` layout); timestamps come back as ``datetime`` values.
"""

from __future__ import annotations

__all__ = [
    "ENTRY_COLUMNS",
    "NODE_COLUMNS",
    "Row",
    "entry_columns",
    "node_from_row",
    "node_values",
    "relationship_from_row",
]

from collections.abc import Sequence
from typing import Any

from pyspire_sdk.model import (
    AttestedNode,
    FederationProfile,
    FederationRelationship,
    RegistrationEntry,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.stored_records import ENTRY_ROW, Decoder, selectors_hash

ENTRY_COLUMNS = ", ".join(f"e.{column}" for column in ENTRY_ROW)
"""The entry row's columns in :data:`~pyspire_sdk.stored_records.ENTRY_ROW` order."""
NODE_COLUMNS = (
    "n.pk, n.spiffe_id, n.attestation_type, n.serial_number, n.expires_at, n.new_serial_number, "
    "n.new_expires_at, n.banned, n.can_reattest, n.agent_version"
)

Row = Sequence[Any]


def entry_columns(entry: RegistrationEntry) -> tuple[Any, ...]:
    """The stored columns of ``entry`` after its id: spiffe_id, parent_id, selectors_hash,
    x509_svid_ttl, jwt_svid_ttl, admin, downstream, expires_at, revision_number, store_svid,
    hint."""
    return (
        str(entry.spiffe_id),
        str(entry.parent_id),
        selectors_hash(entry.selectors),
        entry.x509_svid_ttl,
        entry.jwt_svid_ttl,
        entry.admin,
        entry.downstream,
        entry.expires_at,
        entry.revision_number,
        entry.store_svid,
        entry.hint,
    )


def node_from_row(decoder: Decoder, row: Row, selectors: tuple[Selector, ...]) -> AttestedNode:
    """The node of an ``attested_nodes`` row read with :data:`NODE_COLUMNS`."""
    return AttestedNode(
        spiffe_id=decoder.spiffe_id(row[1]),
        attestation_type=row[2],
        x509_svid_serial_number=row[3],
        x509_svid_expires_at=row[4],
        selectors=selectors,
        banned=row[7],
        can_reattest=row[8],
        agent_version=row[9],
        new_x509_svid_serial_number=row[5],
        new_x509_svid_expires_at=row[6],
    )


def node_values(node: AttestedNode) -> tuple[Any, ...]:
    """The node's mutable columns, in the order the store's INSERT and UPDATE name them."""
    return (
        node.attestation_type,
        node.x509_svid_serial_number,
        node.x509_svid_expires_at,
        node.new_x509_svid_serial_number,
        node.new_x509_svid_expires_at,
        node.banned,
        node.can_reattest,
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
