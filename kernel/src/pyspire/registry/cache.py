"""The registry cache: the authorized-entries index kept current from the datastore's change feed.

The server answers agents from memory (no datastore round trip on the sync path). This module is
the adapter between the two: :meth:`RegistryCache.start` loads every entry and every node's
selectors once; :meth:`RegistryCache.refresh` reads the change events written since and re-reads
only the entries and nodes they name; :meth:`RegistryCache.run` refreshes on a fixed interval of
an injected clock, and sooner when :meth:`RegistryCache.poke` says the server itself just wrote
or :meth:`RegistryCache.hear` passes on a datastore's signal that another server wrote (a
:class:`~pyspire_sdk.plugins.datastore.WatchableDataStore`; a signal that notifications were lost
makes the next round a full reload).

Attested nodes are cached too, read-through: :meth:`RegistryCache.attested_node` reads a node
from the datastore the first time it is asked for and answers from memory afterwards. A change
event about a remembered node replaces its record with the one the refresh re-reads (so a node
the server just attested stays remembered across the refresh its own write triggers); a reload
drops every remembered record. The server's own writes
are applied at once with :meth:`RegistryCache.remember_node` / :meth:`RegistryCache.forget_node`,
so an agent banned or evicted through this server is refused on its very next call.

Correctness rests on the change-feed contract of
:class:`~pyspire_sdk.plugins.datastore.DataStore`: every write appends an event in the same
transaction, and an event becomes visible only after all events with lower ids. The cache reads
the last event id *before* the full load, so a write racing with the load is either already in
the snapshot or replayed afterwards; replaying is harmless because a refresh re-reads the current
state of each object instead of applying a diff.
"""

from __future__ import annotations

__all__ = ["RegistryCache"]

import asyncio
from collections.abc import Iterable
from datetime import timedelta
from functools import partial

import structlog

from pyspire.registry.authorized import AuthorizedEntriesIndex
from pyspire.tasks import all_of
from pyspire.waiting import sleep_or_wake
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError, PyspireError
from pyspire_sdk.model import AttestedNode, RegistrationEntry
from pyspire_sdk.plugins.datastore import ChangeEvent, ChangeKind, ChangeSignal, DataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

_FETCH_CONCURRENCY = 16
"""How many entries or nodes are read from the datastore at once during a refresh."""


