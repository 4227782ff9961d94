"""The column lists of the tables, as the store's queries name them.

Entries are assembled by :mod:`pyspire_sdk.stored_records` from rows read with
:data:`ENTRY_COLUMNS` (its ``ENTRY_ROW`` layout), nodes from rows read with
:data:`NODE_COLUMNS` (its ``NODE_ROW`` layout); timestamps come back as ``datetime`` values.
"""

from __future__ import annotations

__all__ = ["ENTRY_COLUMNS", "NODE_COLUMNS"]

from pyspire_sdk.stored_records import ENTRY_ROW

ENTRY_COLUMNS = ", ".join(f"e.{column}" for column in ENTRY_ROW)
"""The entry row's columns in :data:`~pyspire_sdk.stored_records.ENTRY_ROW` order."""
NODE_COLUMNS = (
    "n.pk, n.spiffe_id, n.attestation_type, n.serial_number, n.expires_at, n.new_serial_number, "
    "n.new_expires_at, n.banned, n.can_reattest, n.agent_version"
)
