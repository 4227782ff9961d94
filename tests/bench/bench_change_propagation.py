"""Change propagation between two servers on one PostgreSQL: p50 and p99 from an entry created
through server A to the entry being in server B's authorized-entries index.

    .venv/bin/python tests/bench/bench_change_propagation.py [--changes 1000] [--poll-sample 40]

Both servers are played in this process, each with its own ``postgres`` datastore (its own
pool) on one throwaway schema: A writes with ``create_entry``; B runs what the server runs, the
registry cache refreshing every ``REGISTRY_REFRESH`` and woken by the datastore's
``watch_changes`` (LISTEN/NOTIFY). For each of ``--changes`` entries, created one after the
other, the time from just before the write to the entry being in B's index.

The floor, measured in the same run, is PostgreSQL's own notification round trip: one
connection commits a one-row INSERT with ``pg_notify`` and another, listening, hears it; what
the propagation adds on top is the event read, the entry read and the index update on B. For
comparison, ``--poll-sample`` changes are also measured with the watch off (B polls the change
feed every ``REGISTRY_REFRESH`` alone, as every server did before; SPIRE polls every 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import structlog
from pyspire_datastore_postgres import PostgresDataStore, PostgresDataStoreConfig
from pyspire_datastore_postgres.testing import find_server, throwaway_schema

from pyspire.registry.cache import RegistryCache
from pyspire.server.runtime import REGISTRY_REFRESH
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import make_host_services

TD = TrustDomain("example.org")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/bench/node")
_CHECK_EVERY = 0.0002


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def notify_floor(dsn: str, rounds: int) -> list[float]:
    """Seconds from before a committed INSERT + pg_notify on one connection to the
    notification arriving on another."""
    writer = await asyncpg.connect(dsn)
    listener = await asyncpg.connect(dsn)
    heard: asyncio.Queue[float] = asyncio.Queue()
    try:
        await writer.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigint)")
        await listener.add_listener("bench_floor", lambda *_: heard.put_nowait(time.perf_counter()))
        samples = []
        for index in range(rounds):
            began = time.perf_counter()
            async with writer.transaction():
                await writer.execute("INSERT INTO bench_floor VALUES ($1)", index)
                await writer.execute("SELECT pg_notify('bench_floor', $1)", str(index))
            samples.append(await heard.get() - began)
        return samples
    finally:
        await writer.close()
        await listener.close()


@asynccontextmanager
async def two_servers(
    dsn: str, folder: Path, *, watch: bool
) -> AsyncIterator[tuple[PostgresDataStore, RegistryCache]]:
    """Server A's datastore, and server B's registry cache running (woken by the watch when
    ``watch``) over a datastore of its own."""
    clock = SystemClock()
    host = make_host_services(folder, clock=clock)
    first, second = PostgresDataStore(), PostgresDataStore()
    for store in (first, second):
        await store.configure(PostgresDataStoreConfig(connection_string=dsn), host)
    cache = RegistryCache(second, TD, clock)
    await cache.start()
    tasks = [asyncio.create_task(cache.run(clock, REGISTRY_REFRESH))]
    if watch:
        tasks.append(asyncio.create_task(second.watch_changes(cache.hear)))
    try:
        await asyncio.sleep(0.2)  # the watch connects and listens
        yield first, cache
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await first.close()
        await second.close()


async def propagation(
    dsn: str, folder: Path, changes: int, *, watch: bool
) -> tuple[list[float], list[float]]:
    """Seconds from before each write through A to the entry in B's index, and of that the
    write itself."""
    samples, writes = [], []
    async with two_servers(dsn, folder, watch=watch) as (first, cache):
        for index in range(changes):
            entry = RegistrationEntry(
                spiffe_id=SpiffeId.parse(f"spiffe://example.org/w/{watch}/{index}"),
                parent_id=AGENT,
                selectors=(Selector("unix", f"uid:{index}"),),
            )
            began = time.perf_counter()
            stored = await first.create_entry(entry)
            writes.append(time.perf_counter() - began)
            # The index has no hook to wait on; 0.2 ms polls cost little against the figure.
            while cache.get_entry(stored.id) is None:  # noqa: ASYNC110
                await asyncio.sleep(_CHECK_EVERY)
            samples.append(time.perf_counter() - began)
    return samples, writes


def describe(name: str, samples: list[float], floor: float) -> None:
    p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
    print(
        f"{name}: p50 {p50 * 1000:.2f} ms ({p50 / floor:.1f}x floor), "
        f"p99 {p99 * 1000:.2f} ms ({p99 / floor:.1f}x floor), over {len(samples)} changes"
    )


async def run(changes: int, poll_sample: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    try:
        server = await find_server()
    except Exception as error:
        sys.exit(f"no PostgreSQL to measure against: {error}")
    async with throwaway_schema(server, prefix="pyspire_bench") as dsn:
        floor_samples = await notify_floor(dsn, min(changes, 500))
        floor = statistics.median(floor_samples)
        print(
            f"floor: PostgreSQL INSERT + NOTIFY heard on another connection, "
            f"p50 {floor * 1000:.2f} ms, p99 {percentile(floor_samples, 0.99) * 1000:.2f} ms"
        )
        with tempfile.TemporaryDirectory() as folder:
            watched, writes = await propagation(dsn, Path(folder), changes, watch=True)
            describe("A -> B with LISTEN/NOTIFY", watched, floor)
            describe("  of which the write through A (create_entry)", writes, floor)
            if poll_sample:
                polled, _ = await propagation(dsn, Path(folder), poll_sample, watch=False)
                describe(
                    f"A -> B polling every {REGISTRY_REFRESH.total_seconds():g} s alone",
                    polled,
                    floor,
                )
                ratio = statistics.median(polled) / statistics.median(watched)
                print(f"polling p50 / notified p50: {ratio:.0f}x")
    print("target: p99 well under 1 s (an agent's sync then picks it up)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--poll-sample", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(run(args.changes, args.poll_sample))


if __name__ == "__main__":
    main()
