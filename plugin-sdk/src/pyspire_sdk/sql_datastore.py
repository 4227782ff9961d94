"""The transaction skeleton that datastores on a SQL server share, whatever the server.

The ``postgres`` and ``mysql`` datastores let several servers share one database. Each owns
its driver, its SQL and how it begins, commits and retries a transaction; what it does inside
a transaction around registration entries is the same, and lives here once:

- :class:`SqlTransaction`: an open write transaction, the change events it will append just
  before it commits, and savepoints that drop the events recorded inside them when they roll
  back. A plugin subclasses it with its database's nested transaction.
- :class:`EntryBatchStore`: the entry writes of the
  :class:`~pyspire_sdk.plugins.datastore.DataStore` contract (create, create if not exists,
  update, delete, each alone or in a batch, and ``restore_entries``) on top of a few row
  operations the plugin writes in its own SQL. A batch is checked against the stored rows with
  a few bulk queries and written with one statement per table (the decisions are
  :mod:`pyspire_sdk.stored_records`'); a row another server wrote meanwhile sends the batch,
  rolled back to a savepoint, through the same steps item by item, so per-item results stay
  exact.
- :class:`BundleStore`: the bundle writes that read a bundle and write it back (create, set,
  update, append, prune), each in one transaction holding that trust domain's bundle lock, on
  top of the plugin's read and write of one bundle row. The ``sqlite`` datastore, whose one
  writer holds every lock, uses it too.

The contract that several datastores sharing one database must keep is tested by
:mod:`pyspire_sdk.testing.datastore_concurrency_contract`.
"""

from __future__ import annotations

__all__ = ["BundleStore", "ConcurrentWriteError", "EntryBatchStore", "SqlTransaction"]

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, Generic, TypeVar

import structlog

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import AlreadyExistsError, PyspireError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugins.datastore import ENTRY_MASK_FIELDS, ChangeKind
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.stored_records import (
    ENTRY_IDENTITY_FIELDS,
    EntryIdentity,
    appended_bundle,
    check_mask,
    checked_bundle_update,
    created_or_duplicate,
    entry_identity,
    entry_update_candidates,
    missing_bundles_error,
    plan_entry_creates,
    plan_entry_deletes,
    plan_entry_updates,
    prepare_new_entries,
    pruned_bundle,
    restorable_entries,
)

C = TypeVar("C")
T = TypeVar("T")
TX = TypeVar("TX", bound="SqlTransaction[Any]")

_CREATE_ATTEMPTS = 3
"""Tries of one item of a batch create whose id or identity other servers keep taking between
its check and its write."""

CreateResult = tuple[RegistrationEntry, bool] | PyspireError
UpdateResult = RegistrationEntry | PyspireError


