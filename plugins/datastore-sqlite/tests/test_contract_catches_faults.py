"""The contract suite fails datastores that break it: each fault below is caught."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig

from pyspire_sdk.errors import NotFoundError
from pyspire_sdk.model import JoinToken
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import EntryFilter, EntryPage, MatchBehavior, Page
from pyspire_sdk.testing.datastore_contract import DataStoreContract

Opener = Callable[[type[SqliteDataStore]], AbstractAsyncContextManager[SqliteDataStore]]


class RacyConsume(SqliteDataStore):
    """Checks and deletes in two steps, so two callers can both win."""

    async def consume_join_token(self, token: str) -> JoinToken:
        found = await self.fetch_join_token(token)
        if found is None:
            raise NotFoundError("join token not found")
        await asyncio.sleep(0)
        async with self._write() as connection:
            await connection.execute("DELETE FROM join_tokens WHERE token = ?", (token,))
        return found


class SubsetMeansSuperset(SqliteDataStore):
    """Gets SPIRE's SUBSET semantics backwards."""

    async def list_entries(
        self, entry_filter: EntryFilter | None = None, page: Page | None = None
    ) -> EntryPage:
        selectors = entry_filter.by_selectors if entry_filter is not None else None
        if entry_filter is not None and selectors is not None:
            if selectors.match is MatchBehavior.SUBSET:
                selectors = replace(selectors, match=MatchBehavior.SUPERSET)
            entry_filter = replace(entry_filter, by_selectors=selectors)
        return await super().list_entries(entry_filter, page)


class LosesTheLastOfEachPage(SqliteDataStore):
    """Hands out a token that skips an entry."""

    async def list_entries(
        self, entry_filter: EntryFilter | None = None, page: Page | None = None
    ) -> EntryPage:
        result = await super().list_entries(entry_filter, page)
        if result.next_page_token and len(result.entries) > 1:
            return EntryPage(result.entries[:-1], result.next_page_token)
        return result


@pytest.fixture
def open_store(tmp_path: Path, host_services: HostServices) -> Opener:
    @asynccontextmanager
    async def opener(kind: type[SqliteDataStore]) -> AsyncIterator[SqliteDataStore]:
        store = kind()
        try:
            await store.configure(
                SqliteDataStoreConfig(database_path=tmp_path / f"{kind.__name__}.sqlite3"),
                host_services,
            )
            yield store
        finally:
            await store.close()

    return opener


async def test_racy_consume_is_caught(
    open_store: Opener,
) -> None:
    async with open_store(RacyConsume) as store:
        with pytest.raises(AssertionError):
            await DataStoreContract().test_consume_join_token_has_one_winner_under_concurrency(
                store
            )


async def test_wrong_subset_semantics_are_caught(
    open_store: Opener,
) -> None:
    async with open_store(SubsetMeansSuperset) as store:
        with pytest.raises(AssertionError):
            await DataStoreContract().test_list_entries_by_selectors(
                store, MatchBehavior.SUBSET, {"a", "ab", "b"}
            )


async def test_lossy_paging_is_caught(
    open_store: Opener,
) -> None:
    async with open_store(LosesTheLastOfEachPage) as store:
        with pytest.raises(AssertionError):
            await DataStoreContract().test_list_entries_pages_without_duplicates_or_omissions(store)


async def test_the_unbroken_store_passes_the_same_checks(
    open_store: Opener,
) -> None:
    async with open_store(SqliteDataStore) as store:
        contract = DataStoreContract()
        await contract.test_consume_join_token_has_one_winner_under_concurrency(store)
        await contract.test_list_entries_by_selectors(store, MatchBehavior.SUBSET, {"a", "ab", "b"})
