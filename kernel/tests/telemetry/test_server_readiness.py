"""The server's readiness checks over real parts: a SQLite datastore, an in-process key
manager, a real CA, and a fake clock to age the CA past its expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig

from pyspire.ca.manager import CaManager, CaSettings
from pyspire.server.readiness import ServerReadiness
from pyspire.telemetry.health import CheckResult, HealthChecks
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.testing import FakeClock


@pytest.fixture
async def parts(
    host_services: HostServices, fake_clock: FakeClock
) -> AsyncIterator[tuple[SqliteDataStore, CaManager]]:
    datastore = SqliteDataStore()
    await datastore.configure(SqliteDataStoreConfig(), host_services)
    keys = InProcessKeyManager()
    await keys.configure(NoConfig(), host_services)
    ca = CaManager(
        CaSettings(trust_domain=host_services.trust_domain, ca_ttl=timedelta(hours=1)),
        key_manager=keys,
        store=datastore,
        clock=fake_clock,
    )
    try:
        yield datastore, ca
    finally:
        await datastore.close()


async def results(readiness: ServerReadiness) -> dict[str, CheckResult]:
    return await HealthChecks(readiness.checks()).readiness()


async def test_not_ready_until_everything_is_up(
    parts: tuple[SqliteDataStore, CaManager], host_services: HostServices, fake_clock: FakeClock
) -> None:
    datastore, ca = parts
    readiness = ServerReadiness(host_services.trust_domain, fake_clock)
    starting = CheckResult(False, "the server is starting")
    assert await results(readiness) == {
        "datastore": starting,
        "ca": starting,
        "listeners": CheckResult(False, "not serving"),
    }
    readiness.datastore, readiness.ca = datastore, ca
    assert (await results(readiness))["ca"] == CheckResult(False, "no active X.509 CA")
    await ca.start()
    readiness.serving = True
    assert all(result.ready for result in (await results(readiness)).values())


async def test_an_expired_ca_is_not_ready(
    parts: tuple[SqliteDataStore, CaManager], host_services: HostServices, fake_clock: FakeClock
) -> None:
    datastore, ca = parts
    await ca.start()
    readiness = ServerReadiness(host_services.trust_domain, fake_clock)
    readiness.datastore, readiness.ca, readiness.serving = datastore, ca, True
    await fake_clock.advance(timedelta(hours=2))  # nothing rotated it meanwhile
    assert (await results(readiness))["ca"] == CheckResult(False, "the active X.509 CA has expired")


async def test_a_datastore_that_fails_is_not_ready(
    parts: tuple[SqliteDataStore, CaManager], host_services: HostServices, fake_clock: FakeClock
) -> None:
    datastore, ca = parts
    await ca.start()
    readiness = ServerReadiness(host_services.trust_domain, fake_clock)
    readiness.datastore, readiness.ca, readiness.serving = datastore, ca, True
    await datastore.close()
    found = (await results(readiness))["datastore"]
    assert found.ready is False
    assert found.message
