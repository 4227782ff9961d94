"""Two servers (two plugin instances) on one schema: a write through one is signalled to the
other's watch as it commits, a notification about another schema is not, and a listening
connection the database drops is replaced and reported as a resync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import asyncpg
import pytest
from pyspire_datastore_postgres import NOTIFY_CHANNEL, PostgresDataStore, PostgresDataStoreConfig
from pyspire_datastore_postgres.watch import application_name

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import AlreadyExistsError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import ChangeSignal, WatchableDataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock

pytestmark = pytest.mark.postgres

AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/x")
TD = TrustDomain("example.org")


def _entry(path: str) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
        parent_id=AGENT,
        selectors=(Selector("unix", "uid:1000"),),
    )


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait in real time (the database answers in real time) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


class Watching:
    """A running watch on ``store`` and the signals it gave so far."""

    def __init__(self, store: PostgresDataStore) -> None:
        self.signals: list[ChangeSignal] = []
        self.task = asyncio.create_task(store.watch_changes(self.signals.append))

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def servers(
    postgres_dsn: str, host_services: HostServices
) -> AsyncIterator[tuple[PostgresDataStore, PostgresDataStore]]:
    opened = []
    for _ in range(2):
        store = PostgresDataStore()
        await store.configure(
            PostgresDataStoreConfig(connection_string=postgres_dsn, max_idle_conns=1),
            host_services,
        )
        opened.append(store)
    yield opened[0], opened[1]
    for store in opened:
        await store.close()


async def test_the_postgres_datastore_is_watchable() -> None:
    assert isinstance(PostgresDataStore(), WatchableDataStore)


async def test_a_write_through_one_server_is_signalled_to_the_other(
    servers: tuple[PostgresDataStore, PostgresDataStore],
) -> None:
    first, second = servers
    watching = Watching(second)
    try:
        await _until(lambda: watching.signals == [ChangeSignal.CHANGED])  # established
        await first.create_entry(_entry("/one"))
        await _until(lambda: len(watching.signals) == 2)
        await first.create_entries([_entry("/two"), _entry("/three")])  # one commit, one signal
        await _until(lambda: len(watching.signals) == 3)
        assert set(watching.signals) == {ChangeSignal.CHANGED}
    finally:
        await watching.stop()


async def test_a_notification_about_another_schema_is_ignored(
    servers: tuple[PostgresDataStore, PostgresDataStore], postgres_server: str
) -> None:
    first, second = servers
    watching = Watching(second)
    try:
        await _until(lambda: len(watching.signals) == 1)
        other = await asyncpg.connect(postgres_server)
        try:
            await other.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, "elsewhere:7")
        finally:
            await other.close()
        await first.create_entry(_entry("/one"))  # delivered after the foreign one
        await _until(lambda: len(watching.signals) == 2)
        await asyncio.sleep(0.05)
        assert len(watching.signals) == 2
    finally:
        await watching.stop()


async def test_a_dropped_connection_is_replaced_and_reported_as_a_resync(
    servers: tuple[PostgresDataStore, PostgresDataStore],
    postgres_server: str,
    fake_clock: FakeClock,
) -> None:
    first, second = servers
    watching = Watching(second)
    try:
        await _until(lambda: len(watching.signals) == 1)
        admin = await asyncpg.connect(postgres_server)
        try:
            dropped = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                application_name(second.schema),
            )
        finally:
            await admin.close()
        assert dropped == 1
        for _ in range(20):  # the probe finds the loss, the backoff delay passes
            if ChangeSignal.RESYNC in watching.signals:
                break
            await fake_clock.advance(timedelta(seconds=1))
            await asyncio.sleep(0.05)
        assert watching.signals == [ChangeSignal.CHANGED, ChangeSignal.RESYNC]

        await first.create_entry(_entry("/after"))
        await _until(lambda: len(watching.signals) == 3)
        assert watching.signals[-1] is ChangeSignal.CHANGED
    finally:
        await watching.stop()


async def test_a_bundle_written_through_one_server_is_signalled_to_the_other(
    servers: tuple[PostgresDataStore, PostgresDataStore],
) -> None:
    """Another server's new CA must reach this one's TLS trust before its agents call."""
    first, second = servers
    watching = Watching(second)
    try:
        await _until(lambda: len(watching.signals) == 1)
        bundle = Bundle(TD, jwt_authorities=(JwtAuthority("first", b"key"),))
        await first.create_bundle(bundle)
        await _until(lambda: len(watching.signals) == 2)
        await first.append_bundle(Bundle(TD, jwt_authorities=(JwtAuthority("second", b"k"),)))
        await _until(lambda: len(watching.signals) == 3)
        with pytest.raises(AlreadyExistsError):
            await first.create_bundle(bundle)  # rolled back: nothing is sent
        await first.create_entry(_entry("/after"))
        await _until(lambda: len(watching.signals) == 4)
        await asyncio.sleep(0.05)
        assert watching.signals == [ChangeSignal.CHANGED] * 4
    finally:
        await watching.stop()
