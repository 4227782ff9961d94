"""Delivering stored SVIDs to SVID store plugins: the right store, retries by the backoff
policy on the fake clock, refusals, deletes, and the targets kept for a restart."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
import structlog

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.stored_svids import StoredSvidCache, StoreTarget
from pyspire.agent.stored_targets import FILE_NAME, StoredTargetsFile
from pyspire.agent.svid_stores import STORE_RETRY, SvidStoreDelivery
from pyspire.agent.sync import SyncManager
from pyspire_sdk.backoff import BackoffPolicy
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.plugins.svid_store import StoredSvid
from pyspire_sdk.testing import FakeClock

from .conftest import eventually
from .fakes import FakeServerApi, entry
from .svid_store_fakes import MemorySvidStore

NO_JITTER = BackoffPolicy(initial=1.0, maximum=8.0, jitter=0.0)


def _made(store: MemorySvidStore, attempts: int) -> bool:
    return len(store.calls) == attempts


@pytest.fixture
def stores() -> dict[str, MemorySvidStore]:
    return {"vault": MemorySvidStore(), "files": MemorySvidStore()}


@pytest.fixture
def stored(fake_clock: FakeClock, stores: dict[str, MemorySvidStore]) -> StoredSvidCache:
    return StoredSvidCache(stores, fake_clock)


@pytest.fixture
def syncer(
    server: FakeServerApi, cache: WorkloadCache, stored: StoredSvidCache, fake_clock: FakeClock
) -> SyncManager:
    return SyncManager(server, cache, fake_clock, interval=5, stored=stored)


@asynccontextmanager
async def running(delivery: SvidStoreDelivery) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(delivery.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def settle(until: Callable[[], bool]) -> None:
    """Let the lanes run (in real time, bounded) until ``until`` holds."""
    await eventually(until)
    await asyncio.sleep(0)


async def test_each_svid_goes_to_the_store_its_selectors_name(
    server: FakeServerApi,
    stored: StoredSvidCache,
    syncer: SyncManager,
    stores: dict[str, MemorySvidStore],
    fake_clock: FakeClock,
) -> None:
    server.add(
        entry("web", selectors=["vault:name:web"], store_svid=True),
        entry("db", selectors=["files:path:db", "files:mode:0600"], store_svid=True),
    )
    async with running(SvidStoreDelivery(stored, stores, fake_clock)):
        await syncer.sync_now()
        await settle(lambda: bool(stores["vault"].stored and stores["files"].stored))
    assert list(stores["vault"].stored) == [("name:web",)]
    assert list(stores["files"].stored) == [("mode:0600", "path:db")]
    assert str(stores["files"].stored[("mode:0600", "path:db")].spiffe_id).endswith("/db")
    assert stored.pending() == []


async def test_rotation_and_deletion_reach_the_store(
    server: FakeServerApi,
    stored: StoredSvidCache,
    syncer: SyncManager,
    stores: dict[str, MemorySvidStore],
    fake_clock: FakeClock,
) -> None:
    vault = stores["vault"]
    server.add(entry("web", selectors=["vault:name:web"], store_svid=True))
    async with running(SvidStoreDelivery(stored, stores, fake_clock)):
        await syncer.sync_now()
        await settle(lambda: ("name:web",) in vault.stored)
        first = vault.stored[("name:web",)]
        await fake_clock.advance(timedelta(minutes=31))
        await syncer.sync_now()
        await settle(lambda: vault.stored[("name:web",)] != first)
        del server.entries["web"]
        await syncer.sync_now()
        await settle(lambda: not vault.stored)
    assert [call[0] for call in vault.calls] == ["put", "put", "delete"]


async def test_a_failing_store_is_retried_by_the_backoff_policy_and_spares_the_others(
    server: FakeServerApi,
    stored: StoredSvidCache,
    syncer: SyncManager,
    stores: dict[str, MemorySvidStore],
    fake_clock: FakeClock,
) -> None:
    vault, files = stores["vault"], stores["files"]
    vault.failure = UnavailableError("vault is sealed")
    server.add(
        entry("web", selectors=["vault:name:web"], store_svid=True),
        entry("db", selectors=["files:path:db"], store_svid=True),
    )
    delivery = SvidStoreDelivery(stored, stores, fake_clock, policy=NO_JITTER)
    with structlog.testing.capture_logs() as logs:
        async with running(delivery):
            await syncer.sync_now()
            await settle(lambda: bool(files.stored) and len(vault.calls) == 1)
            # Retries after 1 s, 2 s, 4 s, then every 8 s; never sooner.
            for delay, attempts in ((1, 2), (2, 3), (4, 4), (8, 5), (8, 6)):
                await fake_clock.advance(delay - 0.5)
                await asyncio.sleep(0)
                assert len(vault.calls) == attempts - 1
                await fake_clock.advance(0.5)
                await settle(partial(_made, vault, attempts))
            vault.failure = None
            await fake_clock.advance(8)
            await settle(lambda: bool(vault.stored))
    assert len(files.calls) == 1
    failures = [log for log in logs if log["event"].startswith("svid store call failed")]
    assert [log["log_level"] for log in failures] == ["warning"] + ["debug"] * 5
    assert failures[0]["error"] == "vault is sealed"
    assert any(log["event"] == "svid store call succeeded again" for log in logs)
    assert not any("private_key" in str(log) for log in logs)


async def test_invalid_metadata_is_not_retried_until_the_svid_changes(
    server: FakeServerApi,
    stored: StoredSvidCache,
    syncer: SyncManager,
    stores: dict[str, MemorySvidStore],
    fake_clock: FakeClock,
) -> None:
    vault = stores["vault"]
    server.add(entry("web", selectors=["vault:bad-name:web"], store_svid=True))
    async with running(SvidStoreDelivery(stored, stores, fake_clock, policy=NO_JITTER)):
        await syncer.sync_now()
        await settle(lambda: len(vault.calls) == 1)
        await fake_clock.advance(120)
        await asyncio.sleep(0)
        assert len(vault.calls) == 1
        await fake_clock.advance(timedelta(minutes=30))
        await syncer.sync_now()  # a new SVID: tried once more
        await settle(lambda: len(vault.calls) == 2)
    assert vault.stored == {}


async def test_delivered_targets_survive_a_restart_and_gone_entries_are_deleted(
    tmp_path: Path,
    server: FakeServerApi,
    cache: WorkloadCache,
    stores: dict[str, MemorySvidStore],
    fake_clock: FakeClock,
) -> None:
    vault = stores["vault"]
    server.add(entry("web", selectors=["vault:name:web"], store_svid=True))
    first_run = StoredSvidCache(stores, fake_clock)
    syncer = SyncManager(server, cache, fake_clock, interval=5, stored=first_run)
    targets = StoredTargetsFile(tmp_path)
    async with running(SvidStoreDelivery(first_run, stores, fake_clock, targets=targets)):
        await syncer.sync_now()
        await settle(lambda: bool(vault.stored) and (tmp_path / FILE_NAME).exists())
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE" not in (tmp_path / FILE_NAME).read_bytes()

    # The agent is stopped; the entry is deleted; the agent starts again.
    del server.entries["web"]
    kept = await StoredTargetsFile(tmp_path).load()
    assert kept == (StoreTarget("vault", ("name:web",)),)
    second_run = StoredSvidCache(stores, fake_clock, delivered=kept)
    restarted = StoredTargetsFile(tmp_path)
    await restarted.load()
    syncer = SyncManager(server, cache, fake_clock, interval=5, stored=second_run)
    async with running(SvidStoreDelivery(second_run, stores, fake_clock, targets=restarted)):
        await asyncio.sleep(0)
        assert [call[0] for call in vault.calls] == ["put"]  # nothing before the first sync
        await syncer.sync_now()
        await settle(lambda: not vault.stored)
        await settle(lambda: b"name:web" not in (tmp_path / FILE_NAME).read_bytes())
    assert await StoredTargetsFile(tmp_path).load() == ()


class _StoresThenHangs(MemorySvidStore):
    """A store that writes the SVID and then never answers (the agent is stopped meanwhile)."""

    async def put_x509_svid(self, svid: StoredSvid) -> None:
        await super().put_x509_svid(svid)
        await asyncio.Event().wait()


async def test_a_target_is_on_file_before_the_store_is_asked_to_hold_it(
    tmp_path: Path, server: FakeServerApi, cache: WorkloadCache, fake_clock: FakeClock
) -> None:
    vault = _StoresThenHangs()
    server.add(entry("web", selectors=["vault:name:web"], store_svid=True))
    first_run = StoredSvidCache({"vault": vault}, fake_clock)
    syncer = SyncManager(server, cache, fake_clock, interval=5, stored=first_run)
    targets = StoredTargetsFile(tmp_path)
    async with running(SvidStoreDelivery(first_run, {"vault": vault}, fake_clock, targets=targets)):
        await syncer.sync_now()
        await settle(lambda: bool(vault.stored))
    # Stopped while the put was still running: the restart must know what may be stored.
    assert await StoredTargetsFile(tmp_path).load() == (StoreTarget("vault", ("name:web",)),)


async def test_corrupt_targets_file_is_logged_and_ignored(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text('{"version": 1, "targets": [{"store": 3}]}')
    with structlog.testing.capture_logs() as logs:
        assert await StoredTargetsFile(tmp_path).load() == ()
    assert "targets[0]" in logs[0]["error"]


async def test_cancelling_the_delivery_leaves_no_lane_behind(
    stored: StoredSvidCache, stores: dict[str, MemorySvidStore], fake_clock: FakeClock
) -> None:
    before = len(asyncio.all_tasks())
    async with running(SvidStoreDelivery(stored, stores, fake_clock)):
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) > before + 1  # the run task and its lanes
    assert len(asyncio.all_tasks()) == before


def test_default_policy_caps_retries_at_a_minute() -> None:
    assert STORE_RETRY.ceiling(100) == 60.0
    assert STORE_RETRY.delay(1, random.Random(1)) <= 1.0
