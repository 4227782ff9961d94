"""``pyspire-server datastore copy`` between real datastores: SQLite to PostgreSQL and back,
interrupted by a kill and resumed; SQLite to MySQL (MariaDB) and back; each verified by both the
command and a read of both sides."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from processes import SERVER
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.testing import ServerUnavailableError as MysqlUnavailableError
from pyspire_datastore_mysql.testing import find_server as find_mysql_server
from pyspire_datastore_mysql.testing import throwaway_database
from pyspire_datastore_postgres import PostgresDataStore, PostgresDataStoreConfig
from pyspire_datastore_postgres.testing import (
    ServerUnavailableError,
    find_server,
    throwaway_schema,
)
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.model import (
    AttestedNode,
    FederationProfile,
    FederationRelationship,
    JoinToken,
    RegistrationEntry,
)
from pyspire_sdk.plugins.datastore import DataStore, Page
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import make_host_services
from pyspire_sdk.testing.fake_clock import FakeClock

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ENTRIES = 5000
SERVER_ID = "0123456789abcdef0123456789abcdef"
TD = TrustDomain("example.org")
FEDERATED = TrustDomain("partner.test")


@pytest.fixture
async def postgres_dsn() -> AsyncIterator[str]:
    try:
        server = await find_server()
    except ServerUnavailableError as error:
        pytest.skip(str(error))
    async with throwaway_schema(server, prefix="pyspire_copy") as dsn:
        yield dsn


@pytest.fixture
async def mysql_dsn() -> AsyncIterator[str]:
    try:
        server = await find_mysql_server()
    except MysqlUnavailableError as error:
        pytest.skip(str(error))
    async with throwaway_database(server, prefix="pyspire_copy") as dsn:
        yield dsn


def _mysql_config(path: Path, dsn: str) -> Path:
    path.write_text(
        f'[server]\ntrust_domain = "example.org"\ndata_dir = "{path.parent}"\n'
        f'[server.plugins.datastore.mysql]\nconnection_string = "{dsn}"\n'
        "max_open_conns = 2\nmax_idle_conns = 1\n"
    )
    return path


def _sqlite_config(path: Path, database: Path) -> Path:
    path.write_text(
        f'[server]\ntrust_domain = "example.org"\ndata_dir = "{path.parent}"\n'
        f'[server.plugins.datastore.sqlite]\ndatabase_path = "{database}"\n'
    )
    return path


def _postgres_config(path: Path, dsn: str) -> Path:
    path.write_text(
        f'[server]\ntrust_domain = "example.org"\ndata_dir = "{path.parent}"\n'
        f'[server.plugins.datastore.postgres]\nconnection_string = "{dsn}"\n'
        "max_open_conns = 2\nmax_idle_conns = 1\n"
    )
    return path


async def _fill(store: DataStore, clock: FakeClock, entries: int = ENTRIES) -> None:
    await store.create_bundle(Bundle(TD, jwt_authorities=(JwtAuthority("own", b"key"),)))
    await store.create_bundle(
        Bundle(FEDERATED, jwt_authorities=(JwtAuthority("theirs", b"k2"),), sequence_number=4)
    )
    await store.create_federation_relationship(
        FederationRelationship(
            FEDERATED, "https://partner.test/bundle", FederationProfile.HTTPS_WEB
        )
    )
    await store.set_ca_journal("ca-journal", b'{"journal": 1}')
    await store.set_ca_journal(f"ca-journal/{SERVER_ID}", b'{"journal": 2}')
    await store.create_join_token(JoinToken("token-1", clock.now() + timedelta(hours=1)))
    agent = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/token-0")
    await store.create_attested_node(
        AttestedNode(
            spiffe_id=agent,
            attestation_type="join_token",
            x509_svid_serial_number="01",
            x509_svid_expires_at=datetime(2031, 1, 1, tzinfo=UTC),
            selectors=(Selector("join_token", "token-0"),),
        )
    )
    await store.set_node_selectors(
        SpiffeId.parse("spiffe://example.org/spire/agent/pending"), (Selector("k8s", "ns:a"),)
    )
    for start in range(0, entries, 1000):
        await clock.advance(timedelta(seconds=1))
        results = await store.create_entries(
            [
                RegistrationEntry(
                    spiffe_id=SpiffeId.parse(f"spiffe://example.org/w/{i}"),
                    parent_id=agent,
                    selectors=(Selector("unix", f"uid:{i}"), Selector("k8s", "ns:prod")),
                    federates_with=(FEDERATED,) if i % 10 == 0 else (),
                    dns_names=(f"w{i}.example.org",) if i % 3 == 0 else (),
                    hint="copied",
                )
                for i in range(start, start + 1000)
            ]
        )
        assert all(isinstance(result, RegistrationEntry) for result in results)
    first = (await store.list_entries(page=Page(1))).entries[0]
    await store.update_entry(first, frozenset({"hint"}))


async def _snapshot(store: DataStore) -> tuple[object, ...]:
    return (
        await store.list_all_entries(),
        (await store.list_bundles()).bundles,
        (await store.list_federation_relationships()).relationships,
        (await store.list_attested_nodes()).nodes,
        await store.list_all_node_selectors(),
        await store.fetch_join_token("token-1"),
        await store.get_ca_journal("ca-journal"),
        await store.get_ca_journal(f"ca-journal/{SERVER_ID}"),
    )


def _copy(source: Path, destination: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SERVER), "datastore", "copy", "-from", str(source), "-to", str(destination)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_sqlite_to_postgres_interrupted_resumed_and_back(
    tmp_path: Path, postgres_dsn: str
) -> None:
    clock = FakeClock()
    host = make_host_services(tmp_path, clock=clock)
    (tmp_path / "server-id").write_text(f"{SERVER_ID}\n")  # the journal of this server too
    sqlite_file = tmp_path / "old.sqlite3"
    sqlite = SqliteDataStore()
    await sqlite.configure(SqliteDataStoreConfig(database_path=sqlite_file), host)
    await _fill(sqlite, clock)
    expected = await _snapshot(sqlite)
    await sqlite.close()
    old = _sqlite_config(tmp_path / "old.toml", sqlite_file)
    new = _postgres_config(tmp_path / "new.toml", postgres_dsn)

    # First run: killed as soon as the first batch of entries is in.
    process = await asyncio.create_subprocess_exec(
        str(SERVER),
        "datastore",
        "copy",
        "-from",
        str(old),
        "-to",
        str(new),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[bytes] = []
    async for line in process.stdout:
        lines.append(line)
        if line.startswith(b"entries: copied"):
            process.kill()
            break
    assert await asyncio.wait_for(process.wait(), timeout=60) == -signal.SIGKILL, lines

    resumed = await asyncio.to_thread(_copy, old, new)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = next(
        line
        for line in resumed.stdout.splitlines()
        if line.startswith("entries: copied ") and "already present" in line
    )
    copied, present = (int(part.split()[-1]) for part in summary.split(","))
    assert 0 < present < ENTRIES and copied == ENTRIES - present, resumed.stdout
    assert "join tokens: copied 0, already present 1" in resumed.stdout
    assert f"verified entries: {ENTRIES}" in resumed.stdout
    assert "datastore copy complete" in resumed.stdout

    postgres = PostgresDataStore()
    await postgres.configure(PostgresDataStoreConfig(connection_string=postgres_dsn), host)
    try:
        assert await _snapshot(postgres) == expected
    finally:
        await postgres.close()

    # Running it again finds nothing to do.
    again = await asyncio.to_thread(_copy, old, new)
    assert again.returncode == 0, again.stderr
    assert f"entries: copied 0, already present {ENTRIES}" in again.stdout

    # And back, into a new SQLite file.
    back_file = tmp_path / "back.sqlite3"
    back = await asyncio.to_thread(_copy, new, _sqlite_config(tmp_path / "back.toml", back_file))
    assert back.returncode == 0, back.stdout + back.stderr
    restored = SqliteDataStore()
    await restored.configure(SqliteDataStoreConfig(database_path=back_file), host)
    try:
        assert await _snapshot(restored) == expected
    finally:
        await restored.close()


@pytest.mark.mysql
async def test_sqlite_to_mysql_and_back(tmp_path: Path, mysql_dsn: str) -> None:
    entries = 2000
    clock = FakeClock()
    host = make_host_services(tmp_path, clock=clock)
    (tmp_path / "server-id").write_text(f"{SERVER_ID}\n")  # the journal of this server too
    sqlite_file = tmp_path / "old.sqlite3"
    sqlite = SqliteDataStore()
    await sqlite.configure(SqliteDataStoreConfig(database_path=sqlite_file), host)
    await _fill(sqlite, clock, entries)
    expected = await _snapshot(sqlite)
    await sqlite.close()
    old = _sqlite_config(tmp_path / "old.toml", sqlite_file)
    new = _mysql_config(tmp_path / "new.toml", mysql_dsn)

    copied = await asyncio.to_thread(_copy, old, new)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert f"entries: copied {entries}, already present 0" in copied.stdout
    assert f"verified entries: {entries}" in copied.stdout
    assert "datastore copy complete" in copied.stdout
    mysql = MysqlDataStore()
    await mysql.configure(MysqlDataStoreConfig(connection_string=mysql_dsn), host)
    try:
        assert await _snapshot(mysql) == expected
    finally:
        await mysql.close()

    back_file = tmp_path / "back.sqlite3"
    back = await asyncio.to_thread(_copy, new, _sqlite_config(tmp_path / "back.toml", back_file))
    assert back.returncode == 0, back.stdout + back.stderr
    restored = SqliteDataStore()
    await restored.configure(SqliteDataStoreConfig(database_path=back_file), host)
    try:
        assert await _snapshot(restored) == expected
    finally:
        await restored.close()


def test_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    good = _sqlite_config(tmp_path / "good.toml", tmp_path / "db.sqlite3")
    missing = _copy(tmp_path / "absent.toml", good)
    assert missing.returncode == 1
    assert "-from" in missing.stderr and "absent.toml" in missing.stderr
    none = tmp_path / "none.toml"
    none.write_text('[server]\ntrust_domain = "example.org"\ndata_dir = "/tmp"\n')
    result = _copy(good, none)
    assert result.returncode == 1
    assert "-to" in result.stderr and "none.toml" in result.stderr
    assert "server.plugins.datastore must name exactly one datastore" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[server]\ntrust_domain = "example.org"\ndata_dir = "/tmp"\n'
        "[server.plugins.datastore.sqlite]\nread_connections = 0\n"
    )
    result = _copy(good, bad)
    assert result.returncode == 1
    assert "server.plugins.datastore.sqlite.read_connections" in result.stderr
