"""The ``mysql`` datastore passes the SDK's datastore contract against a real MariaDB."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.datastore_contract import DataStoreContract

pytestmark = pytest.mark.mysql


class TestMysqlDataStoreContract(DataStoreContract):
    @pytest.fixture
    async def datastore(
        self, host_services: HostServices, mysql_dsn: str
    ) -> AsyncIterator[MysqlDataStore]:
        store = MysqlDataStore()
        await store.configure(
            MysqlDataStoreConfig(connection_string=mysql_dsn, max_open_conns=4, max_idle_conns=1),
            host_services,
        )
        yield store
        await store.close()
