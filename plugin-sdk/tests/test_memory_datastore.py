"""The in-memory datastore passes the datastore contract, and keeps its own promises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from pyspire_sdk.errors import PluginError
from pyspire_sdk.memory_datastore import MemoryDataStore
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.plugins.datastore import DataStore, FailedPreconditionError
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import make_host_services
from pyspire_sdk.testing.datastore_contract import DataStoreContract

PARENT = SpiffeId.parse("spiffe://example.org/spire/agent/x/node")


def entry(path: str) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
        parent_id=PARENT,
        selectors=(Selector("unix", "uid:0"),),
    )


class TestMemoryDataStore(DataStoreContract):
    @pytest_asyncio.fixture
    async def datastore(self, host_services: HostServices) -> AsyncIterator[DataStore]:
        store = MemoryDataStore()
        await store.configure(NoConfig(), host_services)
        yield store
        await store.close()


async def test_max_entries_caps_creates_one_item_at_a_time(host_services: HostServices) -> None:
    store = MemoryDataStore(max_entries=2)
    await store.configure(NoConfig(), host_services)
    await store.create_entry(entry("/one"))
    results = await store.create_entries([entry("/two"), entry("/three")])
    assert isinstance(results[0], RegistrationEntry)
    assert isinstance(results[1], FailedPreconditionError)
    assert "maximum of 2 registration entries" in str(results[1])
    await store.delete_entry(results[0].id)
    assert (await store.create_entry(entry("/three"))).spiffe_id == entry("/three").spiffe_id


async def test_a_negative_limit_is_refused_at_configure(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="max_entries must not be negative, found -1"):
        await MemoryDataStore(max_entries=-1).configure(NoConfig(), make_host_services(tmp_path))


async def test_calls_before_configure_and_after_close_fail(host_services: HostServices) -> None:
    store = MemoryDataStore()
    with pytest.raises(PluginError, match="datastore is not configured"):
        await store.list_all_entries()
    await store.configure(NoConfig(), host_services)
    await store.create_entry(entry("/w"))
    await store.close()
    with pytest.raises(PluginError, match="datastore is closed"):
        await store.count_entries()
    with pytest.raises(PluginError, match="datastore is already closed"):
        await store.configure(NoConfig(), host_services)