class SqlTransaction(Generic[C]):
    """An open write transaction: its connection and the change events it will append when it
    commits.

    Events are recorded with :meth:`event` as the work goes, and appended by the plugin as the
    transaction's last statements, so that event ids follow commit order. Events recorded
    inside a :meth:`savepoint` that rolls back are dropped with it.
    """

    __slots__ = ("connection", "events")

    def __init__(self, connection: C) -> None:
        self.connection = connection
        self.events: list[tuple[str, str]] = []

    def event(self, kind: ChangeKind, object_ids: Iterable[str]) -> None:
        """Record that the objects ``object_ids`` of ``kind`` change when this commits."""
        self.events.extend((kind.value, object_id) for object_id in object_ids)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: its block's writes, and the events it recorded, are undone
        alone when the block raises; the error goes on to the caller."""
        mark = len(self.events)
        try:
            async with self._nested():
                yield
        except BaseException:
            del self.events[mark:]
            raise

    def _nested(self) -> AbstractAsyncContextManager[None]:
        """The database's savepoint around a block: released when the block ends, rolled back
        to when it raises (unless the server has already ended the whole transaction)."""
        raise NotImplementedError


class ConcurrentWriteError(Exception):
    """The fast path of a batch met a row another writer wrote since its checks: the batch is
    done again item by item."""


class EntryBatchStore(ABC, Generic[TX]):
    """The registration-entry writes of a datastore on a SQL server.

    The methods with a contract docstring in :class:`~pyspire_sdk.plugins.datastore.DataStore`
    are implemented here; the plugin provides the row operations below (abstract), in its
    SQL, each inside the transaction it is given, plus ``_clock`` and ``_logger``.
    """

    _clock: Clock
    _logger: structlog.typing.FilteringBoundLogger

    # -- what the plugin provides ------------------------------------------------------------

    @abstractmethod
    async def _in_write_transaction(self, work: Callable[[TX], Awaitable[T]]) -> T:
        """Run ``work`` in one write transaction (its events appended before commit), errors
        translated to the SDK's."""

    @abstractmethod
    async def _taken_entry_ids(self, connection: Any, entry_ids: Sequence[str]) -> set[str]:
        """Which of ``entry_ids`` stored entries have."""

    @abstractmethod
    async def _entries_by_id(
        self, connection: Any, entry_ids: Sequence[str], *, lock: bool = False
    ) -> dict[str, tuple[int, RegistrationEntry]]:
        """The stored entries of ``entry_ids`` (with their primary keys), locked for update
        with ``lock``."""

    @abstractmethod
    async def _entries_by_identity(
        self, connection: Any, identities: Iterable[EntryIdentity]
    ) -> dict[EntryIdentity, tuple[int, RegistrationEntry]]:
        """The stored entries (with their primary keys) having one of ``identities``."""

    @abstractmethod
    async def _bundled(self, connection: Any, names: Iterable[str]) -> set[str]:
        """Which of the trust domains ``names`` have a bundle."""

    @abstractmethod
    async def _insert_entries(self, transaction: TX, entries: Sequence[RegistrationEntry]) -> bool:
        """Write new entries (ids, times and revisions as given) with their lists and events;
        ``False``, having written nothing that counts, when a concurrent writer took one of
        their ids or identities first (the caller rolls its savepoint back)."""

    @abstractmethod
    async def _update_entry_rows(
        self, connection: Any, changed: Mapping[int, RegistrationEntry], fields: frozenset[str]
    ) -> None:
        """Write the entries ``changed`` (by primary key) and their lists named in ``fields``."""

    @abstractmethod
    async def _delete_entry_rows(self, connection: Any, pks: Sequence[int]) -> None:
        """Delete the entries with primary keys ``pks`` and their lists."""

    @abstractmethod
    async def _delete_entries_by_id(self, connection: Any, entry_ids: Sequence[str]) -> None:
        """Delete the entries ``entry_ids`` that exist, and their lists."""

    @abstractmethod
    def _is_unique_violation(self, error: BaseException) -> bool:
        """Whether ``error`` is the server refusing a row that repeats a unique key."""

    @abstractmethod
    def _translate(self, error: BaseException) -> BaseException:
        """The SDK error for a driver's error (``error`` itself when there is none)."""

    # -- create ------------------------------------------------------------------------------

    async def create_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        (result,) = await self.create_entries([entry])
        if isinstance(result, PyspireError):
            raise result
        return result

    async def create_entry_if_not_exists(
        self, entry: RegistrationEntry
    ) -> tuple[RegistrationEntry, bool]:
        (result,) = await self.create_entries_if_not_exist([entry])
        if isinstance(result, PyspireError):
            raise result
        return result

    async def create_entries(
        self, entries: Sequence[RegistrationEntry]
    ) -> list[RegistrationEntry | PyspireError]:
        return created_or_duplicate(entries, await self._create_many(entries))

    async def create_entries_if_not_exist(
        self, entries: Sequence[RegistrationEntry]
    ) -> list[CreateResult]:
        return await self._create_many(entries)

    async def _create_many(self, entries: Sequence[RegistrationEntry]) -> list[CreateResult]:
        """Create or find each entry, in one write transaction.

        Every item is checked against the stored rows with a few bulk queries, then all accepted
        items are written with one statement per table. A row another server wrote meanwhile
        (its id or identity taken between the check and the write) sends the batch, rolled
        back to a savepoint, through the same steps again item by item, each in its own
        savepoint, so per-item results stay exact.
        """
        if not entries:
            return []

        async def work(transaction: TX) -> list[CreateResult]:
            try:
                async with transaction.savepoint():
                    return await self._create_at_once(transaction, entries)
            except ConcurrentWriteError:
                self._logger.info("batch entry create falls back to one by one")
            results: list[CreateResult] = []
            for entry in entries:
                for _attempt in range(_CREATE_ATTEMPTS):
                    try:
                        async with transaction.savepoint():
                            (result,) = await self._create_at_once(transaction, [entry])
                        break
                    except ConcurrentWriteError:
                        continue
                else:
                    result = AlreadyExistsError(
                        f"entry id {entry.id!r} or its identity was taken concurrently"
                    )
                results.append(result)
            return results

        return await self._in_write_transaction(work)

    async def _create_at_once(
        self, transaction: TX, entries: Sequence[RegistrationEntry]
    ) -> list[CreateResult]:
        connection = transaction.connection
        prepared = prepare_new_entries(entries, self._clock.now())
        valid = [item for item in prepared if isinstance(item, RegistrationEntry)]
        given_ids = list({item.id for item in entries if item.id})
        taken_ids = await self._taken_entry_ids(connection, given_ids) if given_ids else set()
        stored = await self._entries_by_identity(connection, map(entry_identity, valid))
        bundled = await self._bundled(
            connection, (td.name for item in valid for td in item.federates_with)
        )
        plan = plan_entry_creates(
            prepared, taken_ids, {key: entry for key, (_, entry) in stored.items()}, bundled
        )
        if not await self._insert_entries(transaction, plan.accepted):
            raise ConcurrentWriteError
        return plan.results

    async def restore_entries(self, entries: Sequence[RegistrationEntry]) -> None:
        """Store entries exactly as given (see
        :class:`~pyspire_sdk.plugins.datastore.CopyableDataStore`)."""
        prepared = restorable_entries(entries)
        if not prepared:
            return

        async def work(transaction: TX) -> None:
            connection = transaction.connection
            await self._delete_entries_by_id(
                connection, list(dict.fromkeys(entry.id for entry in prepared))
            )
            bundled = await self._bundled(
                connection, (td.name for entry in prepared for td in entry.federates_with)
            )
            for entry in prepared:
                missing = missing_bundles_error(entry, bundled)
                if missing is not None:
                    raise missing
            if not await self._insert_entries(transaction, prepared):
                raise AlreadyExistsError(
                    "entries to restore repeat an id or an identity, or another writer took one"
                )

        await self._in_write_transaction(work)

    # -- update ------------------------------------------------------------------------------

    async def update_entry(
        self, entry: RegistrationEntry, mask: frozenset[str] | None = None
    ) -> RegistrationEntry:
        (result,) = await self.update_entries([entry], mask)
        if isinstance(result, PyspireError):
            raise result
        return result

    async def update_entries(
        self, entries: Sequence[RegistrationEntry], mask: frozenset[str] | None = None
    ) -> list[UpdateResult]:
        fields = check_mask(mask, ENTRY_MASK_FIELDS, "entry")
        if not entries:
            return []

        async def work(transaction: TX) -> list[UpdateResult]:
            try:
                async with transaction.savepoint():
                    return await self._update_at_once(transaction, entries, fields)
            except Exception as error:
                if not self._is_unique_violation(error):
                    raise
                self._logger.info(
                    "batch entry update falls back to one by one",
                    error=str(self._translate(error)),
                )
            results: list[UpdateResult] = []
            for entry in entries:
                try:
                    async with transaction.savepoint():
                        (result,) = await self._update_at_once(transaction, [entry], fields)
                except Exception as error:
                    if not self._is_unique_violation(error):
                        raise
                    translated = self._translate(error)
                    assert isinstance(translated, PyspireError)
                    result = translated
                results.append(result)
            return results

        return await self._in_write_transaction(work)

    async def _update_at_once(
        self, transaction: TX, entries: Sequence[RegistrationEntry], fields: frozenset[str]
    ) -> list[UpdateResult]:
        """Every item checked against the stored rows (locked, read with a few bulk queries)
        and the items before it, then all changes written."""
        connection = transaction.connection
        wanted = list(dict.fromkeys(entry.id for entry in entries if entry.id))
        current = await self._entries_by_id(connection, wanted, lock=True)
        identities: dict[EntryIdentity, tuple[int, str]] = {}
        if fields & ENTRY_IDENTITY_FIELDS:
            candidates = entry_update_candidates(entries, fields, current)
            found = await self._entries_by_identity(connection, map(entry_identity, candidates))
            identities = {key: (pk, entry.id) for key, (pk, entry) in found.items()}
        bundled: set[str] = set()
        if "federates_with" in fields:
            bundled = await self._bundled(
                connection, (td.name for entry in entries for td in entry.federates_with)
            )
        plan = plan_entry_updates(entries, fields, current, identities, bundled)
        if plan.changed:
            await self._update_entry_rows(connection, plan.changed, fields)
            transaction.event(ChangeKind.ENTRY, plan.events)
        return plan.results

    # -- delete ------------------------------------------------------------------------------

    async def delete_entry(self, entry_id: str) -> RegistrationEntry:
        (result,) = await self.delete_entries([entry_id])
        if isinstance(result, PyspireError):
            raise result
        return result

    async def delete_entries(self, entry_ids: Sequence[str]) -> list[UpdateResult]:
        if not entry_ids:
            return []

        async def work(transaction: TX) -> list[UpdateResult]:
            found = await self._entries_by_id(
                transaction.connection, list(dict.fromkeys(entry_ids)), lock=True
            )
            results, deleted = plan_entry_deletes(entry_ids, found)
            if deleted:
                await self._delete_entry_rows(transaction.connection, [pk for pk, _ in deleted])
                transaction.event(ChangeKind.ENTRY, [entry_id for _, entry_id in deleted])
            return results

        return await self._in_write_transaction(work)


