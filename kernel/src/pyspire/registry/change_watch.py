"""Refreshing the registry cache as soon as the datastore reports a change.

Servers sharing one database each keep their registry cache current from the change feed, on
a timer. A datastore that can tell when the feed grows
(:class:`~pyspire_sdk.plugins.datastore.ChangeWatchingDataStore`) shortens that wait: a change
made through another server then reaches this server's authorized entries within the
datastore's own latency instead of the refresh interval.
"""

from __future__ import annotations

__all__ = ["follow_changes"]

from pyspire.registry.cache import RegistryCache
from pyspire_sdk.plugins.datastore import ChangeWatchingDataStore


async def follow_changes(datastore: ChangeWatchingDataStore, registry: RegistryCache) -> None:
    """Poke ``registry`` each time ``datastore`` reports new change events, until cancelled.

    The first report comes at once when the feed holds any event; the poke that follows costs
    one read of the feed.
    """
    seen = 0
    while True:
        seen = await datastore.wait_for_change(seen)
        registry.poke()
