"""The concurrency contract runs against the in-memory datastore, one instance standing for the
shared database of two servers, and fails a datastore that breaks one of its promises."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from pyspire_sdk.errors import NotFoundError
from pyspire_sdk.memory_datastore import MemoryDataStore
from pyspire_sdk.model import JoinToken
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.plugins.datastore import DataStore
from pyspire_sdk.testing.datastore_concurrency_contract import DataStoreConcurrencyContract
from pyspire_sdk.testing.fake_clock import FakeClock


class TestSharedMemoryDataStore(DataStoreConcurrencyContract):
    @pytest_asyncio.fixture
    async def shared(self, host_services: HostServices) -> AsyncIterator[MemoryDataStore]:
        store = MemoryDataStore()
        await store.configure(NoConfig(), host_services)
        yield store
        await store.close()

    @pytest.fixture
    def open_datastore(self, shared: MemoryDataStore) -> Callable[[], Awaitable[DataStore]]:
        async def open_() -> DataStore:
            return shared

        return open_


class _ConsumedByEveryone(MemoryDataStore):
    """Hands a join token to every caller: the promise of one winner broken."""

    async def consume_join_token(self, token: str) -> JoinToken:
        found = await self.fetch_join_token(token)
        if found is None:
            raise NotFoundError("join token not found or already used")
        return found


async def test_the_contract_fails_a_token_consumed_twice(
    host_services: HostServices, fake_clock: FakeClock
) -> None:
    store = _ConsumedByEveryone()
    await store.configure(NoConfig(), host_services)
    contract = DataStoreConcurrencyContract()
    with pytest.raises(AssertionError):
        await contract.test_a_join_token_is_consumed_once_across_servers((store, store), fake_clock)
    await store.close()


def test_the_contract_is_not_collected_on_its_own() -> None:
    assert not DataStoreConcurrencyContract.__name__.startswith("Test")