class BundleStore(ABC):
    """The read-modify-write bundle calls of a datastore on SQL.

    Each runs in one write transaction that holds ``trust_domain``'s bundle lock before it
    reads, so read-modify-writes of one bundle never interleave, even across servers. The
    plugin provides the transaction and one bundle row's read and write, plus ``_logger``.
    """

    _logger: structlog.typing.FilteringBoundLogger

    @abstractmethod
    async def _bundle_transaction(
        self, trust_domain: TrustDomain, work: Callable[[Any], Awaitable[T]]
    ) -> T:
        """Run ``work`` on the connection of one write transaction holding the lock of
        ``trust_domain``'s bundle, taken before ``work`` reads anything."""

    @abstractmethod
    async def _bundle(self, connection: Any, trust_domain: TrustDomain) -> Bundle | None:
        """The stored bundle of ``trust_domain``, if any."""

    @abstractmethod
    async def _store_bundle(self, connection: Any, bundle: Bundle) -> Bundle:
        """Write ``bundle`` in place of its trust domain's (signalling the change to other
        servers as the plugin does); the bundle as stored."""

    async def create_bundle(self, bundle: Bundle) -> Bundle:
        async def work(connection: Any) -> Bundle:
            if await self._bundle(connection, bundle.trust_domain) is not None:
                raise AlreadyExistsError(f"bundle for trust domain {bundle.trust_domain} exists")
            return await self._store_bundle(connection, bundle)

        return await self._bundle_transaction(bundle.trust_domain, work)

    async def set_bundle(self, bundle: Bundle) -> Bundle:
        async def work(connection: Any) -> Bundle:
            return await self._store_bundle(connection, bundle)

        return await self._bundle_transaction(bundle.trust_domain, work)

    async def update_bundle(
        self, trust_domain: TrustDomain, mutate: Callable[[Bundle | None], Bundle]
    ) -> Bundle:
        async def work(connection: Any) -> Bundle:
            result = mutate(await self._bundle(connection, trust_domain))
            return await self._store_bundle(connection, checked_bundle_update(trust_domain, result))

        return await self._bundle_transaction(trust_domain, work)

    async def append_bundle(self, bundle: Bundle) -> Bundle:
        async def work(connection: Any) -> Bundle:
            current = await self._bundle(connection, bundle.trust_domain)
            if current is None:
                return await self._store_bundle(connection, bundle)
            grown = appended_bundle(current, bundle)
            if grown is None:
                return current
            return await self._store_bundle(connection, grown)

        return await self._bundle_transaction(bundle.trust_domain, work)

    async def prune_bundle(self, trust_domain: TrustDomain, expires_before: datetime) -> bool:
        async def work(connection: Any) -> bool:
            current = await self._bundle(connection, trust_domain)
            if current is None:
                return False
            pruned = pruned_bundle(current, expires_before)
            if pruned is None:
                return False
            await self._store_bundle(connection, pruned)
            return True

        changed = await self._bundle_transaction(trust_domain, work)
        if changed:
            self._logger.info("pruned bundle", trust_domain=trust_domain.name)
        return changed
