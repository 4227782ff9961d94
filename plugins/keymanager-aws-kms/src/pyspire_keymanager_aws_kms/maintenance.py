"""When keys and aliases are stale: SPIRE's periods and thresholds, as pure decisions.

A server keeps its own aliases fresh by updating them every :data:`REFRESH_ALIASES_EVERY`; an
alias of another server of the trust domain not updated for :data:`ALIAS_THRESHOLD` belongs to
a server that is gone, and goes with its key; a key of the trust domain that no alias names and
that is older than :data:`KEY_THRESHOLD` was left behind (a crash between making a key and
naming it, a failed deletion) and is deleted. Each job runs at most once per its period.
"""

from __future__ import annotations

__all__ = [
    "ALIAS_THRESHOLD",
    "DISPOSE_ALIASES_EVERY",
    "DISPOSE_KEYS_EVERY",
    "KEY_THRESHOLD",
    "REFRESH_ALIASES_EVERY",
    "Schedule",
    "is_stale",
]

from dataclasses import dataclass
from datetime import datetime, timedelta

REFRESH_ALIASES_EVERY = timedelta(hours=6)
DISPOSE_ALIASES_EVERY = timedelta(hours=24)
ALIAS_THRESHOLD = timedelta(days=14)
DISPOSE_KEYS_EVERY = timedelta(hours=48)
KEY_THRESHOLD = timedelta(hours=48)


def is_stale(moment: datetime | None, now: datetime, threshold: timedelta) -> bool:
    """Whether something last touched at ``moment`` is older than ``threshold``; an unknown
    moment is never stale."""
    return moment is not None and now - moment > threshold


@dataclass
class Schedule:
    """When each maintenance job last ran; a job is due a full period after that."""

    refreshed: datetime
    aliases_disposed: datetime
    keys_disposed: datetime

    @classmethod
    def starting(cls, now: datetime) -> Schedule:
        """A schedule whose jobs are first due one period after ``now``."""
        return cls(refreshed=now, aliases_disposed=now, keys_disposed=now)

    def refresh_due(self, now: datetime) -> bool:
        return now - self.refreshed >= REFRESH_ALIASES_EVERY

    def dispose_aliases_due(self, now: datetime) -> bool:
        return now - self.aliases_disposed >= DISPOSE_ALIASES_EVERY

    def dispose_keys_due(self, now: datetime) -> bool:
        return now - self.keys_disposed >= DISPOSE_KEYS_EVERY
