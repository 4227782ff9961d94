"""The registry cache's attested-node records and its lookup of entries by SPIFFE ID."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from pyspire.registry.cache import RegistryCache
from pyspire.server.context import ServerContext
from pyspire_sdk.model import AttestedNode, RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock

AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/test/a")


class Counting:
    """Counts get_attested_node calls on the way to a real datastore."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def get_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        self.reads += 1
        return await self.inner.get_attested_node(spiffe_id)  # type: ignore[attr-defined, no-any-return]


async def test_nodes_are_read_once_and_dropped_on_change_events(
    server_context: ServerContext, fake_clock: FakeClock
) -> None:
    datastore = Counting(server_context.datastore)
    cache = RegistryCache(datastore, server_context.trust_domain, fake_clock)  # type: ignore[arg-type]
    await cache.start()
    assert await cache.attested_node(AGENT) is None
    assert await cache.attested_node(AGENT) is None
    assert datastore.reads == 1

    node = await server_context.datastore.create_attested_node(
        AttestedNode(spiffe_id=AGENT, attestation_type="test", x509_svid_serial_number="1")
    )
    assert await cache.attested_node(AGENT) is None  # not refreshed yet
    await cache.refresh()
    assert await cache.attested_node(AGENT) == node
    assert datastore.reads == 2

    updated = dataclasses.replace(node, x509_svid_serial_number="2")
    cache.remember_node(updated)
    assert await cache.attested_node(AGENT) == updated
    assert datastore.reads == 2

    cache.forget_node(AGENT)
    assert await cache.attested_node(AGENT) == node
    assert datastore.reads == 3

    await cache.reload()
    assert await cache.attested_node(AGENT) == node
    assert datastore.reads == 4


async def test_privileged_entries_skip_expired_and_unprivileged_ones(
    server_context: ServerContext, fake_clock: FakeClock
) -> None:
    cache = server_context.registry
    target = SpiffeId.parse("spiffe://example.org/admin")
    for index, expires in enumerate((None, fake_clock.now() + timedelta(minutes=1))):
        await server_context.datastore.create_entry(
            RegistrationEntry(
                spiffe_id=target,
                parent_id=AGENT,
                selectors=(Selector("unix", f"uid:{index}"),),
                admin=True,
                expires_at=expires,
            )
        )
    await server_context.datastore.create_entry(
        RegistrationEntry(spiffe_id=target, parent_id=AGENT, selectors=(Selector("unix", "uid:2"),))
    )
    assert cache.privileged_entries(target) == ()
    await cache.refresh()
    assert len(cache.privileged_entries(target)) == 2
    assert all(entry.admin for entry in cache.privileged_entries(target))
    await fake_clock.advance(61)
    assert len(cache.privileged_entries(target)) == 1
    assert cache.privileged_entries(AGENT) == ()


async def test_a_node_remembered_at_attestation_stays_remembered_across_the_refresh(
    server_context: ServerContext, fake_clock: FakeClock
) -> None:
    datastore = Counting(server_context.datastore)
    cache = RegistryCache(datastore, server_context.trust_domain, fake_clock)  # type: ignore[arg-type]
    await cache.start()
    selectors = (Selector("test", "rack:7"),)
    node = await server_context.datastore.create_attested_node(
        AttestedNode(spiffe_id=AGENT, attestation_type="test", selectors=selectors)
    )
    cache.remember_node(node)
    await cache.refresh()  # applies the event of the write above: one read, by the refresh
    assert datastore.reads == 1
    assert cache.remembered_node(AGENT) == node
    assert await cache.attested_node(AGENT) == node
    assert datastore.reads == 1
    assert cache.index.node_selectors(AGENT) == frozenset(selectors)

    # A write the server did not remember (another server's ban) replaces the record.
    banned = await server_context.datastore.update_attested_node(
        dataclasses.replace(node, banned=True), frozenset({"banned"})
    )
    await cache.refresh()
    assert await cache.attested_node(AGENT) == banned
    assert datastore.reads == 2

    await server_context.datastore.delete_attested_node(AGENT)
    await cache.refresh()
    assert await cache.attested_node(AGENT) is None
    assert cache.index.node_selectors(AGENT) == frozenset()
    assert datastore.reads == 3
