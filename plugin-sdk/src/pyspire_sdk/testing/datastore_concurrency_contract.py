"""The contract a datastore that several servers share must pass.

A datastore on a database server (``postgres``, ``mysql``) is one database for several pyspire
servers, each with its own plugin instance and connection pool. This suite opens two such
instances on one empty database and sends many callers through both at once: every
read-modify-write must have exactly the outcome one server alone would give, and the change
feed must never skip an event, however late its transaction commits.

Subclass :class:`DataStoreConcurrencyContract` in the plugin's tests and provide two fixtures:

- ``open_datastore``: an async function that opens one more configured datastore (a server of
  its own, with a pool of a few connections, 6 is plenty) on the test's shared, empty
  database; its host services are the ``host_services`` fixture's. The suite closes what it
  opens.
- ``open_held_datastore``: the same, but the datastore's write transactions, once they have
  appended their change events, wait at the given :class:`CommitGate` (``await gate.hold()``)
  before they commit; usually a subclass that overrides the plugin's own step::

      class _Held(MyDataStore):
          gate = CommitGate()

          async def _append_events(self, connection, events):
              await super()._append_events(connection, events)
              await self.gate.hold()

      class TestMyDataStoreConcurrency(DataStoreConcurrencyContract):
          @pytest.fixture
          def open_datastore(self, dsn, host_services):
              async def open_():
                  store = MyDataStore()
                  await store.configure(MyConfig(connection_string=dsn), host_services)
                  return store
              return open_

          @pytest.fixture
          def open_held_datastore(self, dsn, host_services):
              async def open_(gate):
                  store = _Held()
                  store.gate = gate
                  await store.configure(MyConfig(connection_string=dsn), host_services)
                  return store
              return open_

A datastore without a commit to hold leaves ``open_held_datastore`` out, and the test that
needs it is skipped, saying so.
"""

from __future__ import annotations

__all__ = ["CALLERS", "CommitGate", "DataStoreConcurrencyContract", "OpenDataStore"]

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace

import pytest
import pytest_asyncio

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import AlreadyExistsError, NotFoundError
from pyspire_sdk.model import AttestedNode, JoinToken, RegistrationEntry
from pyspire_sdk.plugins.datastore import DataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.fake_clock import FakeClock

CALLERS = 24
"""Callers at once in each test, spread over the two datastores."""

OpenDataStore = Callable[[], Awaitable[DataStore]]
"""What ``open_datastore`` returns: opens one more datastore on the shared database."""

_TD = TrustDomain("example.org")
_AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/x")


