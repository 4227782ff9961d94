"""How long ``list_all_entries`` takes for 100,000 entries (target: under 1.5 s).

Fills a fresh database with realistic entries (1,000 agents as parents, three selectors each,
a DNS name on every third entry, a federated trust domain on every tenth), then times
``list_all_entries`` and, as a floor measured in the same run, the bare ``sqlite3`` fetch of the
same rows without building any records. Prints the figures and their ratio.

    .venv/bin/python plugins/datastore-sqlite/bench/bench_list_all_entries.py [entries]
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.stored_records import selectors_hash, to_micros
from pyspire_sdk.testing import make_host_services

RUNS = 3


def fill(path: Path, count: int, created_at: int) -> None:
    """Insert ``count`` entries straight into the schema (creating them one call at a time
    would measure inserts, not the bulk read)."""
    with sqlite3.connect(path) as connection:
        entries: list[tuple[object, ...]] = []
        selectors: list[tuple[int, int, str, str]] = []
        dns_names: list[tuple[int, int, str]] = []
        federates: list[tuple[int, int, str]] = []
        for pk in range(1, count + 1):
            entry_selectors = (
                Selector("k8s", f"ns:team-{pk % 50}"),
                Selector("k8s", f"sa:service-{pk}"),
                Selector("unix", f"uid:{1000 + pk % 20}"),
            )
            entries.append(
                (
                    pk,
                    f"entry-{pk:08}",
                    f"spiffe://example.org/ns/team-{pk % 50}/sa/service-{pk}",
                    f"spiffe://example.org/spire/agent/k8s_psat/cluster/node-{pk % 1000}",
                    selectors_hash(entry_selectors),
                    3600,
                    300,
                    0,
                    0,
                    None,
                    pk % 7,
                    0,
                    "",
                    created_at,
                )
            )
            selectors.extend(
                (pk, position, selector.type, selector.value)
                for position, selector in enumerate(entry_selectors)
            )
            if pk % 3 == 0:
                dns_names.append((pk, 0, f"service-{pk}.example.org"))
            if pk % 10 == 0:
                federates.append((pk, 0, "partner.test"))
        connection.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", entries
        )
        connection.executemany("INSERT INTO entry_selectors VALUES (?, ?, ?, ?)", selectors)
        connection.executemany("INSERT INTO entry_dns_names VALUES (?, ?, ?)", dns_names)
        connection.executemany("INSERT INTO entry_federates_with VALUES (?, ?, ?)", federates)


def bare_fetch(path: Path) -> int:
    """The floor: the same four queries with plain ``sqlite3``, rows left as tuples."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT * FROM entries ORDER BY pk").fetchall()
        connection.execute(
            "SELECT entry_pk, type, value FROM entry_selectors ORDER BY entry_pk, position"
        ).fetchall()
        connection.execute("SELECT entry_pk, name FROM entry_dns_names").fetchall()
        connection.execute("SELECT entry_pk, trust_domain FROM entry_federates_with").fetchall()
    return len(rows)


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.sqlite3"
        host = make_host_services(Path(directory))
        store = SqliteDataStore()
        await store.configure(SqliteDataStoreConfig(database_path=path), host)
        await store.create_bundle(
            Bundle(TrustDomain("partner.test"), jwt_authorities=(JwtAuthority("k", b"pk"),))
        )
        started = time.perf_counter()
        await asyncio.to_thread(fill, path, count, to_micros(host.clock.now()))
        print(f"filled {count} entries in {time.perf_counter() - started:.2f} s")

        floor = min(_timed(lambda: bare_fetch(path)) for _ in range(RUNS))
        timings = []
        for _ in range(RUNS):
            started = time.perf_counter()
            entries = await store.list_all_entries()
            timings.append(time.perf_counter() - started)
            assert len(entries) == count
            del entries  # freeing a million objects is not part of the next run
        await store.close()

    best = min(timings)
    print(f"bare sqlite3 fetch (floor): {floor:.3f} s")
    print(
        f"list_all_entries: best {best:.3f} s, runs "
        + ", ".join(f"{t:.3f}" for t in timings)
        + f" ({best / floor:.1f}x the floor, {best / count * 1e6:.1f} us per entry)"
    )
    print("target < 1.5 s for 100,000 entries: " + ("met" if best < 1.5 else "NOT met"))


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
