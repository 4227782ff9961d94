"""The pools: the read-only replica's share of the reads, connection lifetimes, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.session import fetch
from pyspire_datastore_mysql.testing import throwaway_database

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.model import AttestedNode, RegistrationEntry
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.fake_clock import FakeClock

pytestmark = pytest.mark.mysql

ENTRY = RegistrationEntry(
    spiffe_id=SpiffeId.parse("spiffe://example.org/workload"),
    parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/x"),
    selectors=(Selector("unix", "uid:1000"),),
)


async def _open(host_services: HostServices, dsn: str, **changes: object) -> MysqlDataStore:
    settings: dict[str, object] = {"max_open_conns": 2, "max_idle_conns": 1, **changes}
    store = MysqlDataStore()
    await store.configure(
        MysqlDataStoreConfig(connection_string=dsn, **settings),  # type: ignore[arg-type]
        host_services,
    )
    return store


@pytest.fixture
async def replica_dsn(mysql_server: str) -> AsyncIterator[str]:
    """A second database standing in for a replica that lags: it holds other data."""
    async with throwaway_database(mysql_server, prefix="pyspire_replica") as dsn:
        yield dsn


async def test_lag_tolerant_reads_go_to_the_replica(
    mysql_dsn: str, replica_dsn: str, host_services: HostServices
) -> None:
    replica = await _open(host_services, replica_dsn)
    lagging = await replica.create_entry(replace(ENTRY, hint="replica"))
    await replica.create_bundle(
        Bundle(TrustDomain("replica.test"), jwt_authorities=(JwtAuthority("k", b"k"),))
    )
    await replica.close()
    store = await _open(host_services, mysql_dsn, ro_connection_string=replica_dsn)
    try:
        created = await store.create_entry(ENTRY)
        await store.create_attested_node(
            AttestedNode(spiffe_id=ENTRY.parent_id, attestation_type="t")
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
        assert await store.get_attested_node(ENTRY.parent_id) is not None
        async with store._connection(replica=True) as connection:
            assert await fetch(connection, "SELECT @@SESSION.tx_read_only") == [(1,)]
    finally:
        await store.close()


async def test_connections_are_replaced_after_their_lifetime(
    mysql_dsn: str, host_services: HostServices, fake_clock: FakeClock
) -> None:
    store = await _open(
        host_services, mysql_dsn, conn_max_lifetime=timedelta(hours=1), max_open_conns=1
    )
    try:

        async def backend() -> int:
            async with store._connection() as connection:
                return int((await fetch(connection, "SELECT CONNECTION_ID()"))[0][0])

        first = await backend()
        assert await backend() == first
        await fake_clock.advance(timedelta(minutes=59))
        assert await backend() == first
        await fake_clock.advance(timedelta(minutes=1))
        await backend()  # released past its lifetime: closed
        replaced = await backend()
        assert replaced != first
        assert await backend() == replaced
    finally:
        await store.close()


@pytest.mark.parametrize("yields", [0, 2, 5])
async def test_cancelled_calls_leave_the_pool_usable(
    mysql_dsn: str, host_services: HostServices, yields: int
) -> None:
    store = await _open(host_services, mysql_dsn)
    try:
        await store.create_entry(ENTRY)
        for attempt in range(4):
            tasks = [
                asyncio.create_task(store.list_all_entries()),
                asyncio.create_task(store.get_entry("x")),
                asyncio.create_task(
                    store.create_entry(
                        RegistrationEntry(
                            spiffe_id=SpiffeId.parse(f"spiffe://example.org/c{yields}-{attempt}"),
                            parent_id=ENTRY.parent_id,
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


async def test_a_closed_store_is_unavailable(mysql_dsn: str, host_services: HostServices) -> None:
    store = await _open(host_services, mysql_dsn)
    await store.close()
    await store.close()
    with pytest.raises(UnavailableError):
        await store.create_entry(ENTRY)
    with pytest.raises(UnavailableError):
        await store.get_entry("x")
