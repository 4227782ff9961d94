"""How long creating 1,000 entries takes: one call per entry, one batch call, and through the
Entry service's BatchCreateEntry (validation, datastore and registry refresh, no gRPC).

Each way starts from a fresh database file in WAL mode with ``synchronous = FULL`` (the
datastore's settings), so every committed transaction costs an fsync. The one-call-per-entry
figure is the floor the others are compared with; the script prints each way's time, its
cost per entry and its ratio to that floor. Batch update and delete are timed the same way.

    .venv/bin/python tests/bench/bench_create_entries.py [entries]
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig

from pyspire.ca.manager import CaManager, CaSettings
from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_pb
from pyspire.proto.gen.codec import spire_api_types as pb
from pyspire.registry.cache import RegistryCache
from pyspire.server.api.entry import EntryService
from pyspire.server.context import ServerContext
from pyspire.server.issuer import IssuancePolicy, SvidIssuer
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock, make_host_services

TD = TrustDomain("example.org")
PARENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/node-1")


def entries(count: int) -> list[RegistrationEntry]:
    return [
        RegistrationEntry(
            spiffe_id=SpiffeId.from_path(TD, f"/service-{i}"),
            parent_id=PARENT,
            selectors=(Selector("unix", f"uid:{1000 + i}"), Selector("unix", "gid:100")),
            x509_svid_ttl=3600,
            dns_names=(f"service-{i}.example.org",) if i % 3 == 0 else (),
        )
        for i in range(count)
    ]


def wire_entries(count: int) -> list[pb.Entry]:
    return [
        pb.Entry(
            spiffe_id=pb.SPIFFEID(trust_domain=TD.name, path=f"/service-{i}"),
            parent_id=pb.SPIFFEID(trust_domain=TD.name, path=PARENT.path),
            selectors=[
                pb.Selector(type="unix", value=f"uid:{1000 + i}"),
                pb.Selector(type="unix", value="gid:100"),
            ],
            x509_svid_ttl=3600,
            dns_names=[f"service-{i}.example.org"] if i % 3 == 0 else [],
        )
        for i in range(count)
    ]


async def open_store(directory: Path, host: HostServices) -> SqliteDataStore:
    store = SqliteDataStore()
    await store.configure(SqliteDataStoreConfig(database_path=directory / "bench.sqlite3"), host)
    return store


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


async def datastore_one_by_one(count: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        store = await open_store(Path(directory), make_host_services(Path(directory)))
        items = entries(count)

        async def run() -> None:
            for entry in items:
                await store.create_entry(entry)

        elapsed = await timed(run)
        assert await store.count_entries() == count
        await store.close()
    return elapsed


async def datastore_batch(count: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        store = await open_store(Path(directory), make_host_services(Path(directory)))
        items = entries(count)
        elapsed = await timed(lambda: store.create_entries(items))
        assert await store.count_entries() == count
        await store.close()
    return elapsed


async def service_batches(count: int) -> tuple[float, float, float]:
    """Seconds for BatchCreateEntry, BatchUpdateEntry and BatchDeleteEntry of ``count``
    entries through the Entry service over a real context."""
    with tempfile.TemporaryDirectory() as directory:
        clock = FakeClock()
        host = make_host_services(Path(directory), clock=clock)
        store = await open_store(Path(directory), host)
        keys = InProcessKeyManager()
        await keys.configure(NoConfig(), host)
        ca = CaManager(
            CaSettings(trust_domain=TD, ca_ttl=timedelta(hours=24)),
            key_manager=keys,
            store=store,
            clock=clock,
        )
        await ca.start()
        registry = RegistryCache(store, TD, clock)
        await registry.start()
        service = EntryService(
            ServerContext(
                trust_domain=TD,
                clock=clock,
                datastore=store,
                ca=ca,
                registry=registry,
                issuer=SvidIssuer(ca=ca, clock=clock, policy=IssuancePolicy()),
                node_attestors={},
                started_at=clock.now(),
            )
        )
        request = entry_pb.BatchCreateEntryRequest(entries=wire_entries(count))
        started = time.perf_counter()
        created = (await service.batch_create_entry(request)).decode()
        create_s = time.perf_counter() - started
        assert all(result.status is not None for result in created.results)
        assert all(result.status.code == 0 for result in created.results if result.status)
        assert await store.count_entries() == count

        updates = [dataclasses.replace(result.entry, hint="updated") for result in created.results]
        update_request = entry_pb.BatchUpdateEntryRequest(
            entries=updates, input_mask=pb.EntryMask(hint=True)
        )
        started = time.perf_counter()
        updated = (await service.batch_update_entry(update_request)).decode()
        update_s = time.perf_counter() - started
        assert all(result.status.code == 0 for result in updated.results)

        delete_request = entry_pb.BatchDeleteEntryRequest(
            ids=[result.entry.id for result in created.results]
        )
        started = time.perf_counter()
        deleted = (await service.batch_delete_entry(delete_request)).decode()
        delete_s = time.perf_counter() - started
        assert all(result.status.code == 0 for result in deleted.results)
        assert await store.count_entries() == 0

        await keys.close()
        await store.close()
    return create_s, update_s, delete_s


def line(name: str, seconds: float, count: int, floor: float) -> str:
    return (
        f"{name:<40} {seconds:7.3f} s  {seconds / count * 1e3:6.3f} ms/entry  "
        f"{seconds / floor:6.3f}x one-by-one"
    )


async def main(count: int) -> None:
    one_by_one = await datastore_one_by_one(count)
    batch = await datastore_batch(count)
    create_s, update_s, delete_s = await service_batches(count)
    print(f"{count} entries")
    print(line("datastore create_entry, one by one", one_by_one, count, one_by_one))
    print(line("datastore create_entries, one batch", batch, count, one_by_one))
    print(line("Entry.BatchCreateEntry", create_s, count, one_by_one))
    print(line("Entry.BatchUpdateEntry (hint)", update_s, count, one_by_one))
    print(line("Entry.BatchDeleteEntry", delete_s, count, one_by_one))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000))
