# ruff: noqa: S608 - SQL text is built from constants and generated numbers only
"""Which asyncio MySQL/MariaDB driver the ``mysql`` datastore uses: asyncmy or aiomysql.

Both drivers do the work the datastore does most, against the local MariaDB
(127.0.0.1:3306, root, empty password), in a database of its own dropped at the end:

- **bulk read**: 100,000 rows shaped like entry rows (what ``list_all_entries`` reads);
- **round trips**: 2,000 one-row queries one after another (what single-record calls cost);
- **batch insert**: 1,000 rows in one ``executemany`` (what a batch create writes).

The floor of each is the ``mariadb`` command-line client (C, libmariadb) doing the same work
in the same run, its start-up time measured and taken off. Figures are the best of five.

    .venv/bin/python tests/bench/bench_mysql_drivers.py
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiomysql
import asyncmy

HOST, PORT, USER = "127.0.0.1", 3306, "root"
ROWS = 100_000
ROUND_TRIPS = 2_000
INSERTS = 1_000
REPEAT = 5
_SELECT = (
    "SELECT pk, entry_id, spiffe_id, parent_id, x509_svid_ttl, jwt_svid_ttl, admin, "
    "expires_at, revision_number, hint, created_at FROM bench_rows ORDER BY pk"
)
_INSERT = (
    "INSERT INTO bench_insert (entry_id, spiffe_id, parent_id, x509_svid_ttl, created_at) "
    "VALUES (%s, %s, %s, %s, %s)"
)


def _client(database: str, sql: str) -> float:
    """Seconds the ``mariadb`` client takes to run ``sql`` (fed on standard input)."""
    started = time.perf_counter()
    subprocess.run(
        ["mariadb", "-h", HOST, "-P", str(PORT), "-u", USER, "-N", "-B", database],
        input=sql.encode(),
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started


def _insert_rows(tag: str) -> list[tuple[Any, ...]]:
    return [
        (
            f"{tag}-{i}",
            f"spiffe://example.org/workload/{i}",
            "spiffe://example.org/spire/agent/join_token/x",
            3600,
            1_700_000_000_000_000 + i,
        )
        for i in range(INSERTS)
    ]


def _insert_sql(tag: str) -> str:
    values = ",".join(f"('{a}','{b}','{c}',{d},{e})" for a, b, c, d, e in _insert_rows(tag))
    return (
        "INSERT INTO bench_insert (entry_id, spiffe_id, parent_id, x509_svid_ttl, created_at) "
        f"VALUES {values};"
    )


async def _best(make: Callable[[], Awaitable[float]]) -> float:
    return min([await make() for _ in range(REPEAT)])


async def _setup(database: str) -> None:
    connection = await asyncmy.connect(host=HOST, port=PORT, user=USER, autocommit=True)
    async with connection.cursor() as cursor:
        await cursor.execute(f"CREATE DATABASE `{database}`")
        await cursor.execute(f"USE `{database}`")
        await cursor.execute(
            "CREATE TABLE bench_rows (pk BIGINT PRIMARY KEY, entry_id VARCHAR(255), "
            "spiffe_id VARCHAR(2048), parent_id VARCHAR(2048), x509_svid_ttl INT, "
            "jwt_svid_ttl INT, admin BOOL, expires_at BIGINT NULL, revision_number BIGINT, "
            "hint VARCHAR(1024), created_at BIGINT)"
        )
        await cursor.execute(
            "CREATE TABLE bench_insert (pk BIGINT AUTO_INCREMENT PRIMARY KEY, "
            "entry_id VARCHAR(255), spiffe_id VARCHAR(2048), parent_id VARCHAR(2048), "
            "x509_svid_ttl INT, created_at BIGINT)"
        )
        await cursor.execute(
            "INSERT INTO bench_rows SELECT seq, CONCAT('id-', seq), "
            "CONCAT('spiffe://example.org/workload/', seq), "
            "CONCAT('spiffe://example.org/spire/agent/', seq % 500), 3600, 300, seq % 2, "
            f"NULL, 0, '', 1700000000000000 + seq FROM seq_1_to_{ROWS}"
        )
    connection.close()


async def _drop(database: str) -> None:
    connection = await asyncmy.connect(host=HOST, port=PORT, user=USER, autocommit=True)
    async with connection.cursor() as cursor:
        await cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
    connection.close()


async def _measure(connect: Callable[[], Awaitable[Any]], name: str) -> dict[str, float]:
    connection = await connect()
    figures: dict[str, float] = {}

    async def bulk() -> float:
        started = time.perf_counter()
        async with connection.cursor() as cursor:
            await cursor.execute(_SELECT)
            rows = await cursor.fetchall()
        assert len(rows) == ROWS
        return time.perf_counter() - started

    async def trips() -> float:
        started = time.perf_counter()
        async with connection.cursor() as cursor:
            for i in range(ROUND_TRIPS):
                await cursor.execute("SELECT entry_id FROM bench_rows WHERE pk = %s", (i + 1,))
                await cursor.fetchall()
        return time.perf_counter() - started

    async def batch() -> float:
        rows = _insert_rows(f"{name}-{secrets.token_hex(4)}")
        started = time.perf_counter()
        async with connection.cursor() as cursor:
            await cursor.executemany(_INSERT, rows)
        await connection.commit()
        return time.perf_counter() - started

    figures["bulk read"] = await _best(bulk)
    figures["round trips"] = await _best(trips)
    figures["batch insert"] = await _best(batch)
    connection.close()
    return figures


def _floors(database: str) -> dict[str, float]:
    start = min(_client(database, "SELECT 1;") for _ in range(REPEAT))
    trips = "".join(
        f"SELECT entry_id FROM bench_rows WHERE pk = {i + 1};" for i in range(ROUND_TRIPS)
    )
    return {
        "bulk read": min(_client(database, _SELECT + ";") for _ in range(REPEAT)) - start,
        "round trips": min(_client(database, trips) for _ in range(REPEAT)) - start,
        "batch insert": min(_client(database, _insert_sql(f"floor-{n}")) for n in range(REPEAT))
        - start,
    }


async def main() -> None:
    database = f"pyspire_bench_{secrets.token_hex(4)}"
    await _setup(database)
    try:
        floors = _floors(database)
        drivers = {
            "asyncmy": await _measure(
                lambda: asyncmy.connect(host=HOST, port=PORT, user=USER, database=database),
                "asyncmy",
            ),
            "aiomysql": await _measure(
                lambda: aiomysql.connect(host=HOST, port=PORT, user=USER, db=database),
                "aiomysql",
            ),
        }
    finally:
        await _drop(database)
    print(
        f"{'work':<14} {'floor (mariadb client) ms':>26} "
        + " ".join(f"{name + ' ms':>12} {'x floor':>8}" for name in drivers)
    )
    for work, floor in floors.items():
        cells = " ".join(
            f"{figures[work] * 1000:12.1f} {figures[work] / floor:8.2f}"
            for figures in drivers.values()
        )
        print(f"{work:<14} {floor * 1000:26.1f} {cells}")


if __name__ == "__main__":
    asyncio.run(main())
