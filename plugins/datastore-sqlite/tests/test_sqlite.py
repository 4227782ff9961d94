"""What the ``sqlite`` datastore promises beyond the contract: files, schema, configuration."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy
import pytest
from pyspire_datastore_sqlite import (
    SCHEMA_VERSION,
    SchemaTooNewError,
    SqliteDataStore,
    SqliteDataStoreConfig,
)
from pyspire_datastore_sqlite import plugin as plugin_module
from pyspire_datastore_sqlite.queries import entry_where
from structlog.testing import capture_logs

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import (
    AlreadyExistsError,
    ConfigError,
    InvalidArgumentError,
    NotFoundError,
    PluginError,
    UnavailableError,
)
from pyspire_sdk.model import AttestedNode, JoinToken, RegistrationEntry
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, PROJECT_NAME, HostServices
from pyspire_sdk.plugins import datastore as datastore_spec
from pyspire_sdk.plugins.datastore import (
    DataStore,
    EntryFilter,
    FederatesWithMatch,
    MatchBehavior,
    Page,
    SelectorMatch,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.readme import assert_readme_documents

ENTRY = RegistrationEntry(
    spiffe_id=SpiffeId.parse("spiffe://example.org/workload"),
    parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/x"),
    selectors=(Selector("unix", "uid:1000"),),
)


async def _open(path: Path, host_services: HostServices) -> SqliteDataStore:
    store = SqliteDataStore()
    try:
        await store.configure(SqliteDataStoreConfig(database_path=path), host_services)
    except BaseException:
        await store.close()
        raise
    return store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _schema_version(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT version FROM schema_version").fetchone()[0])


async def test_creates_a_private_database_in_a_private_directory(
    tmp_path: Path, host_services: HostServices
) -> None:
    path = tmp_path / "state" / "nested" / "ds.sqlite3"
    store = await _open(path, host_services)
    try:
        await store.create_entry(ENTRY)
        assert _mode(path) == 0o600
        assert _mode(path.parent) == 0o700
        assert _mode(path.parent.parent) == 0o700
        for companion in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert companion.exists()
            assert _mode(companion) & 0o077 == 0
    finally:
        await store.close()


async def test_default_path_is_in_the_data_dir(tmp_path: Path, host_services: HostServices) -> None:
    store = SqliteDataStore()
    await store.configure(SqliteDataStoreConfig(), host_services)
    await store.close()
    assert (host_services.data_dir / "datastore.sqlite3").exists()
    assert _schema_version(host_services.data_dir / "datastore.sqlite3") == SCHEMA_VERSION


async def test_migrates_an_empty_file(tmp_path: Path, host_services: HostServices) -> None:
    path = tmp_path / "empty.sqlite3"
    path.touch(mode=0o644)
    store = await _open(path, host_services)
    try:
        assert await store.count_entries() == 0
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        assert {
            "schema_version",
            "entries",
            "entry_selectors",
            "entry_dns_names",
            "entry_federates_with",
            "attested_nodes",
            "node_selectors",
            "join_tokens",
            "bundles",
            "ca_journals",
            "federation_relationships",
            "change_events",
        } <= tables
        assert _schema_version(path) == SCHEMA_VERSION
        assert _mode(path) == 0o600
    finally:
        await store.close()


async def test_refuses_a_newer_schema_and_leaves_it_alone(
    tmp_path: Path, host_services: HostServices
) -> None:
    path = tmp_path / "newer.sqlite3"
    store = await _open(path, host_services)
    await store.create_entry(ENTRY)
    await store.close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNewError) as raised:
        await _open(path, host_services)
    message = str(raised.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert str(path) in message
    assert isinstance(raised.value, PluginError)
    assert _schema_version(path) == SCHEMA_VERSION + 1
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 1


async def test_reopening_keeps_everything(tmp_path: Path, host_services: HostServices) -> None:
    path = tmp_path / "ds.sqlite3"
    store = await _open(path, host_services)
    entry = await store.create_entry(ENTRY)
    node = await store.create_attested_node(
        AttestedNode(
            spiffe_id=SpiffeId.parse("spiffe://example.org/spire/agent/x"),
            attestation_type="join_token",
            selectors=(Selector("join_token", "abc"),),
        )
    )
    token = await store.create_join_token(JoinToken("t", host_services.clock.now()))
    bundle = await store.create_bundle(
        Bundle(TrustDomain("example.org"), jwt_authorities=(JwtAuthority("k", b"pk"),))
    )
    await store.set_ca_journal("journal", b"blob")
    last_event = await store.last_change_event_id()
    await store.close()

    reopened = await _open(path, host_services)
    try:
        assert await reopened.get_entry(entry.id) == entry
        assert await reopened.get_attested_node(node.spiffe_id) == node
        assert await reopened.fetch_join_token("t") == token
        assert await reopened.get_bundle(TrustDomain("example.org")) == bundle
        assert await reopened.get_ca_journal("journal") == b"blob"
        assert await reopened.last_change_event_id() == last_event
        assert _schema_version(path) == SCHEMA_VERSION
    finally:
        await reopened.close()


async def test_unusable_path_is_a_plugin_error(tmp_path: Path, host_services: HostServices) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PluginError, match="database_path"):
        await _open(blocker / "ds.sqlite3", host_services)


async def test_not_a_database_is_a_plugin_error(
    tmp_path: Path, host_services: HostServices
) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not an sqlite database, not even close" * 100)
    with pytest.raises(PluginError, match="database_path"):
        await _open(path, host_services)


async def test_closed_store_is_unavailable(tmp_path: Path, host_services: HostServices) -> None:
    store = await _open(tmp_path / "ds.sqlite3", host_services)
    await store.close()
    await store.close()
    with pytest.raises(UnavailableError):
        await store.create_entry(ENTRY)
    with pytest.raises(UnavailableError):
        await store.get_entry("x")


async def test_a_second_configure_is_refused(tmp_path: Path, host_services: HostServices) -> None:
    store = await _open(tmp_path / "ds.sqlite3", host_services)
    try:
        with pytest.raises(PluginError):
            await store.configure(SqliteDataStoreConfig(), host_services)
    finally:
        await store.close()


async def test_is_a_datastore(tmp_path: Path, host_services: HostServices) -> None:
    store = await _open(tmp_path / "ds.sqlite3", host_services)
    try:
        assert isinstance(store, DataStore)
    finally:
        await store.close()


def test_config_loads_from_toml_values(tmp_path: Path) -> None:
    config = load_config(
        SqliteDataStoreConfig,
        {"database_path": str(tmp_path / "x.db"), "read_connections": 3, "busy_timeout": "10s"},
    )
    assert config == SqliteDataStoreConfig(
        database_path=tmp_path / "x.db", read_connections=3, busy_timeout=timedelta(seconds=10)
    )
    assert load_config(SqliteDataStoreConfig, {}) == SqliteDataStoreConfig()


def test_config_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(
            SqliteDataStoreConfig,
            {"read_connections": 0, "bogus": 1},
            path="server.plugins.datastore.sqlite",
        )
    paths = {issue.path for issue in raised.value.issues}
    assert paths == {"server.plugins.datastore.sqlite.bogus"}
    with pytest.raises(ConfigError) as raised:
        load_config(SqliteDataStoreConfig, {"read_connections": 0}, path="ds")
    assert [issue.path for issue in raised.value.issues] == ["ds.read_connections"]


def test_readme_documents_every_setting() -> None:
    assert_readme_documents(Path(__file__).parent.parent / "README.md", SqliteDataStoreConfig)


def test_registers_through_the_entry_point() -> None:
    names = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert names.get("sqlite") == "pyspire_datastore_sqlite.plugin"
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(datastore_spec)
    manager.register(plugin_module)
    registrations = [r for group in manager.hook.pyspire_datastores() for r in group]
    assert [r.name for r in registrations] == ["sqlite"]
    assert registrations[0].config_type is SqliteDataStoreConfig
    assert isinstance(registrations[0].factory(), SqliteDataStore)


@pytest.mark.parametrize(
    ("entry_filter", "index"),
    [
        (EntryFilter(by_spiffe_id=ENTRY.spiffe_id), "sqlite_autoindex_entries"),
        (EntryFilter(by_parent_id=ENTRY.parent_id), "entries_by_parent_id"),
        (EntryFilter(by_hint="h"), "entries_by_hint"),
        (EntryFilter(by_downstream=True), "entries_by_downstream"),
        (
            EntryFilter(by_selectors=SelectorMatch(ENTRY.selectors, MatchBehavior.SUBSET)),
            "entry_selectors_by_selector",
        ),
        (
            EntryFilter(
                by_federates_with=FederatesWithMatch(
                    (TrustDomain("a.test"),), MatchBehavior.SUPERSET
                )
            ),
            "entry_federates_with_by_trust_domain",
        ),
    ],
)
async def test_entry_filters_use_an_index(
    tmp_path: Path, host_services: HostServices, entry_filter: EntryFilter, index: str
) -> None:
    path = tmp_path / "ds.sqlite3"
    store = await _open(path, host_services)
    await store.close()
    where, params = entry_where(entry_filter)
    with sqlite3.connect(path) as connection:
        plan = " | ".join(
            row[3]
            for row in connection.execute(
                f"EXPLAIN QUERY PLAN SELECT pk FROM entries AS e WHERE {where}",  # noqa: S608
                params,
            )
        )
    assert index in plan, plan


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 8])
async def test_cancelled_calls_leave_connections_usable(
    tmp_path: Path, host_services: HostServices, yields: int
) -> None:
    store = await _open(tmp_path / "ds.sqlite3", host_services)
    try:
        await store.create_entry(ENTRY)
        for attempt in range(6):
            tasks = [
                asyncio.create_task(store.list_all_entries()),
                asyncio.create_task(store.get_entry("x")),
                asyncio.create_task(store.count_entries()),
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
        assert await asyncio.wait_for(store.count_entries(), timeout=10) == len(entries)
        for entry in entries:
            assert len(entry.selectors) == (1 if entry.id == entries[0].id else 2)
        await asyncio.wait_for(
            store.create_entry(
                replace(ENTRY, spiffe_id=SpiffeId.parse("spiffe://example.org/after"))
            ),
            timeout=10,
        )
    finally:
        await store.close()


async def test_a_read_cancelled_while_ending_returns_its_connection(
    tmp_path: Path, host_services: HostServices
) -> None:
    store = await _open(tmp_path / "ds.sqlite3", host_services)
    try:
        ending = asyncio.Event()
        for reader in store._readers:
            finish = reader.rollback

            async def slow_rollback(finish: Callable[[], Awaitable[None]] = finish) -> None:
                ending.set()
                await asyncio.sleep(0.05)
                await finish()

            reader.rollback = slow_rollback  # type: ignore[method-assign]
        for _ in range(len(store._readers) + 1):
            ending.clear()
            task = asyncio.create_task(store.list_all_entries())
            await asyncio.wait_for(ending.wait(), timeout=5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await asyncio.wait_for(store.list_all_entries(), timeout=5) == []
    finally:
        await store.close()


async def test_a_write_cancelled_while_rolling_back_leaves_the_writer_usable(
    tmp_path: Path, host_services: HostServices
) -> None:
    store = await _open(tmp_path / "ds.sqlite3", host_services)
    try:
        await store.create_entry(ENTRY)
        writer = store._writer
        assert writer is not None
        ending = asyncio.Event()
        finish = writer.rollback

        async def slow_rollback() -> None:
            ending.set()
            await asyncio.sleep(0.05)
            await finish()

        writer.rollback = slow_rollback  # type: ignore[method-assign]
        for _ in range(3):
            ending.clear()
            task = asyncio.create_task(store.create_entry(ENTRY))
            await asyncio.wait_for(ending.wait(), timeout=5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        other = replace(ENTRY, spiffe_id=SpiffeId.parse("spiffe://example.org/other"))
        created = await asyncio.wait_for(store.create_entry(other), timeout=5)
        assert await store.get_entry(created.id) == created
        assert await store.count_entries() == 2
    finally:
        await store.close()


async def test_a_damaged_schema_version_is_refused(
    tmp_path: Path, host_services: HostServices
) -> None:
    path = tmp_path / "damaged.sqlite3"
    store = await _open(path, host_services)
    await store.close()
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO schema_version (version) VALUES (0)")
    with pytest.raises(PluginError, match="schema_version has 2 rows"):
        await _open(path, host_services)


async def test_migrating_twice_changes_nothing(tmp_path: Path, host_services: HostServices) -> None:
    path = tmp_path / "ds.sqlite3"
    for _ in range(2):
        store = await _open(path, host_services)
        await store.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    assert _schema_version(path) == SCHEMA_VERSION


class _FastPathFailsAfterWriting(SqliteDataStore):
    """A store whose batch fast paths write everything and then hit a constraint they did not
    foresee, as a generated id colliding with a stored one would."""

    async def _create_many_at_once(self, *args: Any, **kwargs: Any) -> Any:
        await super()._create_many_at_once(*args, **kwargs)
        raise sqlite3.IntegrityError("UNIQUE constraint failed: entries.entry_id")

    async def _update_many_at_once(self, *args: Any, **kwargs: Any) -> Any:
        await super()._update_many_at_once(*args, **kwargs)
        raise sqlite3.IntegrityError("UNIQUE constraint failed: entries.entry_id")


def _batch_entry(path: str, *selectors: str, **changes: Any) -> RegistrationEntry:
    return replace(
        ENTRY,
        spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
        selectors=tuple(Selector.parse(text) for text in selectors or ("unix:uid:1",)),
        **changes,
    )


async def test_batches_fall_back_to_one_savepoint_per_item(
    tmp_path: Path, host_services: HostServices
) -> None:
    store = _FastPathFailsAfterWriting()
    await store.configure(
        SqliteDataStoreConfig(database_path=tmp_path / "db.sqlite3"), host_services
    )
    try:
        stored = await store.create_entry(_batch_entry("/stored", id="taken"))
        last = await store.last_change_event_id()
        created = await store.create_entries(
            [
                _batch_entry("/a"),
                _batch_entry("/stored"),
                _batch_entry("/b", id="taken"),
                _batch_entry("/a"),
                replace(_batch_entry("/empty"), selectors=()),
                _batch_entry("/c", "k:v", dns_names=("c.test",)),
            ]
        )
        assert [type(result) for result in created] == [
            RegistrationEntry,
            AlreadyExistsError,
            AlreadyExistsError,
            AlreadyExistsError,
            InvalidArgumentError,
            RegistrationEntry,
        ]
        first, third = created[0], created[5]
        assert isinstance(first, RegistrationEntry)
        assert isinstance(third, RegistrationEntry)
        # The rolled-back fast path left no rows: each entry is stored once, lists included.
        assert await store.list_all_entries() == [stored, first, third]
        events = await store.list_change_events(last)
        assert [event.object_id for event in events] == [first.id, third.id]

        updated = await store.update_entries(
            [
                replace(first, selectors=stored.selectors, spiffe_id=stored.spiffe_id),
                replace(third, hint="new"),
                replace(first, id="missing"),
                replace(third, hint="newer"),
            ],
            frozenset({"spiffe_id", "selectors", "hint"}),
        )
        assert [type(result) for result in updated] == [
            AlreadyExistsError,
            RegistrationEntry,
            NotFoundError,
            RegistrationEntry,
        ]
        assert updated[3] == replace(third, hint="newer", revision_number=2)
        assert await store.get_entry(third.id) == updated[3]
        assert await store.get_entry(first.id) == first
    finally:
        await store.close()


async def test_a_batch_write_error_fails_the_whole_batch(
    tmp_path: Path, host_services: HostServices
) -> None:
    store = await _open(tmp_path / "db.sqlite3", host_services)
    try:
        await store.create_entry(_batch_entry("/stored"))
        last = await store.last_change_event_id()
        writer = store._writer
        assert writer is not None
        await writer.execute("PRAGMA query_only = ON")
        with pytest.raises(UnavailableError):
            await store.create_entries([_batch_entry("/a"), _batch_entry("/b")])
        await writer.execute("PRAGMA query_only = OFF")
        assert await store.count_entries() == 1
        assert await store.last_change_event_id() == last
        assert len(await store.create_entries([_batch_entry("/a"), _batch_entry("/b")])) == 2
    finally:
        await store.close()


async def test_pages_read_each_entrys_own_lists_dense_or_sparse(
    tmp_path: Path, host_services: HostServices
) -> None:
    """A page of neighbouring keys reads the lists of a key range, a filtered page those of
    its keys: either way each entry gets its own selectors, DNS names and federated domains."""
    store = await _open(tmp_path / "ds.sqlite3", host_services)
    try:
        domain = TrustDomain("example.org")
        await store.create_bundle(Bundle(trust_domain=TrustDomain("other.org")))
        parents = [SpiffeId.from_segments(domain, "node", str(n % 3)) for n in range(12)]
        created = [
            entry
            for entry in await store.create_entries(
                [
                    RegistrationEntry(
                        spiffe_id=SpiffeId.from_segments(domain, "w", str(n)),
                        parent_id=parents[n],
                        selectors=tuple(Selector("k", f"{n}:{i}") for i in range(n % 4 + 1)),
                        dns_names=tuple(f"d{n}-{i}.example.org" for i in range(n % 3)),
                        federates_with=(TrustDomain("other.org"),) if n % 2 else (),
                    )
                    for n in range(12)
                ]
            )
            if isinstance(entry, RegistrationEntry)
        ]
        assert len(created) == 12
        listed: list[RegistrationEntry] = []
        token = ""
        while True:
            page = await store.list_entries(None, Page(5, token))
            listed += page.entries
            token = page.next_page_token
            if not token:
                break
        assert listed == created
        sparse = await store.list_entries(EntryFilter(by_parent_id=parents[1]), Page(2, ""))
        assert list(sparse.entries) == [created[1], created[4]]
        rest = await store.list_entries(
            EntryFilter(by_parent_id=parents[1]), Page(10, sparse.next_page_token)
        )
        assert list(rest.entries) == [created[7], created[10]]
    finally:
        await store.close()


async def test_a_batch_finds_stored_identities_without_falling_back(
    tmp_path: Path, host_services: HostServices
) -> None:
    """The batch's checks find an entry already stored under an item's identity; the write
    never meets the unique index, so the batch is not redone one item at a time."""
    store = await _open(tmp_path / "datastore.sqlite3", host_services)
    try:
        stored = await store.create_entry(ENTRY)
        other = replace(ENTRY, spiffe_id=SpiffeId.parse("spiffe://example.org/other"))
        with capture_logs() as logs:
            results = await store.create_entries_if_not_exist([ENTRY, other])
        assert results[0] == (stored, True)
        assert isinstance(results[1], tuple) and results[1][1] is False
        assert not [log for log in logs if "falls back" in log["event"]]
    finally:
        await store.close()


def _node(name: str, *selectors: Selector) -> AttestedNode:
    return AttestedNode(
        spiffe_id=SpiffeId.parse(f"spiffe://example.org/spire/agent/join_token/{name}"),
        attestation_type="join_token",
        x509_svid_serial_number="01",
        selectors=selectors,
    )


async def test_a_new_node_is_one_statement_on_the_writer(
    tmp_path: Path, host_services: HostServices
) -> None:
    """A thousand agents attesting at once each create a node: one trip to the writer's
    thread each, not a transaction of five."""
    store = await _open(tmp_path / "ds.sqlite3", host_services)
    sent: list[str] = []
    try:
        assert store._writer is not None
        await store._writer.set_trace_callback(sent.append)
        left = (Selector("t", "left"), Selector("t", 'zone:"é" \\ 😀'))
        await store.set_node_selectors(_node("a").spiffe_id, left)
        sent.clear()
        created = await store.create_attested_node(_node("a"))
        assert created.selectors == left
        created = await store.create_attested_node(
            _node("b", Selector("t", "2"), Selector("t", "1 ü'"), Selector("t", "2"))
        )
        assert created.selectors == (Selector("t", "2"), Selector("t", "1 ü'"))
        assert await store.get_node_selectors(created.spiffe_id) == created.selectors
        # The trace repeats a statement once per statement its trigger runs.
        statements = [sql for i, sql in enumerate(sent) if i == 0 or sent[i - 1] != sql]
        assert len(statements) == 2, statements
    finally:
        await store.close()


async def test_a_duplicate_node_changes_nothing(
    tmp_path: Path, host_services: HostServices
) -> None:
    store = await _open(tmp_path / "ds.sqlite3", host_services)
    try:
        first = await store.create_attested_node(_node("a", Selector("t", "1")))
        events = await store.list_change_events()
        [event] = events
        assert (event.object_id, event.created_at) == (
            str(first.spiffe_id),
            host_services.clock.now(),  # the fake clock's, to the microsecond
        )
        with pytest.raises(AlreadyExistsError, match=r"attested node .*/a already exists"):
            await store.create_attested_node(replace(_node("a", Selector("t", "2")), banned=True))
        assert await store.get_attested_node(first.spiffe_id) == first
        assert await store.get_node_selectors(first.spiffe_id) == (Selector("t", "1"),)
        assert await store.list_change_events() == events
    finally:
        await store.close()
