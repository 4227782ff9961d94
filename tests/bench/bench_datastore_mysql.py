# ruff: noqa: S608 - SQL text is built from constants and generated numbers only
"""The ``mysql`` datastore against raw asyncmy queries of the same rows, in one run.

Fills a throwaway database on the local MariaDB with 100,000 entries (1,000 agents as parents,
three selectors each, a DNS name on every third, a federated trust domain on every tenth) and
50,000 attested agents with two selectors each, then measures, each against a floor taken in
the same run (best of a few runs each):

- ``list_all_entries`` against the same four queries with bare asyncmy, rows left as tuples;
- what a server's start reads to serve (its registry cache's load: ``last_change_event_id``,
  ``list_all_entries``, ``list_all_node_selectors``) against the same five raw queries;
- ``create_entries`` of 1,000 new entries against one raw asyncmy transaction inserting the
  same entry and selector rows with multi-row ``INSERT`` statements;
- a filtered ``list_entries`` page (500 entries having a selector, SUPERSET) against a raw
  query of the same page and its selectors.

    .venv/bin/python tests/bench/bench_datastore_mysql.py [entries] [agents]
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.connection import ConnectionTarget
from pyspire_datastore_mysql.session import execute, executemany, fetch, open_connection
from pyspire_datastore_mysql.testing import find_server, throwaway_database

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugins.datastore import EntryFilter, MatchBehavior, Page, SelectorMatch
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.stored_records import selectors_hash
from pyspire_sdk.testing import make_host_services

RUNS = 3
BATCH = 1000
PAGE = 500
PARTNER = "partner.test"
NOW_MICROS = 1_893_456_000_000_000  # 2030-01-01
CHUNK = 5000


def _selectors(pk: int) -> tuple[Selector, ...]:
    return (
        Selector("k8s", f"ns:team-{pk % 50}"),
        Selector("k8s", f"sa:service-{pk}"),
        Selector("unix", f"uid:{1000 + pk % 20}"),
    )


def _identity(spiffe_id: str, parent_id: str, digest: bytes) -> bytes:
    return hashlib.sha256(b"\0".join((spiffe_id.encode(), parent_id.encode(), digest))).digest()


async def _insert(connection: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    for start in range(0, len(rows), CHUNK):
        await executemany(connection, sql, rows[start : start + CHUNK])


async def fill(connection: Any, entries: int, agents: int) -> None:
    """Rows straight into the tables with multi-row INSERTs (creating them call by call would
    measure inserts, not the reads)."""
    entry_rows, selector_rows, dns_rows, federates_rows = [], [], [], []
    for pk in range(1, entries + 1):
        selectors = _selectors(pk)
        spiffe_id = f"spiffe://example.org/ns/team-{pk % 50}/sa/service-{pk}"
        parent_id = f"spiffe://example.org/spire/agent/k8s_psat/cluster/node-{pk % 1000}"
        digest = selectors_hash(selectors)
        entry_rows.append(
            (
                pk,
                f"entry-{pk:08}",
                spiffe_id,
                parent_id,
                digest,
                _identity(spiffe_id, parent_id, digest),
                3600,
                300,
                pk % 7,
                NOW_MICROS,
            )
        )
        selector_rows.extend((pk, i, s.type, s.value) for i, s in enumerate(selectors))
        if pk % 3 == 0:
            dns_rows.append((pk, 0, f"service-{pk}.example.org"))
        if pk % 10 == 0:
            federates_rows.append((pk, 0, PARTNER))
    await connection.begin()
    await _insert(
        connection,
        "INSERT INTO entries (pk, entry_id, spiffe_id, parent_id, selectors_hash, identity_hash, "
        "x509_svid_ttl, jwt_svid_ttl, admin, downstream, expires_at, revision_number, "
        "store_svid, hint, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, 0, NULL, %s, "
        "0, '', %s)",
        entry_rows,
    )
    await _insert(
        connection,
        "INSERT INTO entry_selectors (entry_pk, position, type, value) VALUES (%s, %s, %s, %s)",
        selector_rows,
    )
    await _insert(
        connection,
        "INSERT INTO entry_dns_names (entry_pk, position, name) VALUES (%s, %s, %s)",
        dns_rows,
    )
    await _insert(
        connection,
        "INSERT INTO entry_federates_with (entry_pk, position, trust_domain) VALUES (%s, %s, %s)",
        federates_rows,
    )
    agent = "spiffe://example.org/spire/agent/k8s_psat/cluster/node-{}"
    await _insert(
        connection,
        "INSERT INTO attested_nodes (spiffe_id, attestation_type, serial_number, expires_at, "
        "new_serial_number, new_expires_at, banned, can_reattest, agent_version) "
        "VALUES (%s, 'k8s_psat', %s, %s, '', NULL, 0, 1, '1.0')",
        [(agent.format(n), f"{n:032x}", NOW_MICROS) for n in range(agents)],
    )
    await _insert(
        connection,
        "INSERT INTO node_selectors (spiffe_id, position, type, value) VALUES (%s, %s, %s, %s)",
        [
            (agent.format(n), i, t, v)
            for n in range(agents)
            for i, (t, v) in enumerate((("k8s_psat", "cluster:c"), ("k8s_psat", f"node:{n}")))
        ],
    )
    await connection.commit()
    for table in ("entries", "entry_selectors", "attested_nodes", "node_selectors"):
        await fetch(connection, f"ANALYZE TABLE {table}")


async def raw_list_all(connection: Any) -> int:
    await execute(connection, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    await execute(connection, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    rows = await fetch(
        connection,
        "SELECT pk, entry_id, spiffe_id, parent_id, x509_svid_ttl, jwt_svid_ttl, admin, "
        "downstream, expires_at, revision_number, store_svid, hint, created_at "
        "FROM entries ORDER BY pk",
    )
    await fetch(
        connection, "SELECT entry_pk, type, value FROM entry_selectors ORDER BY entry_pk, position"
    )
    await fetch(connection, "SELECT entry_pk, name FROM entry_dns_names ORDER BY entry_pk")
    await fetch(connection, "SELECT entry_pk, trust_domain FROM entry_federates_with ORDER BY 1")
    await connection.commit()
    return len(rows)


async def raw_start(connection: Any) -> None:
    await fetch(connection, "SELECT last_event_id FROM change_event_counter WHERE only_row = 1")
    await raw_list_all(connection)
    await fetch(
        connection,
        "SELECT spiffe_id, type, value FROM node_selectors ORDER BY spiffe_id, position",
    )


def new_entries(round_: int) -> list[RegistrationEntry]:
    parent = SpiffeId.parse("spiffe://example.org/spire/agent/k8s_psat/cluster/node-1")
    return [
        RegistrationEntry(
            spiffe_id=SpiffeId.parse(f"spiffe://example.org/new/{round_}/{i}"),
            parent_id=parent,
            selectors=(Selector("k8s", f"ns:new-{round_}"), Selector("k8s", f"sa:{i}")),
            x509_svid_ttl=3600,
        )
        for i in range(BATCH)
    ]


async def raw_create(connection: Any, entries: list[RegistrationEntry]) -> None:
    await connection.begin()
    rows = []
    for e in entries:
        digest = selectors_hash(e.selectors)
        rows.append(
            (
                f"raw-{e.spiffe_id.path}",
                str(e.spiffe_id),
                str(e.parent_id),
                digest,
                _identity(str(e.spiffe_id), str(e.parent_id), digest),
                e.x509_svid_ttl,
                NOW_MICROS,
            )
        )
    await executemany(
        connection,
        "INSERT INTO entries (entry_id, spiffe_id, parent_id, selectors_hash, identity_hash, "
        "x509_svid_ttl, jwt_svid_ttl, admin, downstream, expires_at, revision_number, "
        "store_svid, hint, created_at) VALUES (%s, %s, %s, %s, %s, %s, 0, 0, 0, NULL, 0, 0, '', "
        "%s)",
        rows,
    )
    marks = ", ".join(["%s"] * len(rows))
    pks = dict(
        await fetch(
            connection,
            f"SELECT entry_id, pk FROM entries WHERE entry_id IN ({marks})",
            [row[0] for row in rows],
        )
    )
    await executemany(
        connection,
        "INSERT INTO entry_selectors (entry_pk, position, type, value) VALUES (%s, %s, %s, %s)",
        [
            (pks[row[0]], i, s.type, s.value)
            for row, e in zip(rows, entries, strict=True)
            for i, s in enumerate(e.selectors)
        ],
    )
    await connection.commit()


async def raw_page(connection: Any) -> int:
    rows = await fetch(
        connection,
        "SELECT e.pk, e.entry_id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, "
        "e.admin, e.downstream, e.expires_at, e.revision_number, e.store_svid, e.hint, "
        "e.created_at FROM entries AS e JOIN entry_selectors AS s ON s.entry_pk = e.pk "
        "WHERE s.type = 'unix' AND s.value = 'uid:1003' ORDER BY e.pk LIMIT %s",
        (PAGE + 1,),
    )
    pks = [row[0] for row in rows]
    await fetch(
        connection,
        "SELECT entry_pk, position, type, value FROM entry_selectors "
        f"WHERE entry_pk IN ({', '.join(['%s'] * len(pks))}) ORDER BY entry_pk, position",
        pks,
    )
    return len(rows)


async def best(action: Callable[[], Awaitable[object]], runs: int = RUNS) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        await action()
        timings.append(time.perf_counter() - started)
    return min(timings)


def show(name: str, measured: float, floor: float) -> None:
    print(
        f"{name}: {measured * 1000:.1f} ms; raw asyncmy floor {floor * 1000:.1f} ms; "
        f"ratio {measured / floor:.2f}x"
    )


async def _measure(store: MysqlDataStore, raw: Any, entries: int) -> None:
    floor = await best(lambda: raw_list_all(raw))

    async def list_all() -> None:
        assert len(await store.list_all_entries()) == entries

    show(f"list_all_entries ({entries} entries)", await best(list_all), floor)

    async def start() -> None:
        await store.last_change_event_id()
        await store.list_all_entries()
        await store.list_all_node_selectors()

    show(
        "registry load at start (event id, every entry, every agent's selectors)",
        await best(start),
        await best(lambda: raw_start(raw)),
    )

    rounds = iter(range(100))
    raw_rounds = iter(range(100))

    async def create() -> None:
        results = await store.create_entries(new_entries(next(rounds)))
        assert all(isinstance(r, RegistrationEntry) for r in results)

    async def create_raw() -> None:
        await raw_create(raw, new_entries(1000 + next(raw_rounds)))

    show(f"create_entries ({BATCH} entries, one batch)", await best(create), await best(create_raw))

    page_filter = EntryFilter(
        by_selectors=SelectorMatch((Selector("unix", "uid:1003"),), MatchBehavior.SUPERSET)
    )

    async def page() -> None:
        found = await store.list_entries(page_filter, Page(PAGE))
        assert len(found.entries) == PAGE

    show(
        f"list_entries filtered page ({PAGE} of {entries // 20})",
        await best(page, 5),
        await best(lambda: raw_page(raw), 5),
    )


async def main(entries: int, agents: int) -> None:
    server = await find_server()
    async with throwaway_database(server, prefix="pyspire_bench") as dsn:
        with tempfile.TemporaryDirectory() as directory:
            host = make_host_services(Path(directory))
            store = MysqlDataStore()
            await store.configure(
                MysqlDataStoreConfig(connection_string=dsn, max_open_conns=4), host
            )
            await store.create_bundle(
                Bundle(TrustDomain(PARTNER), jwt_authorities=(JwtAuthority("k", b"pk"),))
            )
            target = ConnectionTarget.parse("connection_string", dsn)
            raw = await open_connection(target, None, statement_timeout=0.0, read_only=False)
            try:
                started = time.perf_counter()
                await fill(raw, entries, agents)
                print(
                    f"filled {entries} entries and {agents} agents in "
                    f"{time.perf_counter() - started:.1f} s"
                )
                await _measure(store, raw, entries)
            finally:
                raw.close()
                await store.close()


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 50_000,
        )
    )