class RegistryCache:
    """An :class:`AuthorizedEntriesIndex` that follows the datastore.

    Lookups (:meth:`authorized_entries`, :meth:`get_entry`) are synchronous and read only
    memory; they see the state as of the last completed :meth:`start` or :meth:`refresh`.
    Entries whose ``expires_at`` is earlier than ``clock.now()`` are never authorized.

    ``event_batch`` is how many change events are read per query. When one refresh finds more
    than ``reload_threshold`` changed objects, the cache reloads everything instead, which is
    cheaper than that many single reads.
    """

    def __init__(
        self,
        datastore: DataStore,
        trust_domain: TrustDomain,
        clock: Clock,
        *,
        event_batch: int = 1000,
        reload_threshold: int = 5000,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        if event_batch < 1:
            raise InvalidArgumentError(f"event_batch {event_batch} must be at least 1")
        if reload_threshold < 1:
            raise InvalidArgumentError(f"reload_threshold {reload_threshold} must be at least 1")
        self._datastore = datastore
        self._clock = clock
        self._event_batch = event_batch
        self._reload_threshold = reload_threshold
        self._logger: structlog.typing.FilteringBoundLogger = (
            logger if logger is not None else structlog.get_logger("pyspire.registry")
        )
        self._index = AuthorizedEntriesIndex(trust_domain)
        self._last_event_id = 0
        self._started = False
        self._lock = asyncio.Lock()
        self._poked = asyncio.Event()
        self._reload_wanted = False
        self._nodes: dict[SpiffeId, AttestedNode | None] = {}
        self._node_generation = 0
        self._privileged: dict[SpiffeId, tuple[RegistrationEntry, ...]] = {}
        self._privileged_revision = -1

    # -- reading ---------------------------------------------------------------------------

    @property
    def index(self) -> AuthorizedEntriesIndex:
        """The index itself (read it; change it only through this cache)."""
        return self._index

    @property
    def started(self) -> bool:
        """True once a full load has completed."""
        return self._started

    @property
    def last_event_id(self) -> int:
        """The id of the last change event the index reflects."""
        return self._last_event_id

    @property
    def revision(self) -> int:
        """The index's revision: it changes whenever a refresh changed something."""
        return self._index.revision

    def authorized_entries(self, agent_id: SpiffeId) -> tuple[RegistrationEntry, ...]:
        """The unexpired entries ``agent_id`` may hold (see :class:`AuthorizedEntriesIndex`)."""
        return self._index.authorized_entries(agent_id, self._clock.now())

    def get_entry(self, entry_id: str) -> RegistrationEntry | None:
        """The cached entry with this id, expired or not, or ``None``."""
        return self._index.get_entry(entry_id)

    def privileged_entries(self, spiffe_id: SpiffeId) -> tuple[RegistrationEntry, ...]:
        """The unexpired cached entries whose ``spiffe_id`` is ``spiffe_id`` and that make their
        holder an admin or a downstream server (for deciding what a caller may do).

        The lookup table is rebuilt from the index once per index revision, so repeated calls
        between changes cost a dictionary lookup; it holds only admin and downstream entries,
        a handful, where a table of every entry would cost a server of many agents a few
        kilobytes per agent and a walk of the whole registry after every change.
        """
        if self._privileged_revision != self._index.revision:
            table: dict[SpiffeId, list[RegistrationEntry]] = {}
            for entry in self._index.entries_by_id.values():
                if entry.admin or entry.downstream:
                    table.setdefault(entry.spiffe_id, []).append(entry)
            self._privileged = {key: tuple(value) for key, value in table.items()}
            self._privileged_revision = self._index.revision
        now = self._clock.now()
        return tuple(
            entry
            for entry in self._privileged.get(spiffe_id, ())
            if entry.expires_at is None or entry.expires_at > now
        )

    async def attested_node(self, agent_id: SpiffeId) -> AttestedNode | None:
        """The attested node ``agent_id`` (with its selectors), or ``None`` when there is none.

        Answered from memory when the node was read before and no change event about it has
        been applied since; otherwise read from the datastore and remembered. A read that races
        with a refresh is returned but not remembered, so a stale record is never kept.
        """
        if agent_id in self._nodes:
            return self._nodes[agent_id]
        generation = self._node_generation
        node = await self._datastore.get_attested_node(agent_id)
        if generation == self._node_generation:
            self._nodes[agent_id] = node
        return node

    def remembered_node(self, agent_id: SpiffeId) -> AttestedNode | None:
        """The record :meth:`attested_node` would answer from memory, or ``None`` when none is
        remembered (never reads the datastore). A check made against a record stays valid while
        this returns that very record: any change to the node replaces or drops it."""
        return self._nodes.get(agent_id)

    def remember_node(self, node: AttestedNode) -> None:
        """Record ``node`` as the current state of its agent (the server just wrote it)."""
        self._nodes[node.spiffe_id] = node
        self._node_generation += 1

    def forget_node(self, agent_id: SpiffeId) -> None:
        """Drop what is remembered about ``agent_id``; the next lookup reads the datastore."""
        self._nodes.pop(agent_id, None)
        self._node_generation += 1

    # -- keeping current -------------------------------------------------------------------

    async def start(self) -> None:
        """Load every entry and every node's selectors, replacing what the cache held."""
        async with self._lock:
            await self._reload()

    async def reload(self) -> None:
        """Rebuild from a full read, as :meth:`start` does (after events were pruned unread)."""
        await self.start()

    async def refresh(self) -> int:
        """Apply the change events written since the last load or refresh.

        Returns how many events were read. Each changed entry is re-read (and removed when it is
        gone), each changed node's selectors likewise. Before :meth:`start` this does a full
        load. A datastore error propagates; objects already re-read stay applied and the next
        refresh starts again from the same event, which is harmless since it re-reads state.
        """
        async with self._lock:
            if not self._started:
                await self._reload()
                return 0
            return await self._refresh()

    def poke(self) -> None:
        """Ask :meth:`run` to refresh now rather than at the end of its interval."""
        self._poked.set()

    def hear(self, signal: ChangeSignal) -> None:
        """Act on a datastore's change signal: ``CHANGED`` asks :meth:`run` to refresh now,
        ``RESYNC`` to reload in full now (notifications were lost, so events may have been
        pruned unread)."""
        if signal is ChangeSignal.RESYNC:
            self._reload_wanted = True
        self._poked.set()

    async def run(self, clock: Clock | None = None, interval: float | timedelta = 5.0) -> None:
        """Refresh every ``interval`` (seconds) of ``clock`` until cancelled.

        Starts the cache first when :meth:`start` has not run. A refresh that fails with a
        :class:`~pyspire_sdk.errors.PyspireError` (the datastore unavailable, say) is logged and
        retried at the next tick; any other exception ends the loop and propagates.
        """
        seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
        if seconds <= 0:
            raise InvalidArgumentError(f"interval {seconds}s must be positive")
        ticker = clock if clock is not None else self._clock
        if not self._started:
            await self.start()
        while True:
            await sleep_or_wake(ticker, seconds, self._poked)
            self._poked.clear()
            reload, self._reload_wanted = self._reload_wanted, False
            try:
                await (self.reload() if reload else self.refresh())
            except PyspireError as error:
                self._reload_wanted = self._reload_wanted or reload
                self._logger.warning(
                    "registry cache refresh failed",
                    error=str(error),
                    error_type=type(error).__name__,
                    last_event_id=self._last_event_id,
                )

    async def _reload(self) -> None:
        datastore = self._datastore
        # The event id first: anything written after it is replayed by the next refresh.
        last_event_id = await datastore.last_change_event_id()
        entries = await datastore.list_all_entries()
        node_selectors = await datastore.list_all_node_selectors()
        self._index.load(entries, node_selectors)
        self._nodes.clear()
        self._node_generation += 1
        self._last_event_id = last_event_id
        self._started = True
        self._logger.info(
            "registry cache loaded",
            entries=len(entries),
            nodes=len(node_selectors),
            last_event_id=last_event_id,
        )

    async def _refresh(self) -> int:
        events = await self._read_events()
        if not events:
            return 0
        entry_ids: dict[str, None] = {}
        node_ids: dict[str, None] = {}
        for event in events:
            if event.kind == ChangeKind.ENTRY:
                entry_ids[event.object_id] = None
            elif event.kind == ChangeKind.NODE:
                node_ids[event.object_id] = None
        if len(entry_ids) + len(node_ids) > self._reload_threshold:
            await self._reload()
            return len(events)
        await self._apply_entries(entry_ids)
        await self._apply_nodes(node_ids)
        self._last_event_id = events[-1].event_id
        self._logger.debug(
            "registry cache refreshed",
            events=len(events),
            entries_changed=len(entry_ids),
            nodes_changed=len(node_ids),
            last_event_id=self._last_event_id,
        )
        return len(events)

    async def _read_events(self) -> list[ChangeEvent]:
        events: list[ChangeEvent] = []
        after = self._last_event_id
        while True:
            batch = await self._datastore.list_change_events(after, self._event_batch)
            events.extend(batch)
            if len(batch) < self._event_batch:
                return events
            after = batch[-1].event_id

    async def _apply_entries(self, entry_ids: Iterable[str]) -> None:
        ids = list(entry_ids)
        get_entry = self._datastore.get_entry
        for start in range(0, len(ids), _FETCH_CONCURRENCY):
            chunk = ids[start : start + _FETCH_CONCURRENCY]
            found = await all_of([partial(get_entry, entry_id) for entry_id in chunk])
            for entry_id, entry in zip(chunk, found, strict=True):
                if entry is None:
                    self._index.remove_entry(entry_id)
                else:
                    self._index.upsert_entry(entry)

    async def _apply_nodes(self, node_ids: Iterable[str]) -> None:
        agents: list[SpiffeId] = []
        for object_id in node_ids:
            try:
                agents.append(SpiffeId.parse(object_id))
            except InvalidArgumentError as error:
                self._logger.warning(
                    "change event names an invalid node id", object_id=object_id, error=str(error)
                )
        # A node remembered here (this server just attested or renewed it, or the gate read
        # it) is re-read whole and stays remembered, so its agent's next call needs no read;
        # others are forgotten and only their selectors re-read.
        remembered = {agent_id: self._nodes.get(agent_id) for agent_id in agents}
        for agent_id, node in remembered.items():
            if node is None:
                self.forget_node(agent_id)
        for start in range(0, len(agents), _FETCH_CONCURRENCY):
            chunk = agents[start : start + _FETCH_CONCURRENCY]
            found = await all_of([partial(self._reread_node, a, remembered[a]) for a in chunk])
            for agent_id, selectors in zip(chunk, found, strict=True):
                self._index.set_node_selectors(agent_id, selectors)

    async def _reread_node(
        self, agent_id: SpiffeId, remembered: AttestedNode | None
    ) -> tuple[Selector, ...]:
        """The node's current selectors; a remembered node is replaced by its current record
        (dropped when it is gone), unless the server wrote it again during the read, in which
        case neither record is trusted and the next lookup reads the datastore."""
        if remembered is None:
            return await self._datastore.get_node_selectors(agent_id)
        node = await self._datastore.get_attested_node(agent_id)
        if self._nodes.get(agent_id) is remembered:
            self._nodes[agent_id] = node
        else:
            self.forget_node(agent_id)
        return node.selectors if node is not None else ()
