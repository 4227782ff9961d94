"""Benchmark of what entries marked ``store_svid`` add to the agent's periodic sync, against a
sync of as many ordinary entries, measured in the same run.

Run from the repository root: ``.venv/bin/python tests/bench/bench_stored_svids.py``.

Both agents sync the same number of entries from an in-process server (the one of
``bench_svid_on_demand.py``) until every SVID is minted; then each steady-state sync (entries
and bundle fetched, caches updated, nothing stale) is timed. The floor agent has only workload
entries and no store cache; the measured one has ``--stored`` of its entries marked
``store_svid``, routed to its store cache. Also timed: one SVID store lane's wake-up after a
bundle change (``StoredSvidCache.pending`` building a put for every stored SVID). Prints p50
and p99 and the ratios to the floor sync. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

import structlog
from bench_svid_on_demand import InProcessServer, percentile

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.stored_svids import StoredSvidCache
from pyspire.agent.sync import SyncManager
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.pki import TestAuthority

STORE = "bench_store"
TRUST = TrustDomain("example.org")


def server_with(entries: int, stored: int) -> InProcessServer:
    server = InProcessServer(entries)
    server.entries = [
        dataclasses.replace(entry, store_svid=True, selectors=(Selector(STORE, f"name:{number}"),))
        if number < stored
        else entry
        for number, entry in enumerate(server.entries)
    ]
    return server


async def timed_syncs(sync: SyncManager, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        report = await sync.sync_now()
        times.append(time.perf_counter() - start)
        if report.issued:
            raise SystemExit(f"a steady-state sync minted {report.issued} svids")
    return times


async def measure(entries: int, stored: int, rounds: int) -> dict[str, list[float]]:
    clock = SystemClock()
    floor_server = server_with(entries, 0)
    floor_cache = WorkloadCache(floor_server, clock, x509_svid_cache_max_size=entries)
    floor = SyncManager(floor_server, floor_cache, clock)

    server = server_with(entries, stored)
    cache = WorkloadCache(server, clock, x509_svid_cache_max_size=entries)
    store_cache = StoredSvidCache([STORE], clock)
    measured = SyncManager(server, cache, clock, stored=store_cache)
    try:
        await floor.sync_now()
        await measured.sync_now()
        if store_cache.svid_count != stored or cache.svid_count != entries - stored:
            raise SystemExit("the agents did not mint every svid")
        for operation in store_cache.pending():
            store_cache.delivered(operation)
        timings = {
            "floor": await timed_syncs(floor, rounds),
            "measured": await timed_syncs(measured, rounds),
            "wake": [],
        }
        # A bundle change: every stored SVID is to be put again, with the new bundle.
        bundles = [
            server.authority.bundle(),
            server.authority.bundle(extra_x509_authorities=[TestAuthority(TRUST).x509_authority]),
        ]
        authorized = await server.fetch_authorized_entries()
        for number in range(rounds):
            store_cache.update(authorized, bundles[(number + 1) % 2], {})
            start = time.perf_counter()
            puts = store_cache.pending(STORE)
            timings["wake"].append(time.perf_counter() - start)
            if len(puts) != stored:
                raise SystemExit(f"a bundle change made {len(puts)} puts, not {stored}")
            for operation in puts:
                store_cache.delivered(operation)
        return timings
    finally:
        await floor_cache.close()
        await cache.close()


def line(name: str, values: Sequence[float], floor: float) -> str:
    p50 = percentile(values, 0.5)
    return (
        f"{name:<34} p50 {p50 * 1e3:8.2f} ms   p99 {percentile(values, 0.99) * 1e3:8.2f} ms"
        f"   ratio to floor {p50 / floor:5.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=5000, help="entries of each agent")
    parser.add_argument("--stored", type=int, default=1000, help="of them marked store_svid")
    parser.add_argument("--rounds", type=int, default=30, help="timed syncs of each agent")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    timings = asyncio.run(measure(args.entries, args.stored, args.rounds))
    floor = percentile(timings["floor"], 0.5)
    print(
        f"{args.entries} entries per agent, {args.stored} marked store_svid; {args.rounds} rounds"
    )
    print(line("floor: sync, workload entries only", timings["floor"], floor))
    print(line("sync with stored entries", timings["measured"], floor))
    print(line("store lane wake-up, bundle changed", timings["wake"], floor))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
