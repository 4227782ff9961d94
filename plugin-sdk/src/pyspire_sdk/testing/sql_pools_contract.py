"""The contract of a SQL datastore's connection pools, the settings SPIRE's ``sql`` plugin has.

A datastore on a database server keeps a pool per connection string with Go's
``database/sql`` semantics (:mod:`pyspire_sdk.sql_settings` names the keys): reads that tolerate
lag go to ``ro_connection_string``'s replica, whose sessions are read-only; a connection is not
reused past ``conn_max_lifetime`` on the host clock; a cancelled call leaves the pool usable and
the database whole; a closed datastore refuses calls as unavailable.

Subclass :class:`SqlPoolsContract` in the plugin's tests and provide three fixtures (in the
class or in a ``conftest.py``):

- ``open_with_settings``: an async function ``(connection_string=None, **settings)`` that
  opens and configures the plugin's datastore on the test's empty database (or on
  ``connection_string``), with the given settings over ``max_open_conns=2, max_idle_conns=1``,
  on the ``host_services`` fixture; the test closes it. :func:`opener` makes one.
- ``replica_connection_string``: a second empty database standing in for a replica.
- ``session_probe``: a :class:`SessionProbe` that asks a datastore's own connections what the
  database says about their session.
"""

from __future__ import annotations

__all__ = [
    "SAMPLE_ENTRY",
    "OpenWithSettings",
    "SessionProbe",
    "SqlPoolsContract",
    "opened",
    "opener",
]

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol

import pytest

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.model import AttestedNode, RegistrationEntry
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import DataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.fake_clock import FakeClock

SAMPLE_ENTRY = RegistrationEntry(
    spiffe_id=SpiffeId.parse("spiffe://example.org/workload"),
    parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/x"),
    selectors=(Selector("unix", "uid:1000"),),
)
"""A registration entry for a SQL datastore's tests to write: a workload under an agent."""

_SMALL_POOLS: dict[str, Any] = {"max_open_conns": 2, "max_idle_conns": 1}
"""The pool settings a test opens a datastore with unless it says otherwise."""


class OpenWithSettings(Protocol):
    """What ``open_with_settings`` returns (see the module documentation)."""

    async def __call__(self, connection_string: str | None = None, **settings: Any) -> Any:
        """A configured datastore of the plugin's own type."""


def opener(
    store_type: Callable[[], Any],
    config_type: Callable[..., Any],
    test_database: str,
    host_services: HostServices,
) -> OpenWithSettings:
    """An ``open_with_settings`` for a plugin: a new ``store_type()`` configured with
    ``config_type(connection_string=..., **settings)`` (``test_database`` unless another is
    given), small pools unless the settings say otherwise, on ``host_services``."""

    async def open_(connection_string: str | None = None, **changes: Any) -> Any:
        settings: dict[str, Any] = {**_SMALL_POOLS, **changes}
        store = store_type()
        config = config_type(connection_string=connection_string or test_database, **settings)
        await store.configure(config, host_services)
        return store

    return open_


@asynccontextmanager
async def opened(
    store_type: Callable[[], Any],
    config_type: Callable[..., Any],
    connection_string: str,
    host_services: HostServices,
    **settings: Any,
) -> AsyncIterator[Any]:
    """The plugin's datastore opened as :func:`opener` opens it (on ``connection_string``,
    small pools unless ``settings`` say otherwise), closed when the block ends, also when
    opening fails half way."""
    store = store_type()
    try:
        pools: dict[str, Any] = {**_SMALL_POOLS, **settings}
        await store.configure(
            config_type(connection_string=connection_string, **pools), host_services
        )
        yield store
    finally:
        await store.close()


class SessionProbe(Protocol):
    """Questions about a datastore's pooled connections, in the database's own SQL."""

    async def replica_session_is_read_only(self, store: Any) -> bool:
        """Whether a connection of ``store``'s replica pool runs a read-only session."""

    async def session_id(self, store: Any) -> int:
        """The server's id of the session behind a connection of ``store``'s primary pool."""


