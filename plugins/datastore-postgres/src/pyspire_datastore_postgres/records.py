"""The column lists of the tables, as the store's queries name them.

Entries are assembled by :mod:`pyspire_sdk.stored_records` from rows read with
:data:`ENTRY_COLUMNS` (its ``ENTRY_ROW`` layout), nodes from rows read with
:data:`NODE_COLUMNS` (its ``NODE_ROW`` layout); timestamps come back as ``datetime`` values.
"""

from __future__ import annotations

__all__ = ["ENTRY_COLUMNS", "NODE_COLUMNS"]

ENTRY_COLUMNS = (
    "e.pk, e.entry_id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, e.admin, "
    "e.downstream, e.expires_at, e.revision_number, e.store_svid, e.hint, e.created_at"
)
NODE_COLUMNS = (
    "n.pk, n.spiffe_id, n.attestation_type, n.serial_number, n.expires_at, n.new_serial_number, "
    "n.new_expires_at, n.banned, n.can_reattest, n.agent_version"
)
