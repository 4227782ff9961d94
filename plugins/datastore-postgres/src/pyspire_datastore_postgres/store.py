# ruff: noqa: S608 - SQL text is assembled from constants only; every value is a bound parameter
"""The ``postgres`` datastore: :class:`~pyspire_sdk.plugins.datastore.DataStore` on PostgreSQL.

Several servers may share one database, so every guarantee of the contract holds across
processes, not only across the tasks of one:

- **One transaction per call**, at READ COMMITTED; a call that raises rolls back whole. Reads
  that need several queries run in one REPEATABLE READ read-only transaction, so they see one
  snapshot.
- **Read-modify-write** takes a lock before it reads: the entry rows it changes
  (``SELECT ... FOR UPDATE``, in key order, so batches cannot deadlock each other), and for
  objects that may not exist yet, a transaction-scoped advisory lock named after the object
  (a trust domain's bundle, a node's record and selectors). Join tokens are consumed with one
  ``DELETE ... RETURNING``: of concurrent callers, exactly one gets the row.
- **The change feed never skips an event that commits late.** Event ids come from a one-row
  counter that a transaction updates as its very last statement before ``COMMIT``: the row lock
  makes event-writing transactions commit in id order, so a reader that saw event *n* has seen
  every event below *n*, and an id is never lost to a rollback. Each such commit also sends
  ``NOTIFY`` on :data:`NOTIFY_CHANNEL` with ``<schema>:<last event id>`` (and a commit that
  wrote a bundle ``<schema>:bundle``), which
  :meth:`PostgresDataStore.watch_changes` (:mod:`pyspire_datastore_postgres.watch`) listens
  for, so a change made through one server reaches the others' caches at once.
"""

from __future__ import annotations

__all__ = ["NOTIFY_CHANNEL", "PostgresDataStore"]

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import structlog