class SqlPoolsContract:
    """Tests every datastore with SPIRE's ``sql`` pool settings must pass; see the module
    documentation for the fixtures to provide."""

    @pytest.mark.asyncio
    async def test_lag_tolerant_reads_go_to_the_replica(
        self,
        open_with_settings: OpenWithSettings,
        replica_connection_string: str,
        session_probe: SessionProbe,
    ) -> None:
        replica: DataStore = await open_with_settings(replica_connection_string)
        lagging = await replica.create_entry(replace(SAMPLE_ENTRY, hint="replica"))
        await replica.create_bundle(
            Bundle(TrustDomain("replica.test"), jwt_authorities=(JwtAuthority("k", b"k"),))
        )
        await replica.close()
        store = await open_with_settings(ro_connection_string=replica_connection_string)
        try:
            created = await store.create_entry(SAMPLE_ENTRY)
            await store.create_attested_node(
                AttestedNode(spiffe_id=SAMPLE_ENTRY.parent_id, attestation_type="t")
            )
            assert (await store.list_entries()).entries == (lagging,)
            assert await store.count_entries() == 1
            assert (await store.list_attested_nodes()).nodes == ()
            assert await store.count_attested_nodes() == 0
            assert [b.trust_domain.name for b in (await store.list_bundles()).bundles] == [
                "replica.test"
            ]
            assert await store.count_bundles() == 1
            assert (await store.list_federation_relationships()).relationships == ()
            # What the registry cache relies on reads the primary.
            assert await store.list_all_entries() == [created]
            assert await store.get_entry(created.id) == created
            assert await store.get_entry(lagging.id) is None
            assert (await store.list_change_events())[0].object_id == created.id
            assert await store.get_attested_node(SAMPLE_ENTRY.parent_id) is not None
            assert await session_probe.replica_session_is_read_only(store)
        finally:
            await store.close()

    @pytest.mark.asyncio
    async def test_connections_are_replaced_after_their_lifetime(
        self,
        open_with_settings: OpenWithSettings,
        session_probe: SessionProbe,
        fake_clock: FakeClock,
    ) -> None:
        store = await open_with_settings(conn_max_lifetime=timedelta(hours=1), max_open_conns=1)
        try:
            first = await session_probe.session_id(store)
            assert await session_probe.session_id(store) == first
            await fake_clock.advance(timedelta(minutes=59))
            assert await session_probe.session_id(store) == first
            await fake_clock.advance(timedelta(minutes=1))
            await session_probe.session_id(store)  # released past its lifetime: closed
            replaced = await session_probe.session_id(store)
            assert replaced != first
            assert await session_probe.session_id(store) == replaced
        finally:
            await store.close()

    @pytest.mark.asyncio
    @pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 8])
    async def test_cancelled_calls_leave_the_pool_usable(
        self, open_with_settings: OpenWithSettings, yields: int
    ) -> None:
        store: DataStore = await open_with_settings()
        try:
            await store.create_entry(SAMPLE_ENTRY)
            for attempt in range(4):
                tasks = [
                    asyncio.create_task(store.list_all_entries()),
                    asyncio.create_task(store.get_entry("x")),
                    asyncio.create_task(
                        store.create_entry(
                            RegistrationEntry(
                                spiffe_id=SpiffeId.parse(
                                    f"spiffe://example.org/c{yields}-{attempt}"
                                ),
                                parent_id=SAMPLE_ENTRY.parent_id,
                                selectors=(Selector("a", "1"), Selector("b", "2")),
                            )
                        )
                    ),
                ]
                for _ in range(yields):
                    await asyncio.sleep(0)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            entries = await asyncio.wait_for(store.list_all_entries(), timeout=10)
            assert await store.count_entries() == len(entries)
            for entry in entries:
                assert len(entry.selectors) == (1 if entry.id == entries[0].id else 2)
            events = await store.list_change_events()
            assert [e.event_id for e in events] == list(range(1, len(entries) + 1))
        finally:
            await store.close()

    @pytest.mark.asyncio
    async def test_a_closed_store_is_unavailable(
        self, open_with_settings: OpenWithSettings
    ) -> None:
        store: DataStore = await open_with_settings()
        await store.close()
        await store.close()
        with pytest.raises(UnavailableError):
            await store.create_entry(SAMPLE_ENTRY)
        with pytest.raises(UnavailableError):
            await store.get_entry("x")
