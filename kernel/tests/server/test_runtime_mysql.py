"""A server on the ``mysql`` datastore starts, follows the changes other servers make to the
shared database, and stops cleanly (skipped where no MariaDB/MySQL server answers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.testing import ServerUnavailableError, find_server, throwaway_database

from pyspire.catalog import Discovery
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.registry.cache import RegistryCache
from pyspire.server import runtime as runtime_module
from pyspire.server.runtime import ServerRuntime
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugins.datastore import ChangeWatchingDataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import make_host_services

pytestmark = pytest.mark.mysql


@pytest.fixture
async def mysql_dsn() -> AsyncIterator[str]:
    try:
        server = await find_server()
    except ServerUnavailableError as error:
        pytest.skip(str(error))
    async with throwaway_database(server, prefix="pyspire_runtime") as dsn:
        yield dsn


async def test_a_server_refreshes_when_another_server_writes(
    tmp_path: Path, mysql_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    followed: list[RegistryCache] = []
    follow = runtime_module.follow_changes

    async def recording(datastore: ChangeWatchingDataStore, registry: RegistryCache) -> None:
        followed.append(registry)
        await follow(datastore, registry)

    monkeypatch.setattr(runtime_module, "follow_changes", recording)
    document = {
        "server": {
            "trust_domain": "example.org",
            "data_dir": str(tmp_path / "data"),
            "bind_address": "127.0.0.1",
            "bind_port": 0,
            "socket_path": str(tmp_path / "admin" / "api.sock"),
            "plugins": {
                "datastore": {
                    "mysql": {"connection_string": mysql_dsn, "events_poll_interval": "20ms"}
                },
                "key_manager": {"disk": {}},
                "node_attestor": {"join_token": {}},
            },
        }
    }
    runtime = ServerRuntime(load_document(SERVER_SCHEMA, document), Discovery.load())
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(runtime.ready.wait(), timeout=30)
        for _ in range(200):
            if followed:
                break
            await asyncio.sleep(0.01)
        (registry,) = followed
        other = MysqlDataStore()  # another server sharing the database
        await other.configure(
            MysqlDataStoreConfig(connection_string=mysql_dsn), make_host_services(tmp_path)
        )
        agent = SpiffeId.parse("spiffe://example.org/spire/agent/x")
        try:
            await other.create_entry(
                RegistrationEntry(
                    spiffe_id=SpiffeId.parse("spiffe://example.org/w"),
                    parent_id=agent,
                    selectors=(Selector("unix", "uid:1"),),
                )
            )
        finally:
            await other.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not registry.authorized_entries(agent):
            assert loop.time() < deadline, "the entry never reached the server's registry"
            await asyncio.sleep(0.01)
    finally:
        runtime.stop()
        await asyncio.wait_for(task, timeout=30)
