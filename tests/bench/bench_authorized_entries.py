"""Benchmark of the authorized-entries index: full build and per-agent lookups.

Run from the repository root: ``.venv/bin/python tests/bench/bench_authorized_entries.py``.

The registry: 100 agents; each holds 500 entries under its own ID and 498 more through a node
alias of its own (alias selectors ``region`` + ``host``, both on the node), every tree three
levels deep (a root entry, its children and grandchildren: "two-level descendants"), plus one
decoy alias per agent that shares the region selector but needs a tag no node has. That makes
100,000 entries (200 of them aliases); each agent is authorized for 998 entries.

Absolute times depend on the machine, so each number is also printed as a ratio to a floor
measured in the same run: building a dict of the 100,000 entries by id (for the build), and
iterating 998 entries with one attribute test into a tuple (for a lookup). The targets (build
< 3 s, lookup p50 < 5 ms on a 2-core machine) are printed next to the numbers, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from pyspire.registry.authorized import AuthorizedEntriesIndex
from pyspire.registry.validation import node_alias_parent
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

TRUST_DOMAIN = TrustDomain("example.org")
REGIONS = 10
WORKLOAD_SELECTOR = (Selector("k8s", "ns:default"), Selector("k8s", "sa:app"))


def agent_id(number: int) -> SpiffeId:
    return SpiffeId.parse(f"spiffe://example.org/spire/agent/x509pop/{number:040x}")


def node_selectors(number: int) -> tuple[Selector, ...]:
    return (
        Selector("x509pop", f"region:r{number % REGIONS}"),
        Selector("x509pop", f"host:h{number}"),
        Selector("x509pop", "subject:cn:node"),
        Selector("x509pop", f"ca:fingerprint:{number % 3}"),
    )


class Registry:
    """Generates the benchmark's entries with sequential ids."""

    def __init__(self) -> None:
        self.entries: list[RegistrationEntry] = []

    def add(self, spiffe_id: str, parent_id: SpiffeId, selectors: tuple[Selector, ...]) -> SpiffeId:
        spiffe = SpiffeId.parse(spiffe_id)
        self.entries.append(
            RegistrationEntry(
                id=f"{len(self.entries):08d}",
                spiffe_id=spiffe,
                parent_id=parent_id,
                selectors=selectors,
                revision_number=1,
            )
        )
        return spiffe

    def tree(self, prefix: str, root_parent: SpiffeId, roots: int, budget: int) -> None:
        """``roots`` entries under ``root_parent``, then children and grandchildren, until
        ``budget`` entries were made."""
        made = 0
        for root in range(roots):
            root_id = self.add(f"{prefix}/r{root}", root_parent, WORKLOAD_SELECTOR)
            made += 1
            for child in range(2):
                if made >= budget:
                    return
                child_id = self.add(f"{prefix}/r{root}/c{child}", root_id, WORKLOAD_SELECTOR)
                made += 1
                if made >= budget:
                    return
                self.add(f"{prefix}/r{root}/c{child}/g", child_id, WORKLOAD_SELECTOR)
                made += 1


def build_registry(
    agents: int,
) -> tuple[list[RegistrationEntry], dict[SpiffeId, tuple[Selector, ...]]]:
    registry = Registry()
    server = node_alias_parent(TRUST_DOMAIN)
    for number in range(agents):
        registry.tree(f"spiffe://example.org/direct/a{number}", agent_id(number), 100, 500)
        alias = registry.add(
            f"spiffe://example.org/nodes/h{number}",
            server,
            (
                Selector("x509pop", f"region:r{number % REGIONS}"),
                Selector("x509pop", f"host:h{number}"),
            ),
        )
        registry.tree(f"spiffe://example.org/aliased/a{number}", alias, 100, 498)
    # Decoys: share a selector with many nodes but need a tag none has.
    decoys = [
        RegistrationEntry(
            id=f"decoy{number}",
            spiffe_id=SpiffeId.parse(f"spiffe://example.org/nodes/decoy{number}"),
            parent_id=server,
            selectors=(
                Selector("x509pop", f"region:r{number % REGIONS}"),
                Selector("x509pop", f"tag:missing{number}"),
            ),
        )
        for number in range(agents)
    ]
    entries = registry.entries + decoys
    selectors = {agent_id(number): node_selectors(number) for number in range(agents)}
    return entries, selectors


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def best_of(repeats: int, function: Callable[[], object]) -> float:
    return min(timed(function) for _ in range(repeats))


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    started = time.perf_counter()
    entries, selectors = build_registry(args.agents)
    generated = time.perf_counter() - started
    aliases = sum(1 for entry in entries if entry.parent_id == node_alias_parent(TRUST_DOMAIN))
    print(
        f"registry: {len(entries):,} entries, {aliases} node aliases, {args.agents} agents "
        f"(generated in {generated:.2f} s)"
    )

    gc.collect()
    index = AuthorizedEntriesIndex(TRUST_DOMAIN)
    build = best_of(3, lambda: index.load(entries, selectors))
    build_floor = best_of(3, lambda: {entry.id: entry for entry in entries})

    now = datetime(2030, 1, 1, tzinfo=UTC)
    sample = index.authorized_entries(agent_id(0), now)
    held = len(sample)
    agents = [agent_id(rng.randrange(args.agents)) for _ in range(args.lookups)]
    lookups = []
    for agent in agents:
        start = time.perf_counter()
        index.authorized_entries(agent, now)
        lookups.append(time.perf_counter() - start)

    def floor() -> tuple[RegistrationEntry, ...]:
        out = []
        for entry in sample:
            if entry.expires_at is None or entry.expires_at >= now:
                out.append(entry)
        return tuple(out)

    floors = []
    for _ in range(args.lookups):
        start = time.perf_counter()
        floor()
        floors.append(time.perf_counter() - start)
    lookup_floor = statistics.median(floors)

    updates = []
    for number in range(1000):
        current = entries[rng.randrange(len(entries))]
        changed = replace(current, revision_number=current.revision_number + number + 1)
        start = time.perf_counter()
        index.upsert_entry(changed)
        updates.append(time.perf_counter() - start)

    p50 = statistics.median(lookups)
    p99 = percentile(lookups, 0.99)
    print(f"entries per agent: {held}")
    print(
        f"index build:   {build * 1000:9.1f} ms  = {build / build_floor:6.1f} x floor "
        f"(dict of {len(entries):,} by id: {build_floor * 1000:.1f} ms)   target < 3000 ms"
    )
    print(
        f"lookup p50:    {p50 * 1000:9.3f} ms  = {p50 / lookup_floor:6.1f} x floor "
        f"(iterate {held} entries into a tuple: {lookup_floor * 1000:.3f} ms)   target < 5 ms"
    )
    print(f"lookup p99:    {p99 * 1000:9.3f} ms  = {p99 / lookup_floor:6.1f} x floor")
    print(
        f"upsert p50:    {statistics.median(updates) * 1e6:9.1f} us  "
        f"p99 {percentile(updates, 0.99) * 1e6:.1f} us"
    )
    print(f"total run time: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