from pyspire_datastore_postgres.config import PostgresDataStoreConfig
from pyspire_datastore_postgres.connection import ConnectionTarget, open_pool
from pyspire_datastore_postgres.queries import Params
from pyspire_datastore_postgres.records import ENTRY_COLUMNS, NODE_COLUMNS
from pyspire_datastore_postgres.schema import migrate, schema_lock_key
from pyspire_datastore_postgres.watch import BUNDLE_PAYLOAD, NOTIFY_CHANNEL, ChangeWatch
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock, SystemClock
from pyspire_sdk.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PluginError,
    UnavailableError,
)
from pyspire_sdk.model import AttestedNode, FederationRelationship, JoinToken, RegistrationEntry
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import (
    FEDERATION_RELATIONSHIP_MASK_FIELDS,
    NODE_MASK_FIELDS,
    AttestedNodePage,
    BundleDeleteMode,
    BundlePage,
    ChangeEvent,
    ChangeKind,
    ChangeListener,
    EntryFilter,
    EntryPage,
    FailedPreconditionError,
    FederationRelationshipPage,
    NodeFilter,
    Page,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.sql_datastore import BundleStore, EntryBatchStore, SqlTransaction
from pyspire_sdk.sql_filters import entry_where, node_where
from pyspire_sdk.stored_records import (
    KIND_DNS,
    KIND_FEDERATES,
    KIND_SELECTOR,
    RELATIONSHIP_ROW,
    Decoder,
    EntryIdentity,
    assemble_all_entries,
    assemble_entries,
    assemble_node_selectors,
    bundle_from_json,
    bundle_to_json,
    change_event_from_row,
    check_mask,
    dedupe,
    entry_columns,
    entry_identity,
    integer_page_token,
    name_page_token,
    node_columns,
    node_from_row,
    relationship_columns,
    relationship_from_row,
)

T = TypeVar("T")

_ENTRY_INSERT = (
    "INSERT INTO entries (entry_id, spiffe_id, parent_id, selectors_hash, x509_svid_ttl, "
    "jwt_svid_ttl, admin, downstream, expires_at, revision_number, store_svid, hint, created_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::integer[], "
    "$6::integer[], $7::boolean[], $8::boolean[], $9::timestamptz[], $10::bigint[], "
    "$11::boolean[], $12::text[], $13::timestamptz[]) "
    "ON CONFLICT DO NOTHING RETURNING pk, entry_id"
)
_ENTRY_UPDATE = (
    "UPDATE entries AS e SET spiffe_id = u.spiffe_id, parent_id = u.parent_id, "
    "selectors_hash = u.selectors_hash, x509_svid_ttl = u.x509_svid_ttl, "
    "jwt_svid_ttl = u.jwt_svid_ttl, admin = u.admin, downstream = u.downstream, "
    "expires_at = u.expires_at, revision_number = u.revision_number, "
    "store_svid = u.store_svid, hint = u.hint "
    "FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::integer[], "
    "$6::integer[], $7::boolean[], $8::boolean[], $9::timestamptz[], $10::bigint[], "
    "$11::boolean[], $12::text[]) AS u(pk, spiffe_id, parent_id, selectors_hash, "
    "x509_svid_ttl, jwt_svid_ttl, admin, downstream, expires_at, revision_number, store_svid, "
    "hint) WHERE e.pk = u.pk"
)
_ENTRY_CHILDREN = (
    f"SELECT entry_pk, {KIND_SELECTOR}, position, type, value FROM entry_selectors "
    "WHERE entry_pk = ANY($1::bigint[]) "
    f"UNION ALL SELECT entry_pk, {KIND_DNS}, position, name, NULL FROM entry_dns_names "
    "WHERE entry_pk = ANY($1::bigint[]) "
    f"UNION ALL SELECT entry_pk, {KIND_FEDERATES}, position, trust_domain, NULL "
    "FROM entry_federates_with WHERE entry_pk = ANY($1::bigint[]) "
    "ORDER BY 1, 2, 3"
)
_APPEND_EVENTS = (
    "WITH counter AS (UPDATE change_event_counter "
    "SET last_event_id = last_event_id + cardinality($1::text[]) RETURNING last_event_id), "
    "appended AS (INSERT INTO change_events (event_id, kind, object_id, created_at) "
    "SELECT counter.last_event_id - cardinality($1::text[]) + u.ordinality, u.kind, "
    "u.object_id, $3 FROM counter, unnest($1::text[], $2::text[]) WITH ORDINALITY "
    "AS u(kind, object_id, ordinality)) "
    "SELECT pg_notify($4, $5 || ':' || counter.last_event_id) FROM counter"
)
_BUNDLE_COLUMNS = "trust_domain, sequence_number, refresh_hint, data"
_RELATIONSHIP_COLUMNS = ", ".join(RELATIONSHIP_ROW)


def _columns(entries: Sequence[RegistrationEntry]) -> list[list[Any]]:
    """Per column of :func:`entry_columns`, the values of every entry (for ``unnest``)."""
    rows = [entry_columns(entry) for entry in entries]
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 11


class _Transaction(SqlTransaction[asyncpg.Connection]):
    """An open write transaction on PostgreSQL (see
    :class:`~pyspire_sdk.sql_datastore.SqlTransaction`)."""

    __slots__ = ()

    def _nested(self) -> AbstractAsyncContextManager[None]:
        nested: AbstractAsyncContextManager[None] = self.connection.transaction()
        return nested


class PostgresDataStore(EntryBatchStore[_Transaction], BundleStore):
    """The ``postgres`` datastore plugin. Configure once, use from one event loop, then close."""

    def __init__(self) -> None:
        self._clock: Clock = SystemClock()
        self._logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()
        self._pool: Any = None
        self._replica: Any = None
        self._target: ConnectionTarget | None = None
        self._schema = ""
        self._max_lifetime = timedelta(0)

    # -- life cycle ------------------------------------------------------------------------------

    async def configure(self, config: PostgresDataStoreConfig, host: HostServices) -> None:
        """Connect, check or migrate the schema, and open the pools.

        Raises :class:`~pyspire_sdk.stored_records.SchemaTooNewError` for a schema written by a
        newer release and :class:`~pyspire_sdk.errors.PluginError` when the database cannot be
        reached or used; messages name the configuration key and never show a password.
        """
        if self._pool is not None:
            raise PluginError("postgres datastore is already configured")
        self._clock = host.clock
        self._logger = host.logger
        self._max_lifetime = config.conn_max_lifetime
        tls = {
            "root_ca": config.root_ca_path,
            "client_cert": config.client_cert_path,
            "client_key": config.client_key_path,
        }
        target = ConnectionTarget.parse("connection_string", config.connection_string, **tls)
        replica = (
            None
            if config.ro_connection_string is None
            else ConnectionTarget.parse("ro_connection_string", config.ro_connection_string, **tls)
        )
        self._target = target
        self._pool = await self._open(target, config, read_only=False)
        try:
            async with self._pool.acquire() as connection:
                schema = await connection.fetchval("SELECT current_schema()")
                if schema is None:
                    search_path = await connection.fetchval("SHOW search_path")
                    raise PluginError(
                        f"connection_string {target.shown}: no schema of search_path "
                        f"{search_path!r} exists; create it first"
                    )
                self._schema = str(schema)
                where = f"connection_string {target.shown} schema {self._schema!r}"
                found = await migrate(
                    connection, self._schema, where, allowed=not config.disable_migration
                )
            if replica is not None:
                self._replica = await self._open(replica, config, read_only=True)
        except PluginError:
            await self.close()
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            await self.close()
            raise PluginError(
                f"connection_string {target.shown}: {target.scrub(str(error))}"
            ) from None
        self._logger.info(
            "datastore opened",
            database=target.shown,
            schema=self._schema,
            schema_version_found=found,
            replica=None if replica is None else replica.shown,
        )

    async def _open(
        self, target: ConnectionTarget, config: PostgresDataStoreConfig, *, read_only: bool
    ) -> Any:
        pool = open_pool(
            target,
            max_open=config.max_open_conns,
            max_idle=config.max_idle_conns,
            statement_timeout=config.statement_timeout,
            now=self._clock.now,
            read_only=read_only,
        )
        try:
            await pool
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as error:
            await pool.close()
            raise PluginError(
                f"{target.key} {target.shown}: cannot connect: {target.scrub(str(error))}"
            ) from None
        return pool

    async def close(self) -> None:
        """Close both pools, waiting for calls in progress; safe to call more than once."""
        pools = [pool for pool in (self._pool, self._replica) if pool is not None]
        self._pool = self._replica = None
        for pool in pools:
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    @property
    def schema(self) -> str:
        """The schema holding this datastore's tables."""
        return self._schema

    async def watch_changes(self, listener: ChangeListener) -> None:
        """Tell ``listener`` of changes written by any server sharing this schema, as they
        commit (:class:`~pyspire_sdk.plugins.datastore.WatchableDataStore`), through
        ``LISTEN`` on a connection of its own."""
        if self._target is None:
            raise UnavailableError("postgres datastore is not configured or already closed")
        await ChangeWatch(self._target, self._schema, self._clock, self._logger).run(listener)

    # -- connections and transactions ------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self, *, replica: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (the replica's when asked and configured); retired on release
        once older than ``conn_max_lifetime``."""
        pool = self._replica if replica and self._replica is not None else self._pool
        if pool is None:
            raise UnavailableError("postgres datastore is not configured or already closed")
        try:
            async with pool.acquire() as connection:
                try:
                    yield connection
                finally:
                    if self._expired(connection):
                        await connection.close()
        except (OSError, asyncpg.InterfaceError, TimeoutError) as error:
            raise self._unavailable(error) from None

    def _expired(self, connection: asyncpg.Connection) -> bool:
        if not self._max_lifetime:
            return False
        opened_at = connection.opened_at  # a LifetimeConnection behind the pool's proxy
        return opened_at is not None and self._clock.now() - opened_at >= self._max_lifetime

    def _unavailable(self, error: BaseException) -> UnavailableError:
        target = self._target
        text = str(error) if target is None else target.scrub(str(error))
        self._logger.warning("datastore query failed", error=text, error_type=type(error).__name__)
        return UnavailableError(f"postgres datastore: {text}")

    def _translate(self, error: BaseException) -> BaseException:
        if isinstance(error, asyncpg.UniqueViolationError):
            return AlreadyExistsError(f"postgres datastore: {error.detail or error}")
        if isinstance(
            error,
            asyncpg.ForeignKeyViolationError
            | asyncpg.DataError
            | asyncpg.CheckViolationError
            | asyncpg.NotNullViolationError,
        ):
            return InvalidArgumentError(f"postgres datastore: {error}")
        if isinstance(error, asyncpg.QueryCanceledError):
            return self._unavailable(error)
        if isinstance(error, asyncpg.PostgresError | OSError | asyncpg.InterfaceError):
            return self._unavailable(error)
        return error

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[_Transaction]:
        """One write transaction; its change events are appended last, right before commit."""
        try:
            async with self._connection() as connection, connection.transaction():
                transaction = _Transaction(connection)
                yield transaction
                if transaction.events:
                    await self._append_events(connection, transaction.events)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            translated = self._translate(error)
            if translated is error:
                raise
            raise translated from None

    async def _in_write_transaction(self, work: Callable[[_Transaction], Awaitable[T]]) -> T:
        async with self._write() as transaction:
            return await work(transaction)

    async def _append_events(
        self, connection: asyncpg.Connection, events: Sequence[tuple[str, str]]
    ) -> None:
        """Append a transaction's change events and notify; the last statement before commit.

        Taking the next ids locks the counter row until the transaction ends, so the
        transactions that append events commit in the order of their ids.
        """
        kinds, ids = zip(*events, strict=True)
        await connection.execute(
            _APPEND_EVENTS, list(kinds), list(ids), self._clock.now(), NOTIFY_CHANNEL, self._schema
        )

    @asynccontextmanager
    async def _read(
        self, *, snapshot: bool = False, replica: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection for reading; with ``snapshot`` its queries share one snapshot."""
        try:
            async with self._connection(replica=replica) as connection:
                if snapshot:
                    async with connection.transaction(isolation="repeatable_read", readonly=True):
                        yield connection
                else:
                    yield connection
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            translated = self._translate(error)
            if translated is error:
                raise
            raise translated from None

    async def _lock(self, connection: asyncpg.Connection, kind: str, name: str) -> None:
        """Hold the advisory lock of one object until the transaction ends."""
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            schema_lock_key(self._schema, f"{kind}/{name}"),
        )

    # -- registration entries --------------------------------------------------------------------

    async def _load_entries(
        self,
        connection: asyncpg.Connection,
        where: str,
        params: Params,
        limit: int = 0,
        *,
        lock: bool = False,
    ) -> tuple[list[int], list[RegistrationEntry]]:
        sql = f"SELECT {ENTRY_COLUMNS} FROM entries AS e WHERE {where} ORDER BY e.pk"
        if limit:
            sql += f" LIMIT {params.bind(limit)}"
        if lock:
            sql += " FOR UPDATE OF e"
        rows = await connection.fetch(sql, *params.values)
        pks = [row[0] for row in rows]
        children = await connection.fetch(_ENTRY_CHILDREN, pks) if pks else []
        return pks, assemble_entries(rows, children)

    async def _entries_by_id(
        self, connection: asyncpg.Connection, entry_ids: Sequence[str], *, lock: bool = False
    ) -> dict[str, tuple[int, RegistrationEntry]]:
        params = Params(list(entry_ids))
        pks, entries = await self._load_entries(
            connection, "e.entry_id = ANY($1::text[])", params, lock=lock
        )
        return {entry.id: (pk, entry) for pk, entry in zip(pks, entries, strict=True)}

    async def _entries_by_identity(
        self, connection: asyncpg.Connection, identities: Iterable[EntryIdentity]
    ) -> dict[EntryIdentity, tuple[int, RegistrationEntry]]:
        wanted = list(dict.fromkeys(identities))
        if not wanted:
            return {}
        params = Params(
            [key[0] for key in wanted], [key[1] for key in wanted], [key[2] for key in wanted]
        )
        pks, entries = await self._load_entries(
            connection,
            "(e.spiffe_id, e.parent_id, e.selectors_hash) IN "
            "(SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]))",
            params,
        )
        return {entry_identity(entry): (pk, entry) for pk, entry in zip(pks, entries, strict=True)}

    async def _bundled(self, connection: asyncpg.Connection, names: Iterable[str]) -> set[str]:
        wanted = sorted(set(names))
        if not wanted:
            return set()
        rows = await connection.fetch(
            "SELECT trust_domain FROM bundles WHERE trust_domain = ANY($1::text[])", wanted
        )
        return {row[0] for row in rows}

    async def _insert_entries(
        self, transaction: _Transaction, entries: Sequence[RegistrationEntry]
    ) -> bool:
        """Write new entries (ids, times and revisions as given) with their lists and events;
        ``False``, having written nothing that counts, when a concurrent writer took one of
        their ids or identities first (the caller rolls its savepoint back)."""
        if not entries:
            return True
        connection = transaction.connection
        columns = _columns(entries)
        rows = await connection.fetch(
            _ENTRY_INSERT,
            [entry.id for entry in entries],
            *columns,
            [entry.created_at for entry in entries],
        )
        if len(rows) != len(entries):
            return False
        pks = {row[1]: row[0] for row in rows}
        await self._write_lists(
            connection,
            [(pks[entry.id], entry) for entry in entries],
            frozenset({"selectors", "dns_names", "federates_with"}),
            replace_existing=False,
        )
        transaction.event(ChangeKind.ENTRY, [entry.id for entry in entries])
        return True

    async def _write_lists(
        self,
        connection: asyncpg.Connection,
        entries: Sequence[tuple[int, RegistrationEntry]],
        fields: frozenset[str],
        *,
        replace_existing: bool = True,
    ) -> None:
        """Write the list rows named in ``fields`` of many entries, one statement per table."""
        pks = [pk for pk, _ in entries]
        if "selectors" in fields:
            if replace_existing:
                await connection.execute(
                    "DELETE FROM entry_selectors WHERE entry_pk = ANY($1::bigint[])", pks
                )
            rows = [
                (pk, i, s.type, s.value)
                for pk, entry in entries
                for i, s in enumerate(entry.selectors)
            ]
            await connection.execute(
                "INSERT INTO entry_selectors (entry_pk, position, type, value) "
                "SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[])",
                *([list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 4),
            )
        if "dns_names" in fields:
            if replace_existing:
                await connection.execute(
                    "DELETE FROM entry_dns_names WHERE entry_pk = ANY($1::bigint[])", pks
                )
            dns_rows = [
                (pk, i, name) for pk, entry in entries for i, name in enumerate(entry.dns_names)
            ]
            if dns_rows:
                await connection.execute(
                    "INSERT INTO entry_dns_names (entry_pk, position, name) "
                    "SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[])",
                    *[list(column) for column in zip(*dns_rows, strict=True)],
                )
        if "federates_with" in fields:
            if replace_existing:
                await connection.execute(
                    "DELETE FROM entry_federates_with WHERE entry_pk = ANY($1::bigint[])", pks
                )
            federates_rows = [
                (pk, i, td.name)
                for pk, entry in entries
                for i, td in enumerate(entry.federates_with)
            ]
            if federates_rows:
                await connection.execute(
                    "INSERT INTO entry_federates_with (entry_pk, position, trust_domain) "
                    "SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[])",
                    *[list(column) for column in zip(*federates_rows, strict=True)],
                )

    async def _taken_entry_ids(
        self, connection: asyncpg.Connection, entry_ids: Sequence[str]
    ) -> set[str]:
        rows = await connection.fetch(
            "SELECT entry_id FROM entries WHERE entry_id = ANY($1::text[])", list(entry_ids)
        )
        return {row[0] for row in rows}

    async def _update_entry_rows(
        self,
        connection: asyncpg.Connection,
        changed: Mapping[int, RegistrationEntry],
        fields: frozenset[str],
    ) -> None:
        await connection.execute(_ENTRY_UPDATE, list(changed), *_columns(list(changed.values())))
        await self._write_lists(connection, list(changed.items()), fields)

    async def _delete_entry_rows(self, connection: asyncpg.Connection, pks: Sequence[int]) -> None:
        await connection.execute("DELETE FROM entries WHERE pk = ANY($1::bigint[])", list(pks))

    async def _delete_entries_by_id(
        self, connection: asyncpg.Connection, entry_ids: Sequence[str]
    ) -> None:
        await connection.execute(
            "DELETE FROM entries WHERE entry_id = ANY($1::text[])", list(entry_ids)
        )

    def _is_unique_violation(self, error: BaseException) -> bool:
        return isinstance(error, asyncpg.UniqueViolationError)

    async def get_entry(self, entry_id: str) -> RegistrationEntry | None:
        async with self._read(snapshot=True) as connection:
            found = await self._entries_by_id(connection, [entry_id])
        hit = found.get(entry_id)
        return None if hit is None else hit[1]

    async def list_entries(
        self, entry_filter: EntryFilter | None = None, page: Page | None = None
    ) -> EntryPage:
        page = page or Page()
        params = Params(integer_page_token(page.token))
        where = entry_where(params, entry_filter)
        limit = page.size + 1 if page.size else 0
        async with self._read(snapshot=True, replica=True) as connection:
            pks, entries = await self._load_entries(
                connection, f"e.pk > $1 AND {where}", params, limit
            )
        if limit and len(entries) == limit:
            return EntryPage(tuple(entries[:-1]), str(pks[-2]))
        return EntryPage(tuple(entries))

    async def count_entries(self, entry_filter: EntryFilter | None = None) -> int:
        params = Params()
        where = entry_where(params, entry_filter)
        async with self._read(replica=True) as connection:
            count = await connection.fetchval(
                f"SELECT COUNT(*) FROM entries AS e WHERE {where}", *params.values
            )
        return int(count)

    async def prune_registration_entries(self, expires_before: datetime) -> int:
        async with self._write() as transaction:
            rows = await transaction.connection.fetch(
                "DELETE FROM entries WHERE expires_at < $1 RETURNING entry_id", expires_before
            )
            transaction.event(ChangeKind.ENTRY, [row[0] for row in rows])
        if rows:
            self._logger.info("pruned registration entries", count=len(rows))
        return len(rows)

    async def list_all_entries(self) -> list[RegistrationEntry]:
        async with self._read(snapshot=True) as connection:
            rows = await connection.fetch(f"SELECT {ENTRY_COLUMNS} FROM entries AS e ORDER BY e.pk")
            selector_rows = await connection.fetch(
                "SELECT entry_pk, type, value FROM entry_selectors ORDER BY entry_pk, position"
            )
            dns_rows = await connection.fetch(
                "SELECT entry_pk, name FROM entry_dns_names ORDER BY entry_pk, position"
            )
            federates_rows = await connection.fetch(
                "SELECT entry_pk, trust_domain FROM entry_federates_with "
                "ORDER BY entry_pk, position"
            )
        return await asyncio.to_thread(
            assemble_all_entries, rows, selector_rows, dns_rows, federates_rows
        )

    # -- attested nodes --------------------------------------------------------------------------

    async def _node_selectors(
        self, connection: asyncpg.Connection, decoder: Decoder, ids: Sequence[str]
    ) -> dict[str, tuple[Selector, ...]]:
        if not ids:
            return {}
        rows = await connection.fetch(
            "SELECT spiffe_id, type, value FROM node_selectors WHERE spiffe_id = ANY($1::text[]) "
            "ORDER BY spiffe_id, position",
            list(ids),
        )
        found: dict[str, list[Selector]] = {}
        for spiffe_id, kind, value in rows:
            found.setdefault(spiffe_id, []).append(decoder.selector(kind, value))
        return {key: tuple(value) for key, value in found.items()}

    async def _load_nodes(
        self,
        connection: asyncpg.Connection,
        where: str,
        params: Params,
        limit: int = 0,
    ) -> tuple[list[int], list[AttestedNode]]:
        sql = f"SELECT {NODE_COLUMNS} FROM attested_nodes AS n WHERE {where} ORDER BY n.pk"
        if limit:
            sql += f" LIMIT {params.bind(limit)}"
        rows = await connection.fetch(sql, *params.values)
        decoder = Decoder()
        selectors = await self._node_selectors(connection, decoder, [row[1] for row in rows])
        nodes = [node_from_row(decoder, row, selectors.get(row[1], ())) for row in rows]
        return [row[0] for row in rows], nodes

    async def _node(
        self, connection: asyncpg.Connection, spiffe_id: SpiffeId
    ) -> AttestedNode | None:
        _, nodes = await self._load_nodes(connection, "n.spiffe_id = $1", Params(str(spiffe_id)))
        return nodes[0] if nodes else None

    async def _replace_node_selectors(
        self, connection: asyncpg.Connection, spiffe_id: SpiffeId, selectors: tuple[Selector, ...]
    ) -> None:
        key = str(spiffe_id)
        unique = dedupe(selectors)
        await connection.execute("DELETE FROM node_selectors WHERE spiffe_id = $1", key)
        if unique:
            await connection.execute(
                "INSERT INTO node_selectors (spiffe_id, position, type, value) "
                "SELECT $1, u.ordinality - 1, u.type, u.value "
                "FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(type, value, ordinality)",
                key,
                [s.type for s in unique],
                [s.value for s in unique],
            )

    async def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        async with self._write() as transaction:
            connection = transaction.connection
            await self._lock(connection, "node", str(node.spiffe_id))
            created = await connection.fetchval(
                "INSERT INTO attested_nodes (spiffe_id, attestation_type, serial_number, "
                "expires_at, new_serial_number, new_expires_at, banned, can_reattest, "
                "agent_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                "ON CONFLICT (spiffe_id) DO NOTHING RETURNING pk",
                str(node.spiffe_id),
                *node_columns(node),
            )
            if created is None:
                raise AlreadyExistsError(f"attested node {node.spiffe_id} already exists")
            if node.selectors:
                await self._replace_node_selectors(connection, node.spiffe_id, node.selectors)
            transaction.event(ChangeKind.NODE, [str(node.spiffe_id)])
            stored = await self._node(connection, node.spiffe_id)
        assert stored is not None
        return stored

    async def get_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        async with self._read(snapshot=True) as connection:
            return await self._node(connection, spiffe_id)

    async def list_attested_nodes(
        self, node_filter: NodeFilter | None = None, page: Page | None = None
    ) -> AttestedNodePage:
        page = page or Page()
        params = Params(integer_page_token(page.token))
        where = node_where(params, node_filter)
        limit = page.size + 1 if page.size else 0
        async with self._read(snapshot=True, replica=True) as connection:
            pks, nodes = await self._load_nodes(connection, f"n.pk > $1 AND {where}", params, limit)
        if limit and len(nodes) == limit:
            return AttestedNodePage(tuple(nodes[:-1]), str(pks[-2]))
        return AttestedNodePage(tuple(nodes))

    async def count_attested_nodes(self, node_filter: NodeFilter | None = None) -> int:
        params = Params()
        where = node_where(params, node_filter)
        async with self._read(replica=True) as connection:
            count = await connection.fetchval(
                f"SELECT COUNT(*) FROM attested_nodes AS n WHERE {where}", *params.values
            )
        return int(count)

    async def update_attested_node(
        self, node: AttestedNode, mask: frozenset[str] | None = None
    ) -> AttestedNode:
        fields = check_mask(mask, NODE_MASK_FIELDS, "attested node")
        async with self._write() as transaction:
            connection = transaction.connection
            await self._lock(connection, "node", str(node.spiffe_id))
            current = await self._node(connection, node.spiffe_id)
            if current is None:
                raise NotFoundError(f"attested node {node.spiffe_id} not found")
            updated = replace(current, **{name: getattr(node, name) for name in fields})
            await connection.execute(
                "UPDATE attested_nodes SET attestation_type = $1, serial_number = $2, "
                "expires_at = $3, new_serial_number = $4, new_expires_at = $5, banned = $6, "
                "can_reattest = $7, agent_version = $8 WHERE spiffe_id = $9",
                *node_columns(updated),
                str(node.spiffe_id),
            )
            if "selectors" in fields:
                await self._replace_node_selectors(connection, node.spiffe_id, updated.selectors)
            transaction.event(ChangeKind.NODE, [str(node.spiffe_id)])
            stored = await self._node(connection, node.spiffe_id)
        assert stored is not None
        return stored

    async def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode:
        async with self._write() as transaction:
            connection = transaction.connection
            await self._lock(connection, "node", str(spiffe_id))
            current = await self._node(connection, spiffe_id)
            if current is None:
                raise NotFoundError(f"attested node {spiffe_id} not found")
            await connection.execute(
                "DELETE FROM attested_nodes WHERE spiffe_id = $1", str(spiffe_id)
            )
            await connection.execute(
                "DELETE FROM node_selectors WHERE spiffe_id = $1", str(spiffe_id)
            )
            transaction.event(ChangeKind.NODE, [str(spiffe_id)])
            return current

    async def set_node_selectors(
        self, spiffe_id: SpiffeId, selectors: tuple[Selector, ...]
    ) -> None:
        async with self._write() as transaction:
            await self._lock(transaction.connection, "node", str(spiffe_id))
            await self._replace_node_selectors(transaction.connection, spiffe_id, selectors)
            transaction.event(ChangeKind.NODE, [str(spiffe_id)])

    async def get_node_selectors(self, spiffe_id: SpiffeId) -> tuple[Selector, ...]:
        async with self._read() as connection:
            found = await self._node_selectors(connection, Decoder(), [str(spiffe_id)])
        return found.get(str(spiffe_id), ())

    async def list_all_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]:
        async with self._read() as connection:
            rows = await connection.fetch(
                "SELECT spiffe_id, type, value FROM node_selectors ORDER BY spiffe_id, position"
            )
        return await asyncio.to_thread(assemble_node_selectors, rows)

    # -- join tokens -----------------------------------------------------------------------------

    async def create_join_token(self, token: JoinToken) -> JoinToken:
        if not token.token:
            raise InvalidArgumentError("join token value is empty")
        async with self._write() as transaction:
            created = await transaction.connection.fetchval(
                "INSERT INTO join_tokens (token, expires_at) VALUES ($1, $2) "
                "ON CONFLICT (token) DO NOTHING RETURNING expires_at",
                token.token,
                token.expires_at,
            )
            if created is None:
                raise AlreadyExistsError("join token already exists")
        return JoinToken(token=token.token, expires_at=created)

    async def list_join_tokens(self) -> list[JoinToken]:
        async with self._read() as connection:
            rows = await connection.fetch(
                'SELECT token, expires_at FROM join_tokens ORDER BY token COLLATE "C"'
            )
        return [JoinToken(token=row[0], expires_at=row[1]) for row in rows]

    async def fetch_join_token(self, token: str) -> JoinToken | None:
        async with self._read() as connection:
            row = await connection.fetchrow(
                "SELECT token, expires_at FROM join_tokens WHERE token = $1", token
            )
        return None if row is None else JoinToken(token=row[0], expires_at=row[1])

    async def delete_join_token(self, token: str) -> None:
        async with self._write() as transaction:
            deleted = await transaction.connection.fetchval(
                "DELETE FROM join_tokens WHERE token = $1 RETURNING token", token
            )
            if deleted is None:
                raise NotFoundError("join token not found")

    async def consume_join_token(self, token: str) -> JoinToken:
        async with self._write() as transaction:
            row = await transaction.connection.fetchrow(
                "DELETE FROM join_tokens WHERE token = $1 RETURNING token, expires_at", token
            )
            if row is None:
                raise NotFoundError("join token not found or already used")
        return JoinToken(token=row[0], expires_at=row[1])

    async def prune_join_tokens(self, expires_before: datetime) -> int:
        async with self._write() as transaction:
            result = await transaction.connection.execute(
                "DELETE FROM join_tokens WHERE expires_at < $1", expires_before
            )
        return int(result.split()[-1])

    # -- bundles ---------------------------------------------------------------------------------

    async def _bundle(
        self, connection: asyncpg.Connection, trust_domain: TrustDomain
    ) -> Bundle | None:
        row = await connection.fetchrow(
            f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE trust_domain = $1", trust_domain.name
        )
        return None if row is None else bundle_from_json(*row)

    async def _bundle_changed(self, connection: asyncpg.Connection) -> None:
        """Notify, at commit, that a bundle changed: servers sharing the schema read their
        bundle again (to trust a CA another server just published) instead of at their next
        poll. Sent with the transaction, so a rollback sends nothing."""
        await connection.execute(
            "SELECT pg_notify($1, $2 || ':' || $3)", NOTIFY_CHANNEL, self._schema, BUNDLE_PAYLOAD
        )

    async def _store_bundle(self, connection: asyncpg.Connection, bundle: Bundle) -> Bundle:
        await self._bundle_changed(connection)
        row = await connection.fetchrow(
            f"INSERT INTO bundles ({_BUNDLE_COLUMNS}) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (trust_domain) DO UPDATE SET "
            "sequence_number = excluded.sequence_number, refresh_hint = excluded.refresh_hint, "
            f"data = excluded.data RETURNING {_BUNDLE_COLUMNS}",
            bundle.trust_domain.name,
            bundle.sequence_number,
            bundle.refresh_hint,
            bundle_to_json(bundle),
        )
        return bundle_from_json(*row)

    @asynccontextmanager
    async def _bundle_write(self, trust_domain: TrustDomain) -> AsyncIterator[_Transaction]:
        """A write transaction holding the lock of ``trust_domain``'s bundle, taken before
        anything is read, so read-modify-writes of one bundle never interleave."""
        async with self._write() as transaction:
            await self._lock(transaction.connection, "bundle", trust_domain.name)
            yield transaction

    async def _bundle_transaction(
        self, trust_domain: TrustDomain, work: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        async with self._bundle_write(trust_domain) as transaction:
            return await work(transaction.connection)

    async def get_bundle(self, trust_domain: TrustDomain) -> Bundle | None:
        async with self._read() as connection:
            return await self._bundle(connection, trust_domain)

    async def list_bundles(self, page: Page | None = None) -> BundlePage:
        page = page or Page()
        after = name_page_token(page.token)
        limit = page.size + 1 if page.size else None
        async with self._read(replica=True) as connection:
            rows = await connection.fetch(
                f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE trust_domain > $1 "
                'ORDER BY trust_domain COLLATE "C" LIMIT $2',
                after,
                limit,
            )
        bundles = [bundle_from_json(*row) for row in rows]
        if limit and len(bundles) == limit:
            return BundlePage(tuple(bundles[:-1]), bundles[-2].trust_domain.name)
        return BundlePage(tuple(bundles))

    async def count_bundles(self) -> int:
        async with self._read(replica=True) as connection:
            return int(await connection.fetchval("SELECT COUNT(*) FROM bundles"))

    async def delete_bundle(
        self, trust_domain: TrustDomain, mode: BundleDeleteMode = BundleDeleteMode.RESTRICT
    ) -> None:
        async with self._bundle_write(trust_domain) as transaction:
            connection = transaction.connection
            if await self._bundle(connection, trust_domain) is None:
                raise NotFoundError(f"bundle for trust domain {trust_domain} not found")
            rows = await connection.fetch(
                "SELECT e.pk, e.entry_id FROM entry_federates_with AS f "
                "JOIN entries AS e ON e.pk = f.entry_pk WHERE f.trust_domain = $1 "
                "ORDER BY e.pk FOR UPDATE OF e",
                trust_domain.name,
            )
            if rows and mode is BundleDeleteMode.RESTRICT:
                raise FailedPreconditionError(
                    f"bundle for trust domain {trust_domain} is federated with by {len(rows)} "
                    "registration entries: delete them or use mode DELETE or DISSOCIATE"
                )
            pks = [row[0] for row in rows]
            if rows and mode is BundleDeleteMode.DELETE:
                await self._delete_entry_rows(connection, pks)
            elif rows:
                await connection.execute(
                    "DELETE FROM entry_federates_with WHERE trust_domain = $1", trust_domain.name
                )
                await connection.execute(
                    "UPDATE entries SET revision_number = revision_number + 1 "
                    "WHERE pk = ANY($1::bigint[])",
                    pks,
                )
            transaction.event(ChangeKind.ENTRY, [row[1] for row in rows])
            try:
                async with transaction.savepoint():
                    await connection.execute(
                        "DELETE FROM bundles WHERE trust_domain = $1", trust_domain.name
                    )
                    await self._bundle_changed(connection)
            except asyncpg.ForeignKeyViolationError:
                raise FailedPreconditionError(
                    f"bundle for trust domain {trust_domain} gained federating registration "
                    "entries while it was being deleted; try again"
                ) from None

    # -- CA journal ------------------------------------------------------------------------------

    async def get_ca_journal(self, name: str) -> bytes | None:
        async with self._read() as connection:
            data = await connection.fetchval("SELECT data FROM ca_journals WHERE name = $1", name)
        return None if data is None else bytes(data)

    async def set_ca_journal(self, name: str, data: bytes) -> None:
        if not name:
            raise InvalidArgumentError("CA journal name is empty")
        async with self._write() as transaction:
            await transaction.connection.execute(
                "INSERT INTO ca_journals (name, data) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                name,
                bytes(data),
            )

    # -- federation relationships ----------------------------------------------------------------

    async def _relationship(
        self, connection: asyncpg.Connection, trust_domain: TrustDomain, *, lock: bool = False
    ) -> FederationRelationship | None:
        row = await connection.fetchrow(
            f"SELECT {_RELATIONSHIP_COLUMNS} FROM federation_relationships "
            f"WHERE trust_domain = $1{' FOR UPDATE' if lock else ''}",
            trust_domain.name,
        )
        return None if row is None else relationship_from_row(Decoder(), row)

    async def create_federation_relationship(
        self, relationship: FederationRelationship
    ) -> FederationRelationship:
        async with self._write() as transaction:
            created = await transaction.connection.fetchval(
                f"INSERT INTO federation_relationships ({_RELATIONSHIP_COLUMNS}) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (trust_domain) DO NOTHING RETURNING 1",
                *relationship_columns(relationship),
            )
            if created is None:
                raise AlreadyExistsError(
                    f"federation relationship with {relationship.trust_domain} already exists"
                )
        return relationship

    async def get_federation_relationship(
        self, trust_domain: TrustDomain
    ) -> FederationRelationship | None:
        async with self._read() as connection:
            return await self._relationship(connection, trust_domain)

    async def list_federation_relationships(
        self, page: Page | None = None
    ) -> FederationRelationshipPage:
        page = page or Page()
        after = name_page_token(page.token)
        limit = page.size + 1 if page.size else None
        async with self._read(replica=True) as connection:
            rows = await connection.fetch(
                f"SELECT {_RELATIONSHIP_COLUMNS} FROM federation_relationships "
                'WHERE trust_domain > $1 ORDER BY trust_domain COLLATE "C" LIMIT $2',
                after,
                limit,
            )
        decoder = Decoder()
        found = [relationship_from_row(decoder, row) for row in rows]
        if limit and len(found) == limit:
            return FederationRelationshipPage(tuple(found[:-1]), found[-2].trust_domain.name)
        return FederationRelationshipPage(tuple(found))

    async def update_federation_relationship(
        self, relationship: FederationRelationship, mask: frozenset[str] | None = None
    ) -> FederationRelationship:
        fields = check_mask(mask, FEDERATION_RELATIONSHIP_MASK_FIELDS, "federation relationship")
        async with self._write() as transaction:
            connection = transaction.connection
            current = await self._relationship(connection, relationship.trust_domain, lock=True)
            if current is None:
                raise NotFoundError(
                    f"federation relationship with {relationship.trust_domain} not found"
                )
            updated = replace(current, **{name: getattr(relationship, name) for name in fields})
            await connection.execute(
                "UPDATE federation_relationships SET bundle_endpoint_url = $1, profile = $2, "
                "endpoint_spiffe_id = $3 WHERE trust_domain = $4",
                *relationship_columns(updated)[1:],
                updated.trust_domain.name,
            )
            return updated

    async def delete_federation_relationship(self, trust_domain: TrustDomain) -> None:
        async with self._write() as transaction:
            deleted = await transaction.connection.fetchval(
                "DELETE FROM federation_relationships WHERE trust_domain = $1 RETURNING 1",
                trust_domain.name,
            )
            if deleted is None:
                raise NotFoundError(f"federation relationship with {trust_domain} not found")

    # -- change feed -----------------------------------------------------------------------------

    async def list_change_events(
        self, after_event_id: int = 0, limit: int = 0
    ) -> list[ChangeEvent]:
        if limit < 0:
            raise InvalidArgumentError(f"change event limit {limit} is negative")
        async with self._read() as connection:
            rows = await connection.fetch(
                "SELECT event_id, kind, object_id, created_at FROM change_events "
                "WHERE event_id > $1 ORDER BY event_id LIMIT $2",
                after_event_id,
                limit or None,
            )
        return [change_event_from_row(row) for row in rows]

    async def last_change_event_id(self) -> int:
        async with self._read() as connection:
            return int(await connection.fetchval("SELECT last_event_id FROM change_event_counter"))

    async def prune_change_events(self, before: datetime) -> int:
        async with self._write() as transaction:
            result = await transaction.connection.execute(
                "DELETE FROM change_events WHERE created_at < $1", before
            )
        return int(result.split()[-1])
