# ruff: noqa: S608 - SQL text is assembled from constants only; every value is a bound parameter
"""The ``sqlite`` datastore: :class:`~pyspire_sdk.plugins.datastore.DataStore` on one SQLite file.

Writes go through a single connection guarded by a lock, each call one ``BEGIN IMMEDIATE``
transaction, so writers never race and a failed call rolls back whole. Reads use a small pool of
separate read-only connections; in WAL mode they run concurrently with the writer and with each
other, and a read that needs several queries runs them in one read transaction, so it sees one
consistent snapshot.
"""

from __future__ import annotations

__all__ = ["SqliteDataStore"]

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from pyspire_datastore_sqlite.config import SqliteDataStoreConfig
from pyspire_datastore_sqlite.node_creation import (
    CREATE_NODE_SQL,
    NODE_CREATION_SCRIPT,
    selectors_json,
    stored_selectors,
)
from pyspire_datastore_sqlite.queries import entry_where, name_page, node_where, pk_page
from pyspire_datastore_sqlite.records import (
    CHILD_CHUNK,
    ENTRY_COLUMNS,
    NODE_COLUMNS,
    Row,
)
from pyspire_datastore_sqlite.schema import migrate
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock, SystemClock, utc
from pyspire_sdk.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PluginError,
    PyspireError,
    UnavailableError,
)
from pyspire_sdk.files import PRIVATE_FILE_MODE, make_private_directory
from pyspire_sdk.model import (
    AttestedNode,
    FederationRelationship,
    JoinToken,
    RegistrationEntry,
)
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import (
    ENTRY_MASK_FIELDS,
    FEDERATION_RELATIONSHIP_MASK_FIELDS,
    NODE_MASK_FIELDS,
    AttestedNodePage,
    BundleDeleteMode,
    BundlePage,
    ChangeEvent,
    ChangeKind,
    EntryFilter,
    EntryPage,
    FailedPreconditionError,
    FederationRelationshipPage,
    NodeFilter,
    Page,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.sql_datastore import BundleStore
from pyspire_sdk.stored_records import (
    ENTRY_IDENTITY_FIELDS,
    KIND_DNS,
    KIND_FEDERATES,
    KIND_SELECTOR,
    Decoder,
    EntryIdentity,
    assemble_all_entries,
    assemble_entries,
    assemble_node_selectors,
    bundle_from_json,
    bundle_to_json,
    change_event_from_row,
    check_mask,
    created_or_duplicate,
    dedupe,
    duplicate_entry_error,
    entry_identity,
    from_micros,
    micros_or_none,
    missing_bundles_error,
    new_entry_id,
    node_columns,
    node_from_row,
    normalize_entry,
    plan_entry_creates,
    plan_entry_deletes,
    prepare_new_entries,
    relationship_columns,
    relationship_from_row,
    restorable_entries,
    selectors_hash,
    to_micros,
    updated_entry,
)

T = TypeVar("T")

_IN_CHUNK = 500
"""Values per IN list in one query, far below SQLite's limit on bound parameters."""


_UPDATE_COLUMNS = (
    "spiffe_id = ?, parent_id = ?, selectors_hash = ?, x509_svid_ttl = ?, jwt_svid_ttl = ?, "
    "admin = ?, downstream = ?, expires_at = ?, revision_number = ?, store_svid = ?, hint = ?"
)


def _update_params(pk: int, updated: RegistrationEntry) -> tuple[Any, ...]:
    return (
        str(updated.spiffe_id),
        str(updated.parent_id),
        selectors_hash(updated.selectors),
        updated.x509_svid_ttl,
        updated.jwt_svid_ttl,
        int(updated.admin),
        int(updated.downstream),
        micros_or_none(updated.expires_at),
        updated.revision_number,
        int(updated.store_svid),
        updated.hint,
        pk,
    )


def _prepare_files(path: Path) -> None:
    """Create missing directories (0700 each) and the database file (0600) when missing."""
    make_private_directory(path.parent)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(descriptor)
    path.chmod(PRIVATE_FILE_MODE)


_CHILDREN_SQL = (
    f"SELECT entry_pk, {KIND_SELECTOR}, position, type, value "
    "FROM entry_selectors WHERE entry_pk {match} "
    f"UNION ALL SELECT entry_pk, {KIND_DNS}, position, name, NULL "
    "FROM entry_dns_names WHERE entry_pk {match} "
    f"UNION ALL SELECT entry_pk, {KIND_FEDERATES}, position, trust_domain, NULL "
    "FROM entry_federates_with WHERE entry_pk {match} "
    "ORDER BY 1, 2, 3"
)
"""The list rows (selectors, DNS names, federated trust domains) of the entries whose keys
``{match}`` selects, laid out for :func:`~pyspire_sdk.stored_records.assemble_entries`."""


_NODE_WITH_SELECTORS_SQL = (
    f"SELECT {', '.join('n.' + column.strip() for column in NODE_COLUMNS.split(','))}, "
    "s.type, s.value FROM attested_nodes AS n "
    "LEFT JOIN node_selectors AS s ON s.spiffe_id = n.spiffe_id "
    "WHERE n.spiffe_id = ? ORDER BY s.position"
)
"""One node's row once per selector (once with NULLs when it has none), in selector order."""


def _as_stored(node: AttestedNode, selectors: tuple[Selector, ...]) -> AttestedNode:
    """``node`` as reading it back would return it: times kept to the microsecond."""
    return replace(
        node,
        selectors=selectors,
        x509_svid_expires_at=_stored_moment(node.x509_svid_expires_at),
        new_x509_svid_expires_at=_stored_moment(node.new_x509_svid_expires_at),
    )


def _stored_moment(moment: datetime | None) -> datetime | None:
    return None if moment is None else from_micros(to_micros(moment))


class SqliteDataStore(BundleStore):
    """The ``sqlite`` datastore plugin. Configure once, use from one event loop, then close."""

    def __init__(self) -> None:
        self._clock: Clock = SystemClock()
        self._logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()
        self._path: Path | None = None
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._idle_readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._write_lock = asyncio.Lock()

    # -- life cycle ------------------------------------------------------------------------------

    async def configure(self, config: SqliteDataStoreConfig, host: HostServices) -> None:
        """Open (creating when missing) and migrate the database.

        Raises :class:`~pyspire_datastore_sqlite.schema.SchemaTooNewError` for a database
        written by a newer release and :class:`~pyspire_sdk.errors.PluginError` when the file
        cannot be opened.
        """
        if self._writer is not None:
            raise PluginError("sqlite datastore is already configured")
        self._clock = host.clock
        self._logger = host.logger
        path = config.database_path or host.data_dir / "datastore.sqlite3"
        self._path = path
        busy_ms = int(config.busy_timeout.total_seconds() * 1000)
        try:
            await asyncio.to_thread(_prepare_files, path)
            self._writer = await self._connect(path, busy_ms, read_only=False)
            found = await migrate(self._writer, path)
            await self._writer.executescript(NODE_CREATION_SCRIPT)
            for _ in range(config.read_connections):
                reader = await self._connect(path, busy_ms, read_only=True)
                self._readers.append(reader)
                self._idle_readers.put_nowait(reader)
        except (OSError, sqlite3.Error) as error:
            raise PluginError(f"database_path {str(path)!r}: cannot open: {error}") from error
        self._logger.info("datastore opened", path=str(path), schema_version_found=found)

    async def close(self) -> None:
        """Close every connection; safe to call more than once and after a failed configure.

        Each connection runs on its own (non-daemon) thread, so a datastore that is never
        closed keeps the process from exiting.
        """
        connections = [*self._readers, *([self._writer] if self._writer is not None else [])]
        self._readers = []
        self._writer = None
        self._idle_readers = asyncio.Queue()
        for connection in connections:
            await connection.close()

    @staticmethod
    async def _connect(path: Path, busy_ms: int, *, read_only: bool) -> aiosqlite.Connection:
        connection = await aiosqlite.connect(path, isolation_level=None)
        try:
            await connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
            await connection.execute("PRAGMA foreign_keys = ON")
            if read_only:
                await connection.execute("PRAGMA query_only = ON")
            else:
                await connection.execute("PRAGMA journal_mode = WAL")
                await connection.execute("PRAGMA synchronous = FULL")
        except BaseException:
            await connection.close()
            raise
        return connection

    # -- transactions ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the single writer; rolled back on any exception.

        The write lock is held until the rollback has run on the connection's thread, so the
        next writer never sends ``BEGIN`` into a transaction left open by a cancelled call.
        """
        connection = self._writer
        if connection is None:
            raise UnavailableError("sqlite datastore is not configured or already closed")
        lock = self._write_lock
        await lock.acquire()
        try:
            await connection.execute("BEGIN IMMEDIATE")
            yield connection
            await connection.execute("COMMIT")
        except BaseException as error:
            await self._end_transaction(connection, lock.release)
            translated = self._translate(error)
            if translated is error:
                raise
            raise translated from error
        else:
            lock.release()

    async def _write_statement(self, sql: str, params: Sequence[Any]) -> list[Row]:
        """One write statement on the single writer, a transaction by itself (the connection
        is in autocommit mode): one trip to the writer's thread instead of three."""
        connection = self._writer
        if connection is None:
            raise UnavailableError("sqlite datastore is not configured or already closed")
        async with self._write_lock:
            try:
                return list(await connection.execute_fetchall(sql, params))
            except sqlite3.Error as error:
                raise self._translate(error) from error

    @asynccontextmanager
    async def _read(self, *, snapshot: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """A read connection; with ``snapshot`` its queries share one read transaction.

        A connection goes back to the pool only once its read transaction has ended on its
        thread, even when the borrowing task is cancelled meanwhile.
        """
        if not self._readers:
            raise UnavailableError("sqlite datastore is not configured or already closed")
        pool = self._idle_readers
        connection = await pool.get()
        try:
            try:
                if snapshot:
                    await connection.execute("BEGIN")
                yield connection
            finally:
                if snapshot:
                    await self._end_transaction(connection, lambda: pool.put_nowait(connection))
                else:
                    pool.put_nowait(connection)
        except sqlite3.Error as error:
            raise self._translate(error) from error

    async def _end_transaction(
        self, connection: aiosqlite.Connection, then: Callable[[], None]
    ) -> None:
        """Roll back whatever transaction is open, then call ``then``.

        ``then`` runs once the rollback has finished on the connection's thread, whether or not
        the calling task is cancelled while it waits. A failed rollback is logged, not raised:
        it must not hide the error that led here.
        """
        ending = asyncio.ensure_future(connection.rollback())

        def finished(future: asyncio.Future[None]) -> None:
            if not future.cancelled() and future.exception() is not None:
                self._logger.warning("datastore rollback failed", error=str(future.exception()))
            then()

        ending.add_done_callback(finished)
        with suppress(Exception):
            await asyncio.shield(ending)

    def _translate(self, error: BaseException) -> BaseException:
        if isinstance(error, sqlite3.IntegrityError):
            if "UNIQUE" in str(error):
                return AlreadyExistsError(f"sqlite datastore: {error}")
            return InvalidArgumentError(f"sqlite datastore: {error}")
        if isinstance(error, sqlite3.Error):
            self._logger.warning("datastore query failed", error=str(error))
            return UnavailableError(f"sqlite datastore: {error}")
        return error

    async def _event(
        self, connection: aiosqlite.Connection, kind: ChangeKind, ids: Sequence[str]
    ) -> None:
        now = to_micros(self._clock.now())
        await connection.executemany(
            "INSERT INTO change_events (kind, object_id, created_at) VALUES (?, ?, ?)",
            [(kind.value, object_id, now) for object_id in ids],
        )

    # -- registration entries --------------------------------------------------------------------

    async def _load_entries(
        self, connection: aiosqlite.Connection, where: str, params: Sequence[Any], limit: int = -1
    ) -> tuple[list[int], list[RegistrationEntry]]:
        rows = list(
            await connection.execute_fetchall(
                f"SELECT {ENTRY_COLUMNS} FROM entries AS e WHERE {where} ORDER BY e.pk LIMIT ?",
                [*params, limit],
            )
        )
        pks = [row[0] for row in rows]
        children: list[Row] = []
        if pks and pks[-1] - pks[0] < 2 * len(pks):
            # A dense run of keys (a page of an unfiltered listing): one query over the range;
            # the few lists of entries outside the page that it also reads are left unused.
            children.extend(
                await connection.execute_fetchall(
                    _CHILDREN_SQL.format(match="BETWEEN ? AND ?"), [pks[0], pks[-1]] * 3
                )
            )
            return pks, assemble_entries(rows, children, from_micros)
        for start in range(0, len(pks), CHILD_CHUNK):
            chunk = pks[start : start + CHILD_CHUNK]
            marks = ", ".join("?" * len(chunk))
            children.extend(
                await connection.execute_fetchall(
                    _CHILDREN_SQL.format(match=f"IN ({marks})"), chunk * 3
                )
            )
        return pks, assemble_entries(rows, children, from_micros)

    async def _entry_by_id(
        self, connection: aiosqlite.Connection, entry_id: str
    ) -> tuple[int, RegistrationEntry] | None:
        pks, entries = await self._load_entries(connection, "e.entry_id = ?", [entry_id])
        return (pks[0], entries[0]) if entries else None

    async def _entry_by_identity(
        self, connection: aiosqlite.Connection, entry: RegistrationEntry
    ) -> tuple[int, RegistrationEntry] | None:
        pks, entries = await self._load_entries(
            connection,
            "e.spiffe_id = ? AND e.parent_id = ? AND e.selectors_hash = ?",
            [str(entry.spiffe_id), str(entry.parent_id), selectors_hash(entry.selectors)],
        )
        return (pks[0], entries[0]) if entries else None

    async def _check_federated_bundles(
        self, connection: aiosqlite.Connection, trust_domains: tuple[TrustDomain, ...]
    ) -> None:
        if not trust_domains:
            return
        names = [td.name for td in trust_domains]
        marks = ", ".join("?" * len(names))
        rows = await connection.execute_fetchall(
            f"SELECT trust_domain FROM bundles WHERE trust_domain IN ({marks})",
            names,
        )
        missing = sorted(set(names) - {row[0] for row in rows})
        if missing:
            raise InvalidArgumentError(
                f"entry federates_with names trust domain(s) without a bundle: {', '.join(missing)}"
            )

    async def _write_entry_lists(
        self,
        connection: aiosqlite.Connection,
        pk: int,
        entry: RegistrationEntry,
        fields: Iterable[str],
    ) -> None:
        for name in fields:
            if name == "selectors":
                await connection.execute("DELETE FROM entry_selectors WHERE entry_pk = ?", (pk,))
                await connection.executemany(
                    "INSERT INTO entry_selectors (entry_pk, position, type, value) "
                    "VALUES (?, ?, ?, ?)",
                    [(pk, i, s.type, s.value) for i, s in enumerate(entry.selectors)],
                )
            elif name == "dns_names":
                await connection.execute("DELETE FROM entry_dns_names WHERE entry_pk = ?", (pk,))
                await connection.executemany(
                    "INSERT INTO entry_dns_names (entry_pk, position, name) VALUES (?, ?, ?)",
                    [(pk, i, dns) for i, dns in enumerate(entry.dns_names)],
                )
            elif name == "federates_with":
                await connection.execute(
                    "DELETE FROM entry_federates_with WHERE entry_pk = ?", (pk,)
                )
                await connection.executemany(
                    "INSERT INTO entry_federates_with (entry_pk, position, trust_domain) "
                    "VALUES (?, ?, ?)",
                    [(pk, i, td.name) for i, td in enumerate(entry.federates_with)],
                )

    async def _insert_entry(
        self, connection: aiosqlite.Connection, entry: RegistrationEntry
    ) -> RegistrationEntry:
        now = utc(self._clock.now())
        stored = replace(
            normalize_entry(entry),
            id=entry.id or new_entry_id(),
            created_at=now,
            revision_number=0,
        )
        if entry.id:
            found = await connection.execute_fetchall(
                "SELECT 1 FROM entries WHERE entry_id = ?", (entry.id,)
            )
            if list(found):
                raise AlreadyExistsError(f"entry id {entry.id!r} already exists")
        await self._check_federated_bundles(connection, stored.federates_with)
        cursor = await connection.execute(
            "INSERT INTO entries (entry_id, spiffe_id, parent_id, selectors_hash, x509_svid_ttl, "
            "jwt_svid_ttl, admin, downstream, expires_at, revision_number, store_svid, hint, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stored.id,
                str(stored.spiffe_id),
                str(stored.parent_id),
                selectors_hash(stored.selectors),
                stored.x509_svid_ttl,
                stored.jwt_svid_ttl,
                int(stored.admin),
                int(stored.downstream),
                micros_or_none(stored.expires_at),
                0,
                int(stored.store_svid),
                stored.hint,
                to_micros(now),
            ),
        )
        pk = cursor.lastrowid
        assert pk is not None
        await self._write_entry_lists(
            connection, pk, stored, ("selectors", "dns_names", "federates_with")
        )
        await self._event(connection, ChangeKind.ENTRY, [stored.id])
        return stored

    async def create_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        async with self._write() as connection:
            existing = await self._entry_by_identity(connection, normalize_entry(entry))
            if existing is not None:
                raise duplicate_entry_error(entry, existing[1].id)
            return await self._insert_entry(connection, entry)

    async def create_entry_if_not_exists(
        self, entry: RegistrationEntry
    ) -> tuple[RegistrationEntry, bool]:
        async with self._write() as connection:
            existing = await self._entry_by_identity(connection, normalize_entry(entry))
            if existing is not None:
                return existing[1], True
            return await self._insert_entry(connection, entry), False

    async def create_entries(
        self, entries: Sequence[RegistrationEntry]
    ) -> list[RegistrationEntry | PyspireError]:
        return created_or_duplicate(entries, await self._create_many(entries))

    async def create_entries_if_not_exist(
        self, entries: Sequence[RegistrationEntry]
    ) -> list[tuple[RegistrationEntry, bool] | PyspireError]:
        return await self._create_many(entries)

    async def _create_many(
        self, entries: Sequence[RegistrationEntry]
    ) -> list[tuple[RegistrationEntry, bool] | PyspireError]:
        """Create or find each entry, in one write transaction.

        The fast path checks every item against the stored rows with a few bulk queries and
        writes all accepted items with one statement per table, whatever their number. Should
        a write fail anyway (a constraint the checks did not foresee), that part is rolled back
        to a savepoint and the items are written again one by one, each in its own savepoint,
        so the per-item results stay exact.
        """
        if not entries:
            return []
        async with self._write() as connection:
            await connection.execute("SAVEPOINT create_entries")
            try:
                results = await self._create_many_at_once(connection, entries)
            except sqlite3.IntegrityError as error:
                await connection.execute("ROLLBACK TO create_entries")
                await connection.execute("RELEASE create_entries")
                self._logger.info("batch entry create falls back to one by one", error=str(error))
                return await self._create_one_by_one(connection, entries)
            await connection.execute("RELEASE create_entries")
            return results

    async def _create_many_at_once(
        self, connection: aiosqlite.Connection, entries: Sequence[RegistrationEntry]
    ) -> list[tuple[RegistrationEntry, bool] | PyspireError]:
        """The SDK's decisions (:func:`~pyspire_sdk.stored_records.plan_entry_creates`) on
        what a few bulk queries read, then one statement per table; primary keys are given
        here, the writer being the only one."""
        prepared = prepare_new_entries(entries, self._clock.now())
        valid = [item for item in prepared if isinstance(item, RegistrationEntry)]
        given_ids = list({item.id for item in entries if item.id})
        taken_ids = {
            row[0]
            for row in await self._select_in(
                connection, "SELECT entry_id FROM entries WHERE entry_id IN ({})", given_ids
            )
        }
        stored = await self._stored_identities(connection, valid)
        bundled = {
            row[0]
            for row in await self._select_in(
                connection,
                "SELECT trust_domain FROM bundles WHERE trust_domain IN ({})",
                list({td.name for item in valid for td in item.federates_with}),
            )
        }
        plan = plan_entry_creates(prepared, taken_ids, stored, bundled)
        rows = list(await connection.execute_fetchall("SELECT COALESCE(MAX(pk), 0) FROM entries"))
        await self._insert_entries(
            connection, list(enumerate(plan.accepted, start=int(rows[0][0]) + 1))
        )
        return plan.results

    async def _stored_identities(
        self, connection: aiosqlite.Connection, entries: Sequence[RegistrationEntry]
    ) -> dict[EntryIdentity, RegistrationEntry]:
        """The stored entries having the identity of one of ``entries``: keys and identities
        of the rows with their SPIFFE IDs first, whole entries only for the matches (few or
        none in a batch of new entries)."""
        wanted = {entry_identity(entry) for entry in entries}
        pks = [
            row[0]
            for row in await self._select_in(
                connection,
                "SELECT pk, spiffe_id, parent_id, selectors_hash FROM entries "
                "WHERE spiffe_id IN ({})",
                list({key[0] for key in wanted}),
            )
            if (row[1], row[2], bytes(row[3])) in wanted
        ]
        found: dict[EntryIdentity, RegistrationEntry] = {}
        for start in range(0, len(pks), CHILD_CHUNK):
            chunk = pks[start : start + CHILD_CHUNK]
            _, loaded = await self._load_entries(
                connection, f"e.pk IN ({', '.join('?' * len(chunk))})", chunk
            )
            found.update((entry_identity(entry), entry) for entry in loaded)
        return found

    async def _insert_entries(
        self,
        connection: aiosqlite.Connection,
        accepted: Sequence[tuple[int, RegistrationEntry]],
    ) -> None:
        """Write new entries with the given primary keys (creation times and revisions as the
        entries hold them), one statement per table."""
        if not accepted:
            return
        await connection.executemany(
            "INSERT INTO entries (pk, entry_id, spiffe_id, parent_id, selectors_hash, "
            "x509_svid_ttl, jwt_svid_ttl, admin, downstream, expires_at, revision_number, "
            "store_svid, hint, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    pk,
                    entry.id,
                    str(entry.spiffe_id),
                    str(entry.parent_id),
                    selectors_hash(entry.selectors),
                    entry.x509_svid_ttl,
                    entry.jwt_svid_ttl,
                    int(entry.admin),
                    int(entry.downstream),
                    micros_or_none(entry.expires_at),
                    entry.revision_number,
                    int(entry.store_svid),
                    entry.hint,
                    to_micros(entry.created_at or self._clock.now()),
                )
                for pk, entry in accepted
            ],
        )
        await connection.executemany(
            "INSERT INTO entry_selectors (entry_pk, position, type, value) VALUES (?, ?, ?, ?)",
            [
                (pk, i, s.type, s.value)
                for pk, entry in accepted
                for i, s in enumerate(entry.selectors)
            ],
        )
        dns_rows = [
            (pk, i, name) for pk, entry in accepted for i, name in enumerate(entry.dns_names)
        ]
        if dns_rows:
            await connection.executemany(
                "INSERT INTO entry_dns_names (entry_pk, position, name) VALUES (?, ?, ?)",
                dns_rows,
            )
        federates_rows = [
            (pk, i, td.name) for pk, entry in accepted for i, td in enumerate(entry.federates_with)
        ]
        if federates_rows:
            await connection.executemany(
                "INSERT INTO entry_federates_with (entry_pk, position, trust_domain) "
                "VALUES (?, ?, ?)",
                federates_rows,
            )
        await self._event(connection, ChangeKind.ENTRY, [entry.id for _, entry in accepted])

    async def _create_one_by_one(
        self, connection: aiosqlite.Connection, entries: Sequence[RegistrationEntry]
    ) -> list[tuple[RegistrationEntry, bool] | PyspireError]:
        """Each item as :meth:`create_entry_if_not_exists` would do it, in its own savepoint
        of the open transaction."""
        results: list[tuple[RegistrationEntry, bool] | PyspireError] = []
        for entry in entries:
            await connection.execute("SAVEPOINT create_entry")
            try:
                existing = await self._entry_by_identity(connection, normalize_entry(entry))
                if existing is not None:
                    result: tuple[RegistrationEntry, bool] = (existing[1], True)
                else:
                    result = (await self._insert_entry(connection, entry), False)
            except (PyspireError, sqlite3.IntegrityError) as error:
                await connection.execute("ROLLBACK TO create_entry")
                translated = self._translate(error)
                assert isinstance(translated, PyspireError)
                results.append(translated)
            else:
                results.append(result)
            await connection.execute("RELEASE create_entry")
        return results

    @staticmethod
    async def _select_in(
        connection: aiosqlite.Connection, query: str, values: Sequence[Any]
    ) -> list[Row]:
        """Rows of ``query`` (whose ``{}`` becomes the placeholders of an IN list) for every
        value, asked in chunks that stay below SQLite's limit on bound parameters."""
        rows: list[Row] = []
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            rows.extend(
                await connection.execute_fetchall(query.format(", ".join("?" * len(chunk))), chunk)
            )
        return rows

    async def restore_entries(self, entries: Sequence[RegistrationEntry]) -> None:
        """Store entries exactly as given (see
        :class:`~pyspire_sdk.plugins.datastore.CopyableDataStore`)."""
        prepared = restorable_entries(entries)
        if not prepared:
            return
        async with self._write() as connection:
            await self._select_in(
                connection,
                "DELETE FROM entries WHERE entry_id IN ({}) RETURNING pk",
                list(dict.fromkeys(entry.id for entry in prepared)),
            )
            named = list({td.name for entry in prepared for td in entry.federates_with})
            bundled = {
                row[0]
                for row in await self._select_in(
                    connection, "SELECT trust_domain FROM bundles WHERE trust_domain IN ({})", named
                )
            }
            for entry in prepared:
                missing = missing_bundles_error(entry, bundled)
                if missing is not None:
                    raise missing
            rows = list(
                await connection.execute_fetchall("SELECT COALESCE(MAX(pk), 0) FROM entries")
            )
            first = int(rows[0][0]) + 1
            await self._insert_entries(connection, list(enumerate(prepared, start=first)))

    async def get_entry(self, entry_id: str) -> RegistrationEntry | None:
        async with self._read() as connection:
            found = await self._entry_by_id(connection, entry_id)
        return None if found is None else found[1]

    async def list_entries(
        self, entry_filter: EntryFilter | None = None, page: Page | None = None
    ) -> EntryPage:
        after, limit = pk_page(page)
        where, params = entry_where(entry_filter)
        async with self._read() as connection:
            pks, entries = await self._load_entries(
                connection, f"e.pk > ? AND {where}", [after, *params], limit
            )
        if limit > 0 and len(entries) == limit:
            return EntryPage(tuple(entries[:-1]), str(pks[-2]))
        return EntryPage(tuple(entries))

    async def count_entries(self, entry_filter: EntryFilter | None = None) -> int:
        where, params = entry_where(entry_filter)
        async with self._read(snapshot=False) as connection:
            rows = list(
                await connection.execute_fetchall(
                    f"SELECT COUNT(*) FROM entries AS e WHERE {where}", params
                )
            )
        return int(rows[0][0])

    async def update_entry(
        self, entry: RegistrationEntry, mask: frozenset[str] | None = None
    ) -> RegistrationEntry:
        fields = check_mask(mask, ENTRY_MASK_FIELDS, "entry")
        async with self._write() as connection:
            return await self._update_in(connection, entry, fields)

    async def _update_in(
        self, connection: aiosqlite.Connection, entry: RegistrationEntry, fields: frozenset[str]
    ) -> RegistrationEntry:
        """:meth:`update_entry` inside the open transaction of ``connection``."""
        found = await self._entry_by_id(connection, entry.id)
        if found is None:
            raise NotFoundError(f"entry id {entry.id!r} not found")
        pk, current = found
        updated = updated_entry(current, entry, fields)
        if fields & ENTRY_IDENTITY_FIELDS:
            other = await self._entry_by_identity(connection, updated)
            if other is not None and other[0] != pk:
                raise duplicate_entry_error(updated, other[1].id)
        if "federates_with" in fields:
            await self._check_federated_bundles(connection, updated.federates_with)
        await connection.execute(
            f"UPDATE entries SET {_UPDATE_COLUMNS} WHERE pk = ?", _update_params(pk, updated)
        )
        await self._write_entry_lists(connection, pk, updated, fields)
        await self._event(connection, ChangeKind.ENTRY, [updated.id])
        return updated

    async def update_entries(
        self, entries: Sequence[RegistrationEntry], mask: frozenset[str] | None = None
    ) -> list[RegistrationEntry | PyspireError]:
        fields = check_mask(mask, ENTRY_MASK_FIELDS, "entry")
        if not entries:
            return []
        async with self._write() as connection:
            await connection.execute("SAVEPOINT update_entries")
            try:
                results = await self._update_many_at_once(connection, entries, fields)
            except sqlite3.IntegrityError as error:
                await connection.execute("ROLLBACK TO update_entries")
                await connection.execute("RELEASE update_entries")
                self._logger.info("batch entry update falls back to one by one", error=str(error))
                return await self._update_one_by_one(connection, entries, fields)
            await connection.execute("RELEASE update_entries")
            return results

    async def _update_many_at_once(
        self,
        connection: aiosqlite.Connection,
        entries: Sequence[RegistrationEntry],
        fields: frozenset[str],
    ) -> list[RegistrationEntry | PyspireError]:
        """Every item checked against the stored rows (read with a few bulk queries) and the
        items before it, then all changes written with one statement per table."""
        current: dict[str, tuple[int, RegistrationEntry]] = {}
        wanted = list(dict.fromkeys(entry.id for entry in entries if entry.id))
        for start in range(0, len(wanted), CHILD_CHUNK):
            chunk = wanted[start : start + CHILD_CHUNK]
            pks, loaded = await self._load_entries(
                connection, f"e.entry_id IN ({', '.join('?' * len(chunk))})", chunk
            )
            current.update((item.id, (pk, item)) for pk, item in zip(pks, loaded, strict=True))
        identities: dict[tuple[str, str, bytes], tuple[int, str]] = {}
        if fields & ENTRY_IDENTITY_FIELDS:
            spiffe_ids = {str(item.spiffe_id) for _, item in current.values()}
            if "spiffe_id" in fields:
                spiffe_ids.update(str(entry.spiffe_id) for entry in entries)
            identities = {
                (row[2], row[3], bytes(row[4])): (row[0], row[1])
                for row in await self._select_in(
                    connection,
                    "SELECT pk, entry_id, spiffe_id, parent_id, selectors_hash FROM entries "
                    "WHERE spiffe_id IN ({})",
                    sorted(spiffe_ids),
                )
            }
        bundled: set[str] = set()
        if "federates_with" in fields:
            named = sorted({td.name for entry in entries for td in entry.federates_with})
            bundled = {
                row[0]
                for row in await self._select_in(
                    connection, "SELECT trust_domain FROM bundles WHERE trust_domain IN ({})", named
                )
            }

        results: list[RegistrationEntry | PyspireError] = []
        changed: dict[int, RegistrationEntry] = {}
        events: list[str] = []
        for entry in entries:
            hit = current.get(entry.id)
            if hit is None:
                results.append(NotFoundError(f"entry id {entry.id!r} not found"))
                continue
            pk, before = hit
            try:
                updated = updated_entry(before, entry, fields)
            except PyspireError as error:
                results.append(error)
                continue
            key = entry_identity(updated)
            if fields & ENTRY_IDENTITY_FIELDS:
                other = identities.get(key)
                if other is not None and other[0] != pk:
                    results.append(duplicate_entry_error(updated, other[1]))
                    continue
            missing = missing_bundles_error(updated, bundled)
            if "federates_with" in fields and missing is not None:
                results.append(missing)
                continue
            if fields & ENTRY_IDENTITY_FIELDS:
                old_key = entry_identity(before)
                if identities.get(old_key, (None, ""))[0] == pk:
                    del identities[old_key]
                identities[key] = (pk, updated.id)
            current[entry.id] = (pk, updated)
            changed[pk] = updated
            events.append(updated.id)
            results.append(updated)

        if changed:
            await connection.executemany(
                f"UPDATE entries SET {_UPDATE_COLUMNS} WHERE pk = ?",
                [_update_params(pk, updated) for pk, updated in changed.items()],
            )
            await self._rewrite_entry_lists(connection, changed, fields)
            await self._event(connection, ChangeKind.ENTRY, events)
        return results

    async def _rewrite_entry_lists(
        self,
        connection: aiosqlite.Connection,
        changed: dict[int, RegistrationEntry],
        fields: frozenset[str],
    ) -> None:
        """Replace the list rows named in ``fields`` of many entries, one statement per table."""
        pks = [(pk,) for pk in changed]
        if "selectors" in fields:
            await connection.executemany("DELETE FROM entry_selectors WHERE entry_pk = ?", pks)
            await connection.executemany(
                "INSERT INTO entry_selectors (entry_pk, position, type, value) VALUES (?, ?, ?, ?)",
                [
                    (pk, i, s.type, s.value)
                    for pk, entry in changed.items()
                    for i, s in enumerate(entry.selectors)
                ],
            )
        if "dns_names" in fields:
            await connection.executemany("DELETE FROM entry_dns_names WHERE entry_pk = ?", pks)
            await connection.executemany(
                "INSERT INTO entry_dns_names (entry_pk, position, name) VALUES (?, ?, ?)",
                [
                    (pk, i, name)
                    for pk, entry in changed.items()
                    for i, name in enumerate(entry.dns_names)
                ],
            )
        if "federates_with" in fields:
            await connection.executemany("DELETE FROM entry_federates_with WHERE entry_pk = ?", pks)
            await connection.executemany(
                "INSERT INTO entry_federates_with (entry_pk, position, trust_domain) "
                "VALUES (?, ?, ?)",
                [
                    (pk, i, td.name)
                    for pk, entry in changed.items()
                    for i, td in enumerate(entry.federates_with)
                ],
            )

    async def _update_one_by_one(
        self,
        connection: aiosqlite.Connection,
        entries: Sequence[RegistrationEntry],
        fields: frozenset[str],
    ) -> list[RegistrationEntry | PyspireError]:
        """Each item as :meth:`update_entry` would do it, in its own savepoint of the open
        transaction."""
        results: list[RegistrationEntry | PyspireError] = []
        for entry in entries:
            await connection.execute("SAVEPOINT update_entry")
            try:
                results.append(await self._update_in(connection, entry, fields))
            except (PyspireError, sqlite3.IntegrityError) as error:
                await connection.execute("ROLLBACK TO update_entry")
                translated = self._translate(error)
                assert isinstance(translated, PyspireError)
                results.append(translated)
            await connection.execute("RELEASE update_entry")
        return results

    async def delete_entry(self, entry_id: str) -> RegistrationEntry:
        async with self._write() as connection:
            found = await self._entry_by_id(connection, entry_id)
            if found is None:
                raise NotFoundError(f"entry id {entry_id!r} not found")
            await connection.execute("DELETE FROM entries WHERE pk = ?", (found[0],))
            await self._event(connection, ChangeKind.ENTRY, [entry_id])
            return found[1]

    async def delete_entries(
        self, entry_ids: Sequence[str]
    ) -> list[RegistrationEntry | PyspireError]:
        if not entry_ids:
            return []
        async with self._write() as connection:
            wanted = list(dict.fromkeys(entry_id for entry_id in entry_ids if entry_id))
            found: dict[str, tuple[int, RegistrationEntry]] = {}
            for start in range(0, len(wanted), CHILD_CHUNK):
                chunk = wanted[start : start + CHILD_CHUNK]
                pks, loaded = await self._load_entries(
                    connection, f"e.entry_id IN ({', '.join('?' * len(chunk))})", chunk
                )
                found.update((entry.id, (pk, entry)) for pk, entry in zip(pks, loaded, strict=True))
            results, deleted = plan_entry_deletes(entry_ids, found)
            if deleted:
                await connection.executemany(
                    "DELETE FROM entries WHERE pk = ?", [(pk,) for pk, _ in deleted]
                )
                await self._event(
                    connection, ChangeKind.ENTRY, [entry_id for _, entry_id in deleted]
                )
            return results

    async def prune_registration_entries(self, expires_before: datetime) -> int:
        async with self._write() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at < ? "
                    "RETURNING entry_id",
                    (to_micros(expires_before),),
                )
            )
            await self._event(connection, ChangeKind.ENTRY, [row[0] for row in rows])
        if rows:
            self._logger.info("pruned registration entries", count=len(rows))
        return len(rows)

    async def list_all_entries(self) -> list[RegistrationEntry]:
        async with self._read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    f"SELECT {ENTRY_COLUMNS} FROM entries AS e ORDER BY pk"
                )
            )
            selector_rows = list(
                await connection.execute_fetchall(
                    "SELECT entry_pk, type, value FROM entry_selectors ORDER BY entry_pk, position"
                )
            )
            dns_rows = list(
                await connection.execute_fetchall(
                    "SELECT entry_pk, name FROM entry_dns_names ORDER BY entry_pk, position"
                )
            )
            federates_rows = list(
                await connection.execute_fetchall(
                    "SELECT entry_pk, trust_domain FROM entry_federates_with "
                    "ORDER BY entry_pk, position"
                )
            )
        return await asyncio.to_thread(
            assemble_all_entries, rows, selector_rows, dns_rows, federates_rows, from_micros
        )

    # -- attested nodes --------------------------------------------------------------------------

    async def _node_selectors(
        self, connection: aiosqlite.Connection, decoder: Decoder, ids: Sequence[str]
    ) -> dict[str, tuple[Selector, ...]]:
        found: dict[str, list[Selector]] = {}
        for start in range(0, len(ids), CHILD_CHUNK * 3):
            chunk = ids[start : start + CHILD_CHUNK * 3]
            rows = await connection.execute_fetchall(
                "SELECT spiffe_id, type, value FROM node_selectors "
                f"WHERE spiffe_id IN ({', '.join('?' * len(chunk))}) ORDER BY spiffe_id, position",
                chunk,
            )
            for spiffe_id, kind, value in rows:
                found.setdefault(spiffe_id, []).append(decoder.selector(kind, value))
        return {key: tuple(value) for key, value in found.items()}

    async def _load_nodes(
        self, connection: aiosqlite.Connection, where: str, params: Sequence[Any], limit: int = -1
    ) -> tuple[list[int], list[AttestedNode]]:
        rows = list(
            await connection.execute_fetchall(
                f"SELECT {NODE_COLUMNS} FROM attested_nodes AS n WHERE {where} "
                "ORDER BY n.pk LIMIT ?",
                [*params, limit],
            )
        )
        decoder = Decoder()
        selectors = await self._node_selectors(connection, decoder, [row[1] for row in rows])
        nodes = [
            node_from_row(decoder, row, selectors.get(row[1], ()), from_micros) for row in rows
        ]
        return [row[0] for row in rows], nodes

    async def _node_by_id(
        self, connection: aiosqlite.Connection, spiffe_id: SpiffeId
    ) -> AttestedNode | None:
        _, nodes = await self._load_nodes(connection, "n.spiffe_id = ?", [str(spiffe_id)])
        return nodes[0] if nodes else None

    async def _replace_node_selectors(
        self, connection: aiosqlite.Connection, spiffe_id: SpiffeId, selectors: tuple[Selector, ...]
    ) -> None:
        key = str(spiffe_id)
        await connection.execute("DELETE FROM node_selectors WHERE spiffe_id = ?", (key,))
        await connection.executemany(
            "INSERT INTO node_selectors (spiffe_id, position, type, value) VALUES (?, ?, ?, ?)",
            [(key, i, s.type, s.value) for i, s in enumerate(dedupe(selectors))],
        )

    async def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        # One statement, one trip to the writer's thread (a thousand agents may attest at
        # once; see node_creation): the UNIQUE spiffe_id refuses a duplicate, and the stored
        # record is built from what was written and the selectors the statement returns.
        try:
            rows = await self._write_statement(
                CREATE_NODE_SQL,
                (
                    str(node.spiffe_id),
                    *node_columns(node, to_micros),
                    selectors_json(dedupe(node.selectors)),
                    ChangeKind.NODE.value,
                    to_micros(self._clock.now()),
                ),
            )
        except AlreadyExistsError:
            raise AlreadyExistsError(f"attested node {node.spiffe_id} already exists") from None
        return _as_stored(node, stored_selectors(Decoder(), rows[0][0]))

    async def get_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        # One statement reads the node and its selectors: a consistent snapshot without a
        # transaction around it, so one trip to a reader's thread instead of three or four.
        async with self._read(snapshot=False) as connection:
            rows = list(
                await connection.execute_fetchall(_NODE_WITH_SELECTORS_SQL, (str(spiffe_id),))
            )
        if not rows:
            return None
        decoder = Decoder()
        selectors = tuple(decoder.selector(row[-2], row[-1]) for row in rows if row[-2] is not None)
        return node_from_row(decoder, rows[0], selectors, from_micros)

    async def list_attested_nodes(
        self, node_filter: NodeFilter | None = None, page: Page | None = None
    ) -> AttestedNodePage:
        after, limit = pk_page(page)
        where, params = node_where(node_filter)
        async with self._read() as connection:
            pks, nodes = await self._load_nodes(
                connection, f"n.pk > ? AND {where}", [after, *params], limit
            )
        if limit > 0 and len(nodes) == limit:
            return AttestedNodePage(tuple(nodes[:-1]), str(pks[-2]))
        return AttestedNodePage(tuple(nodes))

    async def count_attested_nodes(self, node_filter: NodeFilter | None = None) -> int:
        where, params = node_where(node_filter)
        async with self._read(snapshot=False) as connection:
            rows = list(
                await connection.execute_fetchall(
                    f"SELECT COUNT(*) FROM attested_nodes AS n WHERE {where}", params
                )
            )
        return int(rows[0][0])

    async def update_attested_node(
        self, node: AttestedNode, mask: frozenset[str] | None = None
    ) -> AttestedNode:
        fields = check_mask(mask, NODE_MASK_FIELDS, "attested node")
        async with self._write() as connection:
            current = await self._node_by_id(connection, node.spiffe_id)
            if current is None:
                raise NotFoundError(f"attested node {node.spiffe_id} not found")
            updated = replace(current, **{name: getattr(node, name) for name in fields})
            await connection.execute(
                "UPDATE attested_nodes SET attestation_type = ?, serial_number = ?, "
                "expires_at = ?, new_serial_number = ?, new_expires_at = ?, banned = ?, "
                "can_reattest = ?, agent_version = ? WHERE spiffe_id = ?",
                (*node_columns(updated, to_micros), str(node.spiffe_id)),
            )
            if "selectors" in fields:
                await self._replace_node_selectors(connection, node.spiffe_id, updated.selectors)
            await self._event(connection, ChangeKind.NODE, [str(node.spiffe_id)])
            stored = await self._node_by_id(connection, node.spiffe_id)
        assert stored is not None
        return stored

    async def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode:
        async with self._write() as connection:
            current = await self._node_by_id(connection, spiffe_id)
            if current is None:
                raise NotFoundError(f"attested node {spiffe_id} not found")
            await connection.execute(
                "DELETE FROM attested_nodes WHERE spiffe_id = ?", (str(spiffe_id),)
            )
            await connection.execute(
                "DELETE FROM node_selectors WHERE spiffe_id = ?", (str(spiffe_id),)
            )
            await self._event(connection, ChangeKind.NODE, [str(spiffe_id)])
            return current

    async def set_node_selectors(
        self, spiffe_id: SpiffeId, selectors: tuple[Selector, ...]
    ) -> None:
        async with self._write() as connection:
            await self._replace_node_selectors(connection, spiffe_id, selectors)
            await self._event(connection, ChangeKind.NODE, [str(spiffe_id)])

    async def get_node_selectors(self, spiffe_id: SpiffeId) -> tuple[Selector, ...]:
        async with self._read(snapshot=False) as connection:
            found = await self._node_selectors(connection, Decoder(), [str(spiffe_id)])
        return found.get(str(spiffe_id), ())

    async def list_all_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]:
        async with self._read(snapshot=False) as connection:
            rows = await connection.execute_fetchall(
                "SELECT spiffe_id, type, value FROM node_selectors ORDER BY spiffe_id, position"
            )
        return await asyncio.to_thread(assemble_node_selectors, rows)

    # -- join tokens -----------------------------------------------------------------------------

    async def create_join_token(self, token: JoinToken) -> JoinToken:
        if not token.token:
            raise InvalidArgumentError("join token value is empty")
        async with self._write() as connection:
            found = await connection.execute_fetchall(
                "SELECT 1 FROM join_tokens WHERE token = ?", (token.token,)
            )
            if list(found):
                raise AlreadyExistsError("join token already exists")
            await connection.execute(
                "INSERT INTO join_tokens (token, expires_at) VALUES (?, ?)",
                (token.token, to_micros(token.expires_at)),
            )
        return JoinToken(token=token.token, expires_at=from_micros(to_micros(token.expires_at)))

    async def list_join_tokens(self) -> list[JoinToken]:
        async with self._read(snapshot=False) as connection:
            rows = await connection.execute_fetchall(
                "SELECT token, expires_at FROM join_tokens ORDER BY token"
            )
        return [JoinToken(token=row[0], expires_at=from_micros(row[1])) for row in rows]

    async def fetch_join_token(self, token: str) -> JoinToken | None:
        async with self._read(snapshot=False) as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT token, expires_at FROM join_tokens WHERE token = ?", (token,)
                )
            )
        return JoinToken(token=rows[0][0], expires_at=from_micros(rows[0][1])) if rows else None

    async def delete_join_token(self, token: str) -> None:
        async with self._write() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "DELETE FROM join_tokens WHERE token = ? RETURNING token", (token,)
                )
            )
            if not rows:
                raise NotFoundError("join token not found")

    async def consume_join_token(self, token: str) -> JoinToken:
        rows = await self._write_statement(
            "DELETE FROM join_tokens WHERE token = ? RETURNING token, expires_at", (token,)
        )
        if not rows:
            raise NotFoundError("join token not found or already used")
        return JoinToken(token=rows[0][0], expires_at=from_micros(rows[0][1]))

    async def prune_join_tokens(self, expires_before: datetime) -> int:
        async with self._write() as connection:
            cursor = await connection.execute(
                "DELETE FROM join_tokens WHERE expires_at < ?", (to_micros(expires_before),)
            )
            return int(cursor.rowcount)

    # -- bundles ---------------------------------------------------------------------------------

    async def _bundle(
        self, connection: aiosqlite.Connection, trust_domain: TrustDomain
    ) -> Bundle | None:
        rows = list(
            await connection.execute_fetchall(
                "SELECT trust_domain, sequence_number, refresh_hint, data FROM bundles "
                "WHERE trust_domain = ?",
                (trust_domain.name,),
            )
        )
        return bundle_from_json(*rows[0]) if rows else None

    async def _store_bundle(self, connection: aiosqlite.Connection, bundle: Bundle) -> Bundle:
        await connection.execute(
            "INSERT INTO bundles (trust_domain, sequence_number, refresh_hint, data) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (trust_domain) DO UPDATE SET "
            "sequence_number = excluded.sequence_number, refresh_hint = excluded.refresh_hint, "
            "data = excluded.data",
            (
                bundle.trust_domain.name,
                bundle.sequence_number,
                bundle.refresh_hint,
                bundle_to_json(bundle),
            ),
        )
        stored = await self._bundle(connection, bundle.trust_domain)
        assert stored is not None
        return stored

    async def _bundle_transaction(
        self, trust_domain: TrustDomain, work: Callable[[aiosqlite.Connection], Awaitable[T]]
    ) -> T:
        """The one writer's transaction, which holds every bundle's lock."""
        async with self._write() as connection:
            return await work(connection)

    async def get_bundle(self, trust_domain: TrustDomain) -> Bundle | None:
        async with self._read(snapshot=False) as connection:
            return await self._bundle(connection, trust_domain)

    async def list_bundles(self, page: Page | None = None) -> BundlePage:
        after, limit = name_page(page)
        async with self._read(snapshot=False) as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT trust_domain, sequence_number, refresh_hint, data FROM bundles "
                    "WHERE trust_domain > ? ORDER BY trust_domain LIMIT ?",
                    (after, limit),
                )
            )
        bundles = [bundle_from_json(*row) for row in rows]
        if limit > 0 and len(bundles) == limit:
            return BundlePage(tuple(bundles[:-1]), bundles[-2].trust_domain.name)
        return BundlePage(tuple(bundles))

    async def count_bundles(self) -> int:
        async with self._read(snapshot=False) as connection:
            rows = list(await connection.execute_fetchall("SELECT COUNT(*) FROM bundles"))
        return int(rows[0][0])

    async def delete_bundle(
        self, trust_domain: TrustDomain, mode: BundleDeleteMode = BundleDeleteMode.RESTRICT
    ) -> None:
        async with self._write() as connection:
            if await self._bundle(connection, trust_domain) is None:
                raise NotFoundError(f"bundle for trust domain {trust_domain} not found")
            rows = list(
                await connection.execute_fetchall(
                    "SELECT e.pk, e.entry_id FROM entry_federates_with AS f "
                    "JOIN entries AS e ON e.pk = f.entry_pk WHERE f.trust_domain = ? "
                    "ORDER BY e.pk",
                    (trust_domain.name,),
                )
            )
            if rows and mode is BundleDeleteMode.RESTRICT:
                raise FailedPreconditionError(
                    f"bundle for trust domain {trust_domain} is federated with by {len(rows)} "
                    "registration entries: delete them or use mode DELETE or DISSOCIATE"
                )
            if rows and mode is BundleDeleteMode.DELETE:
                await connection.executemany(
                    "DELETE FROM entries WHERE pk = ?", [(row[0],) for row in rows]
                )
            elif rows:
                await connection.execute(
                    "DELETE FROM entry_federates_with WHERE trust_domain = ?",
                    (trust_domain.name,),
                )
                await connection.executemany(
                    "UPDATE entries SET revision_number = revision_number + 1 WHERE pk = ?",
                    [(row[0],) for row in rows],
                )
            await self._event(connection, ChangeKind.ENTRY, [row[1] for row in rows])
            await connection.execute(
                "DELETE FROM bundles WHERE trust_domain = ?", (trust_domain.name,)
            )

    # -- CA journal ------------------------------------------------------------------------------

    async def get_ca_journal(self, name: str) -> bytes | None:
        async with self._read(snapshot=False) as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT data FROM ca_journals WHERE name = ?", (name,)
                )
            )
        return bytes(rows[0][0]) if rows else None

    async def set_ca_journal(self, name: str, data: bytes) -> None:
        if not name:
            raise InvalidArgumentError("CA journal name is empty")
        async with self._write() as connection:
            await connection.execute(
                "INSERT INTO ca_journals (name, data) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                (name, bytes(data)),
            )

    # -- federation relationships ----------------------------------------------------------------

    async def _relationship(
        self, connection: aiosqlite.Connection, trust_domain: TrustDomain
    ) -> FederationRelationship | None:
        rows = list(
            await connection.execute_fetchall(
                "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id "
                "FROM federation_relationships WHERE trust_domain = ?",
                (trust_domain.name,),
            )
        )
        return relationship_from_row(Decoder(), rows[0]) if rows else None

    async def create_federation_relationship(
        self, relationship: FederationRelationship
    ) -> FederationRelationship:
        async with self._write() as connection:
            if await self._relationship(connection, relationship.trust_domain) is not None:
                raise AlreadyExistsError(
                    f"federation relationship with {relationship.trust_domain} already exists"
                )
            await connection.execute(
                "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, "
                "profile, endpoint_spiffe_id) VALUES (?, ?, ?, ?)",
                relationship_columns(relationship),
            )
        return relationship

    async def get_federation_relationship(
        self, trust_domain: TrustDomain
    ) -> FederationRelationship | None:
        async with self._read(snapshot=False) as connection:
            return await self._relationship(connection, trust_domain)

    async def list_federation_relationships(
        self, page: Page | None = None
    ) -> FederationRelationshipPage:
        after, limit = name_page(page)
        async with self._read(snapshot=False) as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id "
                    "FROM federation_relationships WHERE trust_domain > ? "
                    "ORDER BY trust_domain LIMIT ?",
                    (after, limit),
                )
            )
        decoder = Decoder()
        found = [relationship_from_row(decoder, row) for row in rows]
        if limit > 0 and len(found) == limit:
            return FederationRelationshipPage(tuple(found[:-1]), found[-2].trust_domain.name)
        return FederationRelationshipPage(tuple(found))

    async def update_federation_relationship(
        self, relationship: FederationRelationship, mask: frozenset[str] | None = None
    ) -> FederationRelationship:
        fields = check_mask(mask, FEDERATION_RELATIONSHIP_MASK_FIELDS, "federation relationship")
        async with self._write() as connection:
            current = await self._relationship(connection, relationship.trust_domain)
            if current is None:
                raise NotFoundError(
                    f"federation relationship with {relationship.trust_domain} not found"
                )
            updated = replace(current, **{name: getattr(relationship, name) for name in fields})
            await connection.execute(
                "UPDATE federation_relationships SET bundle_endpoint_url = ?, profile = ?, "
                "endpoint_spiffe_id = ? WHERE trust_domain = ?",
                (*relationship_columns(updated)[1:], updated.trust_domain.name),
            )
            return updated

    async def delete_federation_relationship(self, trust_domain: TrustDomain) -> None:
        async with self._write() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "DELETE FROM federation_relationships WHERE trust_domain = ? "
                    "RETURNING trust_domain",
                    (trust_domain.name,),
                )
            )
            if not rows:
                raise NotFoundError(f"federation relationship with {trust_domain} not found")

    # -- change feed -----------------------------------------------------------------------------

    async def list_change_events(
        self, after_event_id: int = 0, limit: int = 0
    ) -> list[ChangeEvent]:
        if limit < 0:
            raise InvalidArgumentError(f"change event limit {limit} is negative")
        async with self._read(snapshot=False) as connection:
            rows = await connection.execute_fetchall(
                "SELECT event_id, kind, object_id, created_at FROM change_events "
                "WHERE event_id > ? ORDER BY event_id LIMIT ?",
                (after_event_id, limit or -1),
            )
        return [change_event_from_row(row, from_micros) for row in rows]

    async def last_change_event_id(self) -> int:
        async with self._read(snapshot=False) as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'change_events'"
                )
            )
        return int(rows[0][0]) if rows else 0

    async def prune_change_events(self, before: datetime) -> int:
        async with self._write() as connection:
            cursor = await connection.execute(
                "DELETE FROM change_events WHERE created_at < ?", (to_micros(before),)
            )
            return int(cursor.rowcount)
