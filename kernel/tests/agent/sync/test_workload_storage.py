"""Workload SVIDs kept in data_dir: what a restarted agent can serve, and what it must not."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import structlog

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.sync import SyncManager
from pyspire.agent.workload_storage import FILE_NAME, SEAL_KEY_ID, WorkloadSvidStore
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock, make_host_services

from .fakes import AGENT_ID, FakeServerApi, entry

OTHER_AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/other")


async def key_manager(tmp_path: Path) -> InProcessKeyManager:
    keys = InProcessKeyManager()
    await keys.configure(None, make_host_services(tmp_path, plugin_name="memory"))
    return keys


async def filled_cache(server: FakeServerApi, fake_clock: FakeClock) -> WorkloadCache:
    partner = TrustDomain("partner.test")
    server.federated[partner] = Bundle(trust_domain=partner, sequence_number=2)
    server.add(
        entry("web", created=1, federates_with=["partner.test"]),
        entry("db", created=2, x509_svid_ttl=90),
        entry("spare", created=3),
    )
    cache = WorkloadCache(server, fake_clock)
    await SyncManager(server, cache, fake_clock).sync_now()
    return cache


async def test_kept_svids_come_back_with_their_keys_in_a_private_file(
    server: FakeServerApi, fake_clock: FakeClock, tmp_path: Path
) -> None:
    cache = await filled_cache(server, fake_clock)
    keys = await key_manager(tmp_path)
    data_dir = tmp_path / "data"
    await WorkloadSvidStore(data_dir, AGENT_ID, keys).save(cache.contents())

    path = data_dir / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for item in cache.contents().issued:
        assert item.svid.private_key is not None
        assert item.svid.private_key.hex() not in text.encode().hex()
    assert (await keys.get_public_key(SEAL_KEY_ID)).key_id == SEAL_KEY_ID

    kept = await WorkloadSvidStore(data_dir, AGENT_ID, keys).load(fake_clock.now())
    assert kept is not None
    assert kept == cache.contents()
    restarted = WorkloadCache(server, fake_clock)
    assert restarted.restore(kept) == 3
    assert restarted.snapshot().identities == cache.snapshot().identities
    assert restarted.snapshot().federated_bundles == cache.snapshot().federated_bundles
    assert restarted.synced
    await cache.close()
    await restarted.close()


async def test_entry_revisions_are_kept_so_changed_entries_are_renewed(
    server: FakeServerApi, fake_clock: FakeClock, tmp_path: Path
) -> None:
    cache = await filled_cache(server, fake_clock)
    server.bump("web")
    cache.update(list(server.entries.values()), server.bundle, {})  # the SVID is not renewed yet
    keys = await key_manager(tmp_path)
    await WorkloadSvidStore(tmp_path, AGENT_ID, keys).save(cache.contents())
    kept = await WorkloadSvidStore(tmp_path, AGENT_ID, keys).load(fake_clock.now())
    assert kept is not None
    revisions = {item.entry_id: item.entry_revision for item in kept.issued}
    assert revisions == {"web": 1, "db": 1, "spare": 1}
    restarted = WorkloadCache(server, fake_clock)
    restarted.restore(kept)
    assert [item.entry.id for item in restarted.stale_entries(fake_clock.now())] == ["web"]
    await cache.close()


async def test_expired_svids_are_left_out(
    server: FakeServerApi, fake_clock: FakeClock, tmp_path: Path
) -> None:
    cache = await filled_cache(server, fake_clock)
    keys = await key_manager(tmp_path)
    await WorkloadSvidStore(tmp_path, AGENT_ID, keys).save(cache.contents())
    db = cache.issued("db")
    assert db is not None
    await fake_clock.set(db.not_after)
    kept = await WorkloadSvidStore(tmp_path, AGENT_ID, keys).load(fake_clock.now())
    assert kept is not None
    assert sorted(item.entry_id for item in kept.issued) == ["spare", "web"]
    assert len(kept.entries) == 3
    await cache.close()


async def test_nothing_is_restored_without_the_sealing_key(
    server: FakeServerApi, fake_clock: FakeClock, tmp_path: Path
) -> None:
    # A memory key manager starts empty after a restart: the sealed keys cannot be opened.
    cache = await filled_cache(server, fake_clock)
    await WorkloadSvidStore(tmp_path, AGENT_ID, await key_manager(tmp_path)).save(cache.contents())
    with structlog.testing.capture_logs() as logs:
        kept = await WorkloadSvidStore(tmp_path, AGENT_ID, await key_manager(tmp_path)).load(
            fake_clock.now()
        )
    assert kept is None
    assert any("cannot be restored" in log["event"] for log in logs)
    await cache.close()


async def test_another_agents_or_a_damaged_file_is_not_served(
    server: FakeServerApi, fake_clock: FakeClock, tmp_path: Path
) -> None:
    cache = await filled_cache(server, fake_clock)
    keys = await key_manager(tmp_path)
    await WorkloadSvidStore(tmp_path, AGENT_ID, keys).save(cache.contents())
    assert await WorkloadSvidStore(tmp_path, OTHER_AGENT, keys).load(fake_clock.now()) is None

    path = tmp_path / FILE_NAME
    document = json.loads(path.read_text())
    web = document["svids"][0]
    web["sealed_key"], document["svids"][1]["sealed_key"] = (
        document["svids"][1]["sealed_key"],
        web["sealed_key"],
    )
    path.write_text(json.dumps(document))
    with structlog.testing.capture_logs() as logs:
        kept = await WorkloadSvidStore(tmp_path, AGENT_ID, keys).load(fake_clock.now())
    assert kept is not None
    assert [item.entry_id for item in kept.issued] == ["spare"]  # swapped keys do not open
    assert sum("left out" in log["event"] for log in logs) == 2

    path.write_text("{not json")
    assert await WorkloadSvidStore(tmp_path, AGENT_ID, keys).load(fake_clock.now()) is None
    await cache.close()


async def test_a_cleared_cache_keeps_nothing(
    server: FakeServerApi, fake_clock: FakeClock, tmp_path: Path
) -> None:
    cache = await filled_cache(server, fake_clock)
    keys = await key_manager(tmp_path)
    store = WorkloadSvidStore(tmp_path, AGENT_ID, keys)
    await store.save(cache.contents())
    cache.clear()  # the server refused the agent
    await store.save(cache.contents())
    assert not (tmp_path / FILE_NAME).exists()
    assert await store.load(fake_clock.now()) is None
    await cache.close()


@pytest.mark.parametrize("missing", ["version", "agent_id", "seal_key", "entries", "svids"])
async def test_a_file_missing_a_field_is_ignored(
    server: FakeServerApi, fake_clock: FakeClock, tmp_path: Path, missing: str
) -> None:
    cache = await filled_cache(server, fake_clock)
    keys = await key_manager(tmp_path)
    await WorkloadSvidStore(tmp_path, AGENT_ID, keys).save(cache.contents())
    path = tmp_path / FILE_NAME
    document = json.loads(path.read_text())
    del document[missing]
    path.write_text(json.dumps(document))
    with structlog.testing.capture_logs() as logs:
        assert await WorkloadSvidStore(tmp_path, AGENT_ID, keys).load(fake_clock.now()) is None
    assert any(repr(missing) in log.get("reason", "") for log in logs)
    await cache.close()