class CommitGate:
    """Holds write transactions after their change events are appended, before they commit,
    until :meth:`open`."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._opened = asyncio.Event()

    async def hold(self) -> None:
        """Called by the datastore right before it commits: wait until the gate opens."""
        self.reached.set()
        await self._opened.wait()

    def open(self) -> None:
        """Let every held transaction, and every later one, commit."""
        self._opened.set()


def _entry(path: str, **changes: object) -> RegistrationEntry:
    return replace(
        RegistrationEntry(
            spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
            parent_id=_AGENT,
            selectors=(Selector("unix", "uid:1000"),),
        ),
        **changes,  # type: ignore[arg-type]
    )


def _spread(servers: Sequence[DataStore], count: int = CALLERS) -> list[DataStore]:
    return [servers[i % len(servers)] for i in range(count)]


class DataStoreConcurrencyContract:
    """Tests every datastore that several servers share must pass; see the module
    documentation for the fixtures to provide."""

    @pytest.fixture
    def open_datastore(self) -> OpenDataStore:
        """Provided by the subclass (see the module documentation)."""
        raise NotImplementedError("the subclass provides the open_datastore fixture")

    @pytest.fixture
    def open_held_datastore(self) -> Callable[[CommitGate], Awaitable[DataStore]]:
        """Provided by the subclass when its datastore has a commit to hold."""
        pytest.skip("the datastore has no commit to hold (no open_held_datastore fixture)")

    @pytest_asyncio.fixture
    async def servers(
        self, open_datastore: OpenDataStore
    ) -> AsyncIterator[tuple[DataStore, DataStore]]:
        """Two datastores on one database, as two servers would have."""
        first = await open_datastore()
        try:
            second = await open_datastore()
        except BaseException:
            await first.close()
            raise
        yield first, second
        await first.close()
        await second.close()

    @pytest.mark.asyncio
    async def test_a_join_token_is_consumed_once_across_servers(
        self, servers: tuple[DataStore, DataStore], fake_clock: FakeClock
    ) -> None:
        first, _ = servers
        for round_ in range(3):
            token = f"token-{round_}"
            await first.create_join_token(JoinToken(token, fake_clock.now()))
            results = await asyncio.gather(
                *(store.consume_join_token(token) for store in _spread(servers)),
                return_exceptions=True,
            )
            assert sum(isinstance(result, JoinToken) for result in results) == 1
            assert all(isinstance(r, JoinToken | NotFoundError) for r in results), results

    @pytest.mark.asyncio
    async def test_entry_updates_each_get_their_own_revision(
        self, servers: tuple[DataStore, DataStore]
    ) -> None:
        first, second = servers
        entry = await first.create_entry(_entry("/w"))
        results = await asyncio.gather(
            *(
                store.update_entry(replace(entry, hint=f"h{i}"), frozenset({"hint"}))
                for i, store in enumerate(_spread(servers))
            )
        )
        assert sorted(result.revision_number for result in results) == list(range(1, CALLERS + 1))
        final = await second.get_entry(entry.id)
        assert final is not None
        assert final.revision_number == CALLERS
        assert final == max(results, key=lambda result: result.revision_number)

    @pytest.mark.asyncio
    async def test_one_of_many_identical_creates_wins(
        self, servers: tuple[DataStore, DataStore]
    ) -> None:
        results = await asyncio.gather(
            *(store.create_entry(_entry("/same")) for store in _spread(servers)),
            return_exceptions=True,
        )
        created = [result for result in results if isinstance(result, RegistrationEntry)]
        assert len(created) == 1
        assert all(isinstance(r, RegistrationEntry | AlreadyExistsError) for r in results), results
        found = await asyncio.gather(
            *(store.create_entry_if_not_exists(_entry("/same")) for store in _spread(servers))
        )
        assert {(entry.id, existed) for entry, existed in found} == {(created[0].id, True)}
        batches = await asyncio.gather(
            *(
                store.create_entries_if_not_exist([_entry("/batch-a"), _entry(f"/own-{i}")])
                for i, store in enumerate(_spread(servers))
            )
        )
        firsts = [batch[0] for batch in batches]
        assert all(isinstance(result, tuple) for result in firsts)
        assert sum(not result[1] for result in firsts if isinstance(result, tuple)) == 1
        assert len({result[0].id for result in firsts if isinstance(result, tuple)}) == 1
        assert await servers[1].count_entries() == 2 + CALLERS

    @pytest.mark.asyncio
    async def test_a_node_is_created_once_and_reattested_whole(
        self, servers: tuple[DataStore, DataStore]
    ) -> None:
        node = AttestedNode(spiffe_id=_AGENT, attestation_type="join_token")
        results = await asyncio.gather(
            *(store.create_attested_node(node) for store in _spread(servers)),
            return_exceptions=True,
        )
        assert sum(isinstance(result, AttestedNode) for result in results) == 1
        assert all(isinstance(r, AttestedNode | AlreadyExistsError) for r in results), results

        async def reattest(store: DataStore, i: int) -> None:
            selectors = (Selector("join_token", f"t{i}"), Selector("serial", f"s{i}"))
            await store.update_attested_node(
                replace(node, x509_svid_serial_number=f"s{i}", selectors=selectors),
                frozenset({"x509_svid_serial_number", "selectors"}),
            )

        await asyncio.gather(*(reattest(store, i) for i, store in enumerate(_spread(servers))))
        final = await servers[1].get_attested_node(_AGENT)
        assert final is not None
        serial = final.x509_svid_serial_number
        assert final.selectors == (
            Selector("join_token", f"t{serial[1:]}"),
            Selector("serial", serial),
        )

    @pytest.mark.asyncio
    async def test_bundle_appends_and_updates_lose_nothing(
        self, servers: tuple[DataStore, DataStore]
    ) -> None:
        await asyncio.gather(
            *(
                store.append_bundle(Bundle(_TD, jwt_authorities=(JwtAuthority(f"k{i}", b"key"),)))
                for i, store in enumerate(_spread(servers))
            )
        )
        bundle = await servers[1].get_bundle(_TD)
        assert bundle is not None
        assert {a.key_id for a in bundle.jwt_authorities} == {f"k{i}" for i in range(CALLERS)}
        assert bundle.sequence_number == CALLERS - 1

        other = TrustDomain("other.test")

        def adding(key_id: str) -> Callable[[Bundle | None], Bundle]:
            def mutate(current: Bundle | None) -> Bundle:
                base = current or Bundle(other)
                added = JwtAuthority(key_id, b"key")
                return base.with_changes(jwt_authorities=(*base.jwt_authorities, added))

            return mutate

        await asyncio.gather(
            *(
                store.update_bundle(other, adding(f"u{i}"))
                for i, store in enumerate(_spread(servers))
            )
        )
        updated = await servers[0].get_bundle(other)
        assert updated is not None
        assert {a.key_id for a in updated.jwt_authorities} == {f"u{i}" for i in range(CALLERS)}
        assert updated.sequence_number == CALLERS

    @pytest.mark.asyncio
    async def test_the_change_feed_misses_nothing_while_servers_write(
        self, servers: tuple[DataStore, DataStore]
    ) -> None:
        first, second = servers
        writes = 120
        seen: list[int] = []
        done = asyncio.Event()

        async def poll() -> None:
            after = 0
            while True:
                finished = done.is_set()
                for event in await first.list_change_events(after):
                    seen.append(event.event_id)
                    after = event.event_id
                if finished:
                    return
                await asyncio.sleep(0)

        async def write(store: DataStore, i: int) -> None:
            created = await store.create_entry(_entry(f"/feed-{i}"))
            await store.update_entry(replace(created, hint="x"), frozenset({"hint"}))

        poller = asyncio.create_task(poll())
        await asyncio.gather(*(write(store, i) for i, store in enumerate(_spread(servers, writes))))
        done.set()
        await poller
        assert seen == list(range(1, 2 * writes + 1))
        assert await second.last_change_event_id() == 2 * writes

    @pytest.mark.asyncio
    async def test_an_event_that_commits_late_is_not_skipped(
        self,
        open_datastore: OpenDataStore,
        open_held_datastore: Callable[[CommitGate], Awaitable[DataStore]],
    ) -> None:
        gate = CommitGate()
        slow = await open_held_datastore(gate)
        try:
            fast = await open_datastore()
        except BaseException:
            gate.open()
            await slow.close()
            raise
        try:
            late = asyncio.create_task(slow.create_entry(_entry("/late")))
            await asyncio.wait_for(gate.reached.wait(), timeout=10)
            early = asyncio.create_task(fast.create_entry(_entry("/early")))
            # The reader polls meanwhile: whatever it sees must never lead past an event that
            # is still to commit.
            seen: list[int] = []
            for _ in range(20):
                after = max(seen or [0])
                seen += [event.event_id for event in await fast.list_change_events(after)]
                await asyncio.sleep(0.01)
            assert seen == []
            assert not early.done()
            gate.open()
            late_entry, early_entry = await asyncio.gather(late, early)
            events = await fast.list_change_events()
            assert [(e.event_id, e.object_id) for e in events] == [
                (1, late_entry.id),
                (2, early_entry.id),
            ]
        finally:
            gate.open()
            await slow.close()
            await fast.close()
