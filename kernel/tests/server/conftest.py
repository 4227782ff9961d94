"""A real server context for API tests: SQLite datastore on disk, in-process keys, real CA,
registry cache and issuer, the join_token node attestor, and a fake clock."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig
from pyspire_nodeattestor_join_token import ServerJoinTokenAttestor

from pyspire.ca.manager import CaManager, CaSettings
from pyspire.registry.cache import RegistryCache
from pyspire.server.context import ServerContext
from pyspire.server.issuer import IssuancePolicy, SvidIssuer
from pyspire.server.join_tokens import DataStoreJoinTokens
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.testing import FakeClock


@pytest.fixture
async def server_context(
    host_services: HostServices, fake_clock: FakeClock
) -> AsyncIterator[ServerContext]:
    datastore = SqliteDataStore()
    await datastore.configure(SqliteDataStoreConfig(), host_services)
    keys = InProcessKeyManager()
    await keys.configure(NoConfig(), host_services)
    ca = CaManager(
        CaSettings(trust_domain=host_services.trust_domain, ca_ttl=timedelta(hours=24)),
        key_manager=keys,
        store=datastore,
        clock=fake_clock,
    )
    await ca.start()
    registry = RegistryCache(datastore, host_services.trust_domain, fake_clock)
    await registry.start()
    join_token = ServerJoinTokenAttestor()
    await join_token.configure(
        NoConfig(),
        dataclasses.replace(
            host_services, join_tokens=DataStoreJoinTokens(datastore), plugin_name="join_token"
        ),
    )
    yield ServerContext(
        trust_domain=host_services.trust_domain,
        clock=fake_clock,
        datastore=datastore,
        ca=ca,
        registry=registry,
        issuer=SvidIssuer(ca=ca, clock=fake_clock, policy=IssuancePolicy()),
        node_attestors={"join_token": join_token},
        started_at=fake_clock.now(),
    )
    await join_token.close()
    await keys.close()
    await datastore.close()
