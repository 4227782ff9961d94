"""Two servers (two plugin instances, two pools) on one database, many callers at once: every
read-modify-write has exactly the outcome one server alone would give, and the change feed
never skips an event, however late its transaction commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.session import Transaction, fetch

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import AlreadyExistsError, NotFoundError, UnavailableError
from pyspire_sdk.model import AttestedNode, JoinToken, RegistrationEntry
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import ChangeKind
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

pytestmark = pytest.mark.mysql

CALLERS = 24
TD = TrustDomain("example.org")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/x")


def _entry(path: str, **changes: object) -> RegistrationEntry:
    return replace(
        RegistrationEntry(
            spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
            parent_id=AGENT,
            selectors=(Selector("unix", "uid:1000"),),
        ),
        **changes,  # type: ignore[arg-type]
    )


async def _open(dsn: str, host_services: HostServices, **changes: object) -> MysqlDataStore:
    store = MysqlDataStore()
    await store.configure(
        MysqlDataStoreConfig(
            connection_string=dsn,
            max_open_conns=6,
            max_idle_conns=1,
            **changes,  # type: ignore[arg-type]
        ),
        host_services,
    )
    return store


@pytest.fixture
async def servers(
    mysql_dsn: str, host_services: HostServices
) -> AsyncIterator[tuple[MysqlDataStore, MysqlDataStore]]:
    first = await _open(mysql_dsn, host_services)
    second = await _open(mysql_dsn, host_services)
    yield first, second
    await first.close()
    await second.close()


def _spread(servers: Sequence[MysqlDataStore], count: int = CALLERS) -> list[MysqlDataStore]:
    return [servers[i % len(servers)] for i in range(count)]


async def test_a_join_token_is_consumed_once_across_servers(
    servers: tuple[MysqlDataStore, MysqlDataStore], host_services: HostServices
) -> None:
    first, _ = servers
    for round_ in range(3):
        token = f"token-{round_}"
        await first.create_join_token(JoinToken(token, host_services.clock.now()))
        results = await asyncio.gather(
            *(store.consume_join_token(token) for store in _spread(servers)),
            return_exceptions=True,
        )
        assert sum(isinstance(result, JoinToken) for result in results) == 1
        assert all(isinstance(result, JoinToken | NotFoundError) for result in results), results


async def test_entry_updates_each_get_their_own_revision(
    servers: tuple[MysqlDataStore, MysqlDataStore],
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
    assert final is not None and final.revision_number == CALLERS
    last = max(results, key=lambda result: result.revision_number)
    assert final == last


async def test_one_of_many_identical_creates_wins(
    servers: tuple[MysqlDataStore, MysqlDataStore],
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


async def test_a_node_is_created_once_and_reattested_whole(
    servers: tuple[MysqlDataStore, MysqlDataStore],
) -> None:
    node = AttestedNode(spiffe_id=AGENT, attestation_type="join_token")
    results = await asyncio.gather(
        *(store.create_attested_node(node) for store in _spread(servers)),
        return_exceptions=True,
    )
    assert sum(isinstance(result, AttestedNode) for result in results) == 1
    assert all(isinstance(r, AttestedNode | AlreadyExistsError) for r in results), results

    async def reattest(store: MysqlDataStore, i: int) -> None:
        selectors = (Selector("join_token", f"t{i}"), Selector("serial", f"s{i}"))
        await store.update_attested_node(
            replace(node, x509_svid_serial_number=f"s{i}", selectors=selectors),
            frozenset({"x509_svid_serial_number", "selectors"}),
        )

    await asyncio.gather(*(reattest(store, i) for i, store in enumerate(_spread(servers))))
    final = await servers[1].get_attested_node(AGENT)
    assert final is not None
    serial = final.x509_svid_serial_number
    assert final.selectors == (
        Selector("join_token", f"t{serial[1:]}"),
        Selector("serial", serial),
    )


async def test_bundle_appends_and_updates_lose_nothing(
    servers: tuple[MysqlDataStore, MysqlDataStore],
) -> None:
    await asyncio.gather(
        *(
            store.append_bundle(Bundle(TD, jwt_authorities=(JwtAuthority(f"k{i}", b"key"),)))
            for i, store in enumerate(_spread(servers))
        )
    )
    bundle = await servers[1].get_bundle(TD)
    assert bundle is not None
    assert {a.key_id for a in bundle.jwt_authorities} == {f"k{i}" for i in range(CALLERS)}
    assert bundle.sequence_number == CALLERS - 1

    other = TrustDomain("other.test")

    def adding(key_id: str):  # type: ignore[no-untyped-def]
        def mutate(current: Bundle | None) -> Bundle:
            base = current or Bundle(other)
            added = JwtAuthority(key_id, b"key")
            return base.with_changes(jwt_authorities=(*base.jwt_authorities, added))

        return mutate

    await asyncio.gather(
        *(store.update_bundle(other, adding(f"u{i}")) for i, store in enumerate(_spread(servers)))
    )
    updated = await servers[0].get_bundle(other)
    assert updated is not None
    assert {a.key_id for a in updated.jwt_authorities} == {f"u{i}" for i in range(CALLERS)}
    assert updated.sequence_number == CALLERS


async def test_the_change_feed_misses_nothing_while_servers_write(
    servers: tuple[MysqlDataStore, MysqlDataStore],
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

    async def write(store: MysqlDataStore, i: int) -> None:
        created = await store.create_entry(_entry(f"/feed-{i}"))
        await store.update_entry(replace(created, hint="x"), frozenset({"hint"}))

    poller = asyncio.create_task(poll())
    await asyncio.gather(*(write(store, i) for i, store in enumerate(_spread(servers, writes))))
    done.set()
    await poller
    assert seen == list(range(1, 2 * writes + 1))
    assert await second.last_change_event_id() == 2 * writes


class _PausesBeforeCommit(MysqlDataStore):
    """Holds its transaction open after appending its change events, until told to go on."""

    def __init__(self) -> None:
        super().__init__()
        self.appended = asyncio.Event()
        self.proceed = asyncio.Event()

    async def _append_events(self, connection: Any, events: Sequence[tuple[str, str]]) -> None:
        await super()._append_events(connection, events)
        self.appended.set()
        await self.proceed.wait()


async def test_an_event_that_commits_late_is_not_skipped(
    mysql_dsn: str, host_services: HostServices
) -> None:
    slow = _PausesBeforeCommit()
    await slow.configure(
        MysqlDataStoreConfig(connection_string=mysql_dsn, max_open_conns=2), host_services
    )
    fast = await _open(mysql_dsn, host_services)
    try:
        late = asyncio.create_task(slow.create_entry(_entry("/late")))
        await asyncio.wait_for(slow.appended.wait(), timeout=10)
        early = asyncio.create_task(fast.create_entry(_entry("/early")))
        # The reader polls meanwhile: whatever it sees must never lead past an event that is
        # still to commit.
        seen: list[int] = []
        for _ in range(20):
            seen += [event.event_id for event in await fast.list_change_events(max(seen or [0]))]
            await asyncio.sleep(0.01)
        assert seen == []
        assert not early.done()
        slow.proceed.set()
        late_entry, early_entry = await asyncio.gather(late, early)
        events = await fast.list_change_events()
        assert [(e.event_id, e.object_id) for e in events] == [
            (1, late_entry.id),
            (2, early_entry.id),
        ]
    finally:
        slow.proceed.set()
        await slow.close()
        await fast.close()


async def test_a_statement_over_its_timeout_is_unavailable(
    mysql_dsn: str, host_services: HostServices
) -> None:
    store = await _open(mysql_dsn, host_services, statement_timeout=timedelta(milliseconds=50))
    try:
        with pytest.raises(UnavailableError, match="statement timeout"):
            async with store._read() as connection:
                await fetch(connection, "SELECT SLEEP(2)")
        assert await store.count_entries() == 0
    finally:
        await store.close()


async def test_a_deadlock_victim_runs_again_whole(
    servers: tuple[MysqlDataStore, MysqlDataStore],
) -> None:
    first, second = servers
    both_hold_one = asyncio.Barrier(2)
    runs = {"first": 0, "second": 0}

    def crossing(store: MysqlDataStore, name: str, locks: tuple[str, str]) -> Any:
        async def work(transaction: Transaction) -> str:
            runs[name] += 1
            await store._lock(transaction.connection, "test", locks[0])
            if runs[name] == 1:
                await both_hold_one.wait()
            await store._lock(transaction.connection, "test", locks[1])
            transaction.event(ChangeKind.NODE, [f"spiffe://example.org/{name}"])
            return name

        return work

    done = await asyncio.wait_for(
        asyncio.gather(
            first._transact(crossing(first, "first", ("a", "b"))),
            second._transact(crossing(second, "second", ("b", "a"))),
        ),
        timeout=30,
    )
    assert done == ["first", "second"]
    assert sorted(runs.values()) == [1, 2]  # InnoDB rolled one back; it ran again
    events = await first.list_change_events()
    assert sorted(event.object_id for event in events) == [
        "spiffe://example.org/first",
        "spiffe://example.org/second",
    ]
    assert [event.event_id for event in events] == [1, 2]
