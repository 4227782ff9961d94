"""The ``sqlite`` datastore passes the SDK's datastore contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.datastore_contract import DataStoreContract


class TestSqliteDataStoreContract(DataStoreContract):
    @pytest.fixture
    async def datastore(
        self, host_services: HostServices, tmp_path: Path
    ) -> AsyncIterator[SqliteDataStore]:
        store = SqliteDataStore()
        await store.configure(
            SqliteDataStoreConfig(database_path=tmp_path / "db" / "datastore.sqlite3"),
            host_services,
        )
        yield store
        await store.close()
