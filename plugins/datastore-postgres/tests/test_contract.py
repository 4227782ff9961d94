"""The ``postgres`` datastore passes the SDK's datastore contract, unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pyspire_datastore_postgres import PostgresDataStore, PostgresDataStoreConfig

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.datastore_contract import DataStoreContract

pytestmark = pytest.mark.postgres


class TestPostgresDataStoreContract(DataStoreContract):
    @pytest.fixture
    async def datastore(
        self, host_services: HostServices, postgres_dsn: str
    ) -> AsyncIterator[PostgresDataStore]:
        store = PostgresDataStore()
        await store.configure(
            PostgresDataStoreConfig(
                connection_string=postgres_dsn, max_open_conns=4, max_idle_conns=1
            ),
            host_services,
        )
        yield store
        await store.close()
