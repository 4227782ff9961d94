"""The column lists of the tables, as the store's queries name them.

Records are built by :mod:`pyspire_sdk.stored_records` from rows read with these lists (its
``ENTRY_ROW`` and ``NODE_ROW`` layouts, times as microseconds since the epoch).
"""

from __future__ import annotations

__all__ = ["CHILD_CHUNK", "ENTRY_COLUMNS", "NODE_COLUMNS", "Row"]

from collections.abc import Sequence
from typing import Any

from pyspire_sdk.stored_records import ENTRY_ROW

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
