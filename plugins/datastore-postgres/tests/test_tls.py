"""TLS settings reach the connection: a server that does not speak TLS is refused when the
configuration asks for it, with the key named and no secret shown."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from pyspire_datastore_postgres import PostgresDataStore, PostgresDataStoreConfig

from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import HostServices

pytestmark = pytest.mark.postgres


async def _configure(host_services: HostServices, **settings: object) -> None:
    store = PostgresDataStore()
    try:
        await store.configure(
            PostgresDataStoreConfig(max_open_conns=1, max_idle_conns=1, **settings),  # type: ignore[arg-type]
            host_services,
        )
    finally:
        await store.close()


async def _ssl_enabled(postgres_dsn: str) -> bool:
    connection = await asyncpg.connect(postgres_dsn)
    try:
        return bool(await connection.fetchval("SHOW ssl") == "on")
    finally:
        await connection.close()


async def test_sslmode_require_is_enforced(postgres_dsn: str, host_services: HostServices) -> None:
    if await _ssl_enabled(postgres_dsn):
        pytest.skip("the test server speaks TLS; this test needs one that does not")
    with pytest.raises(PluginError) as raised:
        await _configure(host_services, connection_string=f"{postgres_dsn}&sslmode=require")
    assert "connection_string" in str(raised.value)


async def test_a_root_ca_makes_the_connection_verify_the_server(
    postgres_dsn: str, host_services: HostServices, tmp_path: Path
) -> None:
    if await _ssl_enabled(postgres_dsn):
        pytest.skip("the test server speaks TLS; this test needs one that does not")
    missing = tmp_path / "absent-ca.pem"
    with pytest.raises(PluginError) as raised:
        await _configure(
            host_services,
            connection_string=postgres_dsn.replace("postgres@", "postgres:pw-secret@"),
            root_ca_path=missing,
        )
    message = str(raised.value)
    assert "connection_string" in message
    assert "pw-secret" not in message
