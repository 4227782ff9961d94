"""When to prepare and when to activate the next CA or JWT key (SPIRE's schedule).

A credential valid from ``not_before`` to ``not_after`` has the next one **prepared** (made and
published in the bundle, not yet used) once less than min(lifetime/2, 30 days) remains, and
**activated** (used for signing; the current one becomes old) once less than min(lifetime/6,
7 days) remains. Publishing at prepare time gives every consumer time to learn the new key
before anything signed with it appears.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

ROTATION_INTERVAL = timedelta(seconds=10)
PREPARE_CAP = timedelta(days=30)
ACTIVATE_CAP = timedelta(days=7)


class SlotStatus(StrEnum):
    """Where a slot's credential is in its life."""

    PREPARED = "prepared"
    ACTIVE = "active"
    OLD = "old"


def prepare_at(not_before: datetime, not_after: datetime) -> datetime:
    """The moment the successor of a credential with this validity should be prepared."""
    lifetime = not_after - not_before
    return not_after - min(lifetime / 2, PREPARE_CAP)


def activate_at(not_before: datetime, not_after: datetime) -> datetime:
    """The moment the successor of a credential with this validity should take over."""
    lifetime = not_after - not_before
    return not_after - min(lifetime / 6, ACTIVATE_CAP)


def other_slot(slot_id: str) -> str:
    """Slots alternate between A and B."""
    return "B" if slot_id == "A" else "A"
