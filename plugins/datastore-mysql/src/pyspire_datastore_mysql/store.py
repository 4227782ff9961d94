# ruff: noqa: S608 - SQL text is assembled from constants only; every value is a bound parameter
"""The ``mysql`` datastore: :class:`~pyspire_sdk.plugins.datastore.DataStore` on MySQL or
MariaDB (InnoDB).

Several servers may share one database, so every guarantee of the contract holds across
processes, not only across the tasks of one:

- **One transaction per call**, at READ COMMITTED; a call that raises rolls back whole. Reads
  that need several queries run in one REPEATABLE READ read-only transaction started WITH
  CONSISTENT SNAPSHOT, so they see one snapshot. A transaction InnoDB picks as a deadlock's
  victim is rolled back whole by the server and run again (a few times at most).
- **Read-modify-write** takes a lock before it reads: the entry rows it changes
  (``SELECT ... FOR UPDATE``, in key order), and for objects that may not exist yet (a trust
  domain's bundle, a node's record and selectors) the row of ``object_locks`` their name
  hashes to. A join token is read ``FOR UPDATE`` and deleted in one transaction: of concurrent
  callers exactly one finds it.
- **The change feed never skips an event that commits late.** Event ids come from a one-row
  counter a transaction updates at its very end, right before ``COMMIT``: the row lock makes
  event-writing transactions commit in id order, so a reader that saw event *n* has seen every
  event below *n*, and an id is never lost to a rollback. Other servers learn of changes by
  polling that counter, and the bundles' write generation, every ``events_poll_interval``
  (:meth:`MysqlDataStore.watch_changes`).
"""

from __future__ import annotations

__all__ = ["MysqlDataStore"]

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import structlog
from asyncmy.errors import MySQLError

from pyspire_datastore_mysql.config import MysqlDataStoreConfig
from pyspire_datastore_mysql.connection import ConnectionTarget, TlsFiles
from pyspire_datastore_mysql.pool import ConnectionPool, PoolClosedError, server_error_code
from pyspire_datastore_mysql.queries import Params, placeholders
from pyspire_datastore_mysql.schema import LOCK_SLOTS, migrate
from pyspire_datastore_mysql.session import (
    DEADLOCK,
    Transaction,
    execute,
    executemany,
    fetch,
    open_connection,
)
from pyspire_datastore_mysql.watch import ChangeWatch, Counters
from pyspire_sdk.backoff import Backoff, BackoffPolicy
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
from pyspire_sdk.sql_datastore import BundleStore, EntryBatchStore
from pyspire_sdk.sql_filters import entry_where, node_where
from pyspire_sdk.stored_records import (
    ENTRY_ROW,
    KIND_DNS,
    KIND_FEDERATES,
    KIND_SELECTOR,
    NODE_ROW,
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
    from_micros,
    integer_page_token,
    name_page_token,
    node_columns,
    node_from_row,
    relationship_columns,
    relationship_from_row,
    to_micros,
)

T = TypeVar("T")

_ENTRY_COLUMNS = ", ".join(f"e.{column}" for column in ENTRY_ROW)
_NODE_COLUMNS = ", ".join(f"n.{column}" for column in NODE_ROW)
_ENTRY_INSERT = (
    "INSERT INTO entries (entry_id, spiffe_id, parent_id, selectors_hash, x509_svid_ttl, "
    "jwt_svid_ttl, admin, downstream, expires_at, revision_number, store_svid, hint, "
    "identity_hash, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_ENTRY_UPDATE = (
    "UPDATE entries SET spiffe_id = %s, parent_id = %s, selectors_hash = %s, "
    "x509_svid_ttl = %s, jwt_svid_ttl = %s, admin = %s, downstream = %s, expires_at = %s, "
    "revision_number = %s, store_svid = %s, hint = %s, identity_hash = %s WHERE pk = %s"
)
_NODE_SET = (
    "attestation_type = %s, serial_number = %s, expires_at = %s, new_serial_number = %s, "
    "new_expires_at = %s, banned = %s, can_reattest = %s, agent_version = %s"
)
_BUNDLE_COLUMNS = "trust_domain, sequence_number, refresh_hint, data"
_RELATIONSHIP_COLUMNS = ", ".join(RELATIONSHIP_ROW)
_NO_LIMIT = 2**63 - 1
_CHUNK = 2000
"""Keys per ``IN (...)`` list when reading the lists of many entries."""
_ATTEMPTS = 5
"""Runs of one call at most when InnoDB keeps picking it as a deadlock's victim."""
_DEADLOCK_RETRY = BackoffPolicy(initial=0.005, maximum=0.08)
"""Waits between those runs: the one backoff policy, short because a deadlock clears as soon
as the winner commits; the jitter keeps two victims of one deadlock from colliding again."""
_STATEMENT_TIMEOUTS = frozenset({1969, 3024})
"""MariaDB's ``max_statement_time`` and MySQL's ``max_execution_time`` exceeded."""
_INVALID = frozenset({1048, 1264, 1366, 1406, 1452, 3140})
"""Errors about a value: NULL, out of range, bad string, too long, missing parent row, bad
JSON."""
_DUPLICATE = 1062


def _identity_hash(key: EntryIdentity) -> bytes:
    """The digest the unique index on an entry's identity holds (the identity's columns are
    too long for one index)."""
    spiffe_id, parent_id, selectors = key
    return hashlib.sha256(b"\0".join((spiffe_id.encode(), parent_id.encode(), selectors))).digest()


def _entry_row(entry: RegistrationEntry) -> tuple[Any, ...]:
    """The columns of ``entry`` after its id, as :data:`_ENTRY_INSERT` names them."""
    return (*entry_columns(entry, to_micros), _identity_hash(entry_identity(entry)))


def _lock_slot(kind: str, name: str) -> int:
    digest = hashlib.sha256(f"{kind}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % LOCK_SLOTS


def _chunks(values: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _join_token(row: Sequence[Any]) -> JoinToken:
    return JoinToken(token=row[0], expires_at=from_micros(row[1]))


class MysqlDataStore(EntryBatchStore[Transaction], BundleStore):
    """The ``mysql`` datastore plugin. Configure once, use from one event loop, then close."""

    def __init__(self) -> None:
        self._clock: Clock = SystemClock()
        self._logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()
        self._pool: ConnectionPool | None = None
        self._replica: ConnectionPool | None = None
        self._target: ConnectionTarget | None = None
        self._database = ""
        self._poll_interval = 0.5

    # -- life cycle ------------------------------------------------------------------------------

    async def configure(self, config: MysqlDataStoreConfig, host: HostServices) -> None:
        """Connect, check or migrate the schema, and open the pools.

        Raises :class:`~pyspire_sdk.stored_records.SchemaTooNewError` for a schema written by a
        newer release and :class:`~pyspire_sdk.errors.PluginError` when the database cannot be
        reached or used; messages name the configuration key and never show a password.
        """
        if self._pool is not None:
            raise PluginError("mysql datastore is already configured")
        self._clock = host.clock
        self._logger = host.logger
        self._poll_interval = config.events_poll_interval.total_seconds()
        files = TlsFiles(config.root_ca_path, config.client_cert_path, config.client_key_path)
        target = ConnectionTarget.parse("connection_string", config.connection_string)
        replica = (
            None
            if config.ro_connection_string is None
            else ConnectionTarget.parse("ro_connection_string", config.ro_connection_string)
        )
        self._target = target
        self._database = target.database
        self._pool = self._new_pool(target, files, config, read_only=False)
        try:
            await self._open(target, self._pool)
            # A session of its own: migrations run without the statement timeout.
            connection = await open_connection(
                target, target.ssl_context(files), statement_timeout=0.0, read_only=False
            )
            try:
                found = await migrate(
                    connection,
                    target.database,
                    f"connection_string {target.shown}",
                    allowed=not config.disable_migration,
                )
            finally:
                connection.close()
            if replica is not None:
                self._replica = self._new_pool(replica, files, config, read_only=True)
                await self._open(replica, self._replica)
        except PluginError:
            await self.close()
            raise
        except (OSError, MySQLError) as error:
            await self.close()
            raise PluginError(
                f"connection_string {target.shown}: {target.scrub(str(error))}"
            ) from None
        self._logger.info(
            "datastore opened",
            database=target.shown,
            schema_version_found=found,
            replica=None if replica is None else replica.shown,
        )

    def _new_pool(
        self,
        target: ConnectionTarget,
        files: TlsFiles,
        config: MysqlDataStoreConfig,
        *,
        read_only: bool,
    ) -> ConnectionPool:
        connect = partial(
            open_connection,
            target,
            target.ssl_context(files),
            statement_timeout=config.statement_timeout.total_seconds(),
            read_only=read_only,
        )
        return ConnectionPool(
            connect,
            max_open=config.max_open_conns,
            max_idle=config.max_idle_conns,
            max_lifetime=config.conn_max_lifetime,
            now=self._clock.now,
        )

    @staticmethod
    async def _open(target: ConnectionTarget, pool: ConnectionPool) -> None:
        try:
            await pool.open()
        except (OSError, MySQLError, TimeoutError) as error:
            raise PluginError(
                f"{target.key} {target.shown}: cannot connect: {target.scrub(str(error))}"
            ) from None

    async def close(self) -> None:
        """Close both pools; connections in use close when released. Safe to call again."""
        pools = [pool for pool in (self._pool, self._replica) if pool is not None]
        self._pool = self._replica = None
        for pool in pools:
            await pool.close()

    @property
    def database(self) -> str:
        """The database holding this datastore's tables."""
        return self._database

    # -- connections and transactions ------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self, *, replica: bool = False) -> AsyncIterator[Any]:
        """A pooled connection (the replica's when asked and configured)."""
        pool = self._replica if replica and self._replica is not None else self._pool
        if pool is None:
            raise UnavailableError("mysql datastore is not configured or already closed")
        try:
            async with pool.acquire() as connection:
                yield connection
        except PoolClosedError:
            raise UnavailableError("mysql datastore is closed") from None

    def _unavailable(self, error: BaseException) -> UnavailableError:
        target = self._target
        text = str(error) if target is None else target.scrub(str(error))
        self._logger.warning("datastore query failed", error=text, error_type=type(error).__name__)
        if server_error_code(error) in _STATEMENT_TIMEOUTS:
            text = f"statement timeout: {text}"
        return UnavailableError(f"mysql datastore: {text}")

    def _translate(self, error: BaseException) -> BaseException:
        code = server_error_code(error)
        if code == _DUPLICATE:
            # The server's message quotes the key, which may be a secret (a join token).
            return AlreadyExistsError("mysql datastore: a record with the same key already exists")
        if code in _INVALID:
            return InvalidArgumentError(f"mysql datastore: {error.args[1]}")
        if isinstance(error, MySQLError | OSError | TimeoutError):
            return self._unavailable(error)
        return error

    async def _transact(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``work`` in one write transaction, its change events appended last, right before
        commit; again from the start, after a backoff delay, when InnoDB rolled it back as a
        deadlock's victim."""
        backoff = Backoff(_DEADLOCK_RETRY)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._connection() as connection:
                    await connection.begin()
                    try:
                        transaction = Transaction(connection)
                        result = await work(transaction)
                        if transaction.events:
                            await self._append_events(connection, transaction.events)
                        await connection.commit()
                    except Exception as error:
                        if server_error_code(error) is not None or not isinstance(
                            error, MySQLError | OSError
                        ):
                            await connection.rollback()
                        raise
                    return result
            except (MySQLError, OSError, TimeoutError) as error:
                if server_error_code(error) == DEADLOCK and attempt < _ATTEMPTS:
                    delay = backoff.failed()
                    self._logger.info(
                        "deadlock victim, running the transaction again", retry_in=round(delay, 3)
                    )
                    await self._clock.sleep(delay)
                    continue
                translated = self._translate(error)
                if translated is error:
                    raise
                raise translated from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _in_write_transaction(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        return await self._transact(work)

    async def _append_events(self, connection: Any, events: Sequence[tuple[str, str]]) -> None:
        """Append a transaction's change events; the last statements before commit.

        Taking the next ids locks the counter row until the transaction ends, so the
        transactions that append events commit in the order of their ids.
        """
        async with connection.cursor() as cursor:
            await cursor.execute(
                "UPDATE change_event_counter SET last_event_id = "
                "LAST_INSERT_ID(last_event_id + %s) WHERE only_row = 1",
                (len(events),),
            )
            last = int(cursor.lastrowid)
        now = to_micros(self._clock.now())
        first = last - len(events) + 1
        await executemany(
            connection,
            "INSERT INTO change_events (event_id, kind, object_id, created_at) "
            "VALUES (%s, %s, %s, %s)",
            [(first + i, kind, object_id, now) for i, (kind, object_id) in enumerate(events)],
        )

    @asynccontextmanager
    async def _read(self, *, snapshot: bool = False, replica: bool = False) -> AsyncIterator[Any]:
        """A connection for reading; with ``snapshot`` its queries share one snapshot."""
        try:
            async with self._connection(replica=replica) as connection:
                if not snapshot:
                    yield connection
                    return
                await execute(connection, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                await execute(connection, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                try:
                    yield connection
                except Exception as error:
                    # A cancelled or broken connection is closed by the pool, which ends the
                    # transaction on the server; only a healthy one is rolled back here.
                    if server_error_code(error) is not None or not isinstance(
                        error, MySQLError | OSError
                    ):
                        await connection.rollback()
                    raise
                await connection.commit()
        except (MySQLError, OSError, TimeoutError) as error:
            translated = self._translate(error)
            if translated is error:
                raise
            raise translated from None

    async def _lock(self, connection: Any, kind: str, name: str) -> None:
        """Hold the lock of one object (the row of its slot) until the transaction ends."""
        await fetch(
            connection,
            "SELECT slot FROM object_locks WHERE slot = %s FOR UPDATE",
            (_lock_slot(kind, name),),
        )

    async def watch_changes(self, listener: ChangeListener) -> None:
        """Tell ``listener`` of changes written by any server sharing this database
        (:class:`~pyspire_sdk.plugins.datastore.WatchableDataStore`), by reading the change
        event counter and the bundles' write generation every ``events_poll_interval``
        (:mod:`pyspire_datastore_mysql.watch`)."""
        if self._pool is None:
            raise UnavailableError("mysql datastore is not configured or already closed")
        watch = ChangeWatch(self._counters, self._clock, self._logger, self._poll_interval)
        await watch.run(listener)

    async def _counters(self) -> Counters:
        async with self._read() as connection:
            rows = await fetch(
                connection,
                "SELECT c.last_event_id, b.generation FROM change_event_counter AS c "
                "JOIN bundle_changes AS b ON b.only_row = c.only_row WHERE c.only_row = 1",
            )
        return int(rows[0][0]), int(rows[0][1])

    async def _bundle_changed(self, connection: Any) -> None:
        """Raise the bundles' write generation with the transaction, so servers polling it read
        their bundle again (to trust a CA another server just published); a rollback raises
        nothing."""
        await execute(
            connection, "UPDATE bundle_changes SET generation = generation + 1 WHERE only_row = 1"
        )

    # -- registration entries --------------------------------------------------------------------

    async def _entry_children(self, connection: Any, pks: Sequence[int]) -> list[tuple[Any, ...]]:
        """The list rows of the entries ``pks`` as :func:`assemble_entries` reads them: one
        query per table, each in its primary key's order (entry, position), so none sorts."""
        children: list[tuple[Any, ...]] = []
        for chunk in _chunks(pks):
            marks = placeholders(len(chunk))
            for sql in (
                f"SELECT entry_pk, {KIND_SELECTOR}, position, type, value FROM entry_selectors",
                f"SELECT entry_pk, {KIND_DNS}, position, name, NULL FROM entry_dns_names",
                f"SELECT entry_pk, {KIND_FEDERATES}, position, trust_domain, NULL "
                "FROM entry_federates_with",
            ):
                children += await fetch(
                    connection,
                    f"{sql} WHERE entry_pk IN ({marks}) ORDER BY entry_pk, position",
                    chunk,
                )
        return children

    async def _load_entries(
        self,
        connection: Any,
        where: str,
        params: list[Any],
        limit: int = 0,
        *,
        lock: bool = False,
    ) -> tuple[list[int], list[RegistrationEntry]]:
        sql = f"SELECT {_ENTRY_COLUMNS} FROM entries AS e WHERE {where} ORDER BY e.pk"
        if limit:
            sql += " LIMIT %s"
            params = [*params, limit]
        if lock:
            sql += " FOR UPDATE"
        rows = await fetch(connection, sql, params)
        pks = [row[0] for row in rows]
        children = await self._entry_children(connection, pks) if pks else []
        return pks, assemble_entries(rows, children, from_micros)

    async def _entries_by_id(
        self, connection: Any, entry_ids: Sequence[str], *, lock: bool = False
    ) -> dict[str, tuple[int, RegistrationEntry]]:
        if not entry_ids:
            return {}
        pks, entries = await self._load_entries(
            connection,
            f"e.entry_id IN ({placeholders(len(entry_ids))})",
            list(entry_ids),
            lock=lock,
        )
        return {entry.id: (pk, entry) for pk, entry in zip(pks, entries, strict=True)}

    async def _entries_by_identity(
        self, connection: Any, identities: Iterable[EntryIdentity]
    ) -> dict[EntryIdentity, tuple[int, RegistrationEntry]]:
        wanted = list(dict.fromkeys(identities))
        if not wanted:
            return {}
        pks, entries = await self._load_entries(
            connection,
            f"e.identity_hash IN ({placeholders(len(wanted))})",
            [_identity_hash(key) for key in wanted],
        )
        return {entry_identity(entry): (pk, entry) for pk, entry in zip(pks, entries, strict=True)}

    async def _bundled(self, connection: Any, names: Iterable[str]) -> set[str]:
        wanted = sorted(set(names))
        if not wanted:
            return set()
        rows = await fetch(
            connection,
            f"SELECT trust_domain FROM bundles WHERE trust_domain IN ({placeholders(len(wanted))})",
            wanted,
        )
        return {row[0] for row in rows}

    async def _insert_entries(
        self, transaction: Transaction, entries: Sequence[RegistrationEntry]
    ) -> bool:
        """Write new entries (ids, times and revisions as given) with their lists and events;
        ``False``, having written nothing that counts, when a concurrent writer took one of
        their ids or identities first (the caller rolls its savepoint back)."""
        if not entries:
            return True
        connection = transaction.connection
        try:
            await executemany(
                connection,
                _ENTRY_INSERT,
                [
                    (entry.id, *_entry_row(entry), to_micros(entry.created_at or self._now()))
                    for entry in entries
                ],
            )
        except MySQLError as error:
            if server_error_code(error) == _DUPLICATE:
                return False
            raise
        pks: dict[str, int] = {}
        for chunk in _chunks([entry.id for entry in entries]):
            rows = await fetch(
                connection,
                f"SELECT entry_id, pk FROM entries WHERE entry_id IN ({placeholders(len(chunk))})",
                chunk,
            )
            pks.update((row[0], row[1]) for row in rows)
        await self._write_lists(
            connection,
            [(pks[entry.id], entry) for entry in entries],
            frozenset({"selectors", "dns_names", "federates_with"}),
            replace_existing=False,
        )
        transaction.event(ChangeKind.ENTRY, [entry.id for entry in entries])
        return True

    def _now(self) -> datetime:
        return self._clock.now()

    async def _write_lists(
        self,
        connection: Any,
        entries: Sequence[tuple[int, RegistrationEntry]],
        fields: frozenset[str],
        *,
        replace_existing: bool = True,
    ) -> None:
        """Write the list rows named in ``fields`` of many entries, one statement per table."""
        pks = [pk for pk, _ in entries]
        tables = (
            ("selectors", "entry_selectors", "(entry_pk, position, type, value)", 4),
            ("dns_names", "entry_dns_names", "(entry_pk, position, name)", 3),
            ("federates_with", "entry_federates_with", "(entry_pk, position, trust_domain)", 3),
        )
        for field_name, table, columns, width in tables:
            if field_name not in fields:
                continue
            if replace_existing:
                for chunk in _chunks(pks):
                    await execute(
                        connection,
                        f"DELETE FROM {table} WHERE entry_pk IN ({placeholders(len(chunk))})",
                        chunk,
                    )
            rows: list[tuple[Any, ...]] = []
            for pk, entry in entries:
                if field_name == "selectors":
                    rows += [(pk, i, s.type, s.value) for i, s in enumerate(entry.selectors)]
                elif field_name == "dns_names":
                    rows += [(pk, i, name) for i, name in enumerate(entry.dns_names)]
                else:
                    rows += [(pk, i, td.name) for i, td in enumerate(entry.federates_with)]
            await executemany(
                connection,
                f"INSERT INTO {table} {columns} VALUES ({placeholders(width)})",
                rows,
            )

    async def _taken_entry_ids(self, connection: Any, entry_ids: Sequence[str]) -> set[str]:
        taken: set[str] = set()
        for chunk in _chunks(entry_ids):
            rows = await fetch(
                connection,
                f"SELECT entry_id FROM entries WHERE entry_id IN ({placeholders(len(chunk))})",
                chunk,
            )
            taken.update(row[0] for row in rows)
        return taken

    async def _update_entry_rows(
        self, connection: Any, changed: Mapping[int, RegistrationEntry], fields: frozenset[str]
    ) -> None:
        await executemany(
            connection, _ENTRY_UPDATE, [(*_entry_row(entry), pk) for pk, entry in changed.items()]
        )
        await self._write_lists(connection, list(changed.items()), fields)

    async def _delete_entry_rows(self, connection: Any, pks: Sequence[int]) -> None:
        for chunk in _chunks(pks):
            await execute(
                connection, f"DELETE FROM entries WHERE pk IN ({placeholders(len(chunk))})", chunk
            )

    async def _delete_entries_by_id(self, connection: Any, entry_ids: Sequence[str]) -> None:
        for chunk in _chunks(entry_ids):
            await execute(
                connection,
                f"DELETE FROM entries WHERE entry_id IN ({placeholders(len(chunk))})",
                chunk,
            )

    def _is_unique_violation(self, error: BaseException) -> bool:
        return server_error_code(error) == _DUPLICATE

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
                connection, f"e.pk > %s AND {where}", params.values, limit
            )
        if limit and len(entries) == limit:
            return EntryPage(tuple(entries[:-1]), str(pks[-2]))
        return EntryPage(tuple(entries))

    async def count_entries(self, entry_filter: EntryFilter | None = None) -> int:
        params = Params()
        where = entry_where(params, entry_filter)
        async with self._read(replica=True) as connection:
            rows = await fetch(
                connection, f"SELECT COUNT(*) FROM entries AS e WHERE {where}", params.values
            )
        return int(rows[0][0])

    async def prune_registration_entries(self, expires_before: datetime) -> int:
        async def work(transaction: Transaction) -> list[tuple[Any, ...]]:
            rows = await fetch(
                transaction.connection,
                "SELECT pk, entry_id FROM entries WHERE expires_at < %s ORDER BY pk FOR UPDATE",
                (to_micros(expires_before),),
            )
            await self._delete_entry_rows(transaction.connection, [row[0] for row in rows])
            transaction.event(ChangeKind.ENTRY, [row[1] for row in rows])
            return rows

        rows = await self._transact(work)
        if rows:
            self._logger.info("pruned registration entries", count=len(rows))
        return len(rows)

    async def list_all_entries(self) -> list[RegistrationEntry]:
        async with self._read(snapshot=True) as connection:
            rows = await fetch(
                connection, f"SELECT {_ENTRY_COLUMNS} FROM entries AS e ORDER BY e.pk"
            )
            selector_rows = await fetch(
                connection,
                "SELECT entry_pk, type, value FROM entry_selectors ORDER BY entry_pk, position",
            )
            dns_rows = await fetch(
                connection, "SELECT entry_pk, name FROM entry_dns_names ORDER BY entry_pk, position"
            )
            federates_rows = await fetch(
                connection,
                "SELECT entry_pk, trust_domain FROM entry_federates_with "
                "ORDER BY entry_pk, position",
            )
        return await asyncio.to_thread(
            assemble_all_entries, rows, selector_rows, dns_rows, federates_rows, from_micros
        )

    # -- attested nodes --------------------------------------------------------------------------

    async def _node_selectors(
        self, connection: Any, decoder: Decoder, ids: Sequence[str]
    ) -> dict[str, tuple[Selector, ...]]:
        found: dict[str, list[Selector]] = {}
        for chunk in _chunks(ids):
            rows = await fetch(
                connection,
                "SELECT spiffe_id, type, value FROM node_selectors "
                f"WHERE spiffe_id IN ({placeholders(len(chunk))}) ORDER BY spiffe_id, position",
                chunk,
            )
            for spiffe_id, kind, value in rows:
                found.setdefault(spiffe_id, []).append(decoder.selector(kind, value))
        return {key: tuple(value) for key, value in found.items()}

    async def _load_nodes(
        self, connection: Any, where: str, params: list[Any], limit: int = 0
    ) -> tuple[list[int], list[AttestedNode]]:
        sql = f"SELECT {_NODE_COLUMNS} FROM attested_nodes AS n WHERE {where} ORDER BY n.pk"
        if limit:
            sql += " LIMIT %s"
            params = [*params, limit]
        rows = await fetch(connection, sql, params)
        decoder = Decoder()
        selectors = await self._node_selectors(connection, decoder, [row[1] for row in rows])
        nodes = [
            node_from_row(decoder, row, selectors.get(row[1], ()), from_micros) for row in rows
        ]
        return [row[0] for row in rows], nodes

    async def _node(self, connection: Any, spiffe_id: SpiffeId) -> AttestedNode | None:
        _, nodes = await self._load_nodes(connection, "n.spiffe_id = %s", [str(spiffe_id)])
        return nodes[0] if nodes else None

    async def _replace_node_selectors(
        self, connection: Any, spiffe_id: SpiffeId, selectors: tuple[Selector, ...]
    ) -> None:
        key = str(spiffe_id)
        await execute(connection, "DELETE FROM node_selectors WHERE spiffe_id = %s", (key,))
        await executemany(
            connection,
            "INSERT INTO node_selectors (spiffe_id, position, type, value) VALUES (%s, %s, %s, %s)",
            [(key, i, s.type, s.value) for i, s in enumerate(dedupe(selectors))],
        )

    async def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        async def work(transaction: Transaction) -> AttestedNode | None:
            connection = transaction.connection
            await self._lock(connection, "node", str(node.spiffe_id))
            exists = await fetch(
                connection,
                "SELECT 1 FROM attested_nodes WHERE spiffe_id = %s",
                (str(node.spiffe_id),),
            )
            if exists:
                raise AlreadyExistsError(f"attested node {node.spiffe_id} already exists")
            await execute(
                connection,
                "INSERT INTO attested_nodes (spiffe_id, attestation_type, serial_number, "
                "expires_at, new_serial_number, new_expires_at, banned, can_reattest, "
                "agent_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (str(node.spiffe_id), *node_columns(node, to_micros)),
            )
            if node.selectors:
                await self._replace_node_selectors(connection, node.spiffe_id, node.selectors)
            transaction.event(ChangeKind.NODE, [str(node.spiffe_id)])
            return await self._node(connection, node.spiffe_id)

        stored = await self._transact(work)
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
            pks, nodes = await self._load_nodes(
                connection, f"n.pk > %s AND {where}", params.values, limit
            )
        if limit and len(nodes) == limit:
            return AttestedNodePage(tuple(nodes[:-1]), str(pks[-2]))
        return AttestedNodePage(tuple(nodes))

    async def count_attested_nodes(self, node_filter: NodeFilter | None = None) -> int:
        params = Params()
        where = node_where(params, node_filter)
        async with self._read(replica=True) as connection:
            rows = await fetch(
                connection,
                f"SELECT COUNT(*) FROM attested_nodes AS n WHERE {where}",
                params.values,
            )
        return int(rows[0][0])

    async def update_attested_node(
        self, node: AttestedNode, mask: frozenset[str] | None = None
    ) -> AttestedNode:
        fields = check_mask(mask, NODE_MASK_FIELDS, "attested node")

        async def work(transaction: Transaction) -> AttestedNode | None:
            connection = transaction.connection
            await self._lock(connection, "node", str(node.spiffe_id))
            current = await self._node(connection, node.spiffe_id)
            if current is None:
                raise NotFoundError(f"attested node {node.spiffe_id} not found")
            updated = replace(current, **{name: getattr(node, name) for name in fields})
            await execute(
                connection,
                f"UPDATE attested_nodes SET {_NODE_SET} WHERE spiffe_id = %s",
                (*node_columns(updated, to_micros), str(node.spiffe_id)),
            )
            if "selectors" in fields:
                await self._replace_node_selectors(connection, node.spiffe_id, updated.selectors)
            transaction.event(ChangeKind.NODE, [str(node.spiffe_id)])
            return await self._node(connection, node.spiffe_id)

        stored = await self._transact(work)
        assert stored is not None
        return stored

    async def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode:
        async def work(transaction: Transaction) -> AttestedNode:
            connection = transaction.connection
            await self._lock(connection, "node", str(spiffe_id))
            current = await self._node(connection, spiffe_id)
            if current is None:
                raise NotFoundError(f"attested node {spiffe_id} not found")
            key = (str(spiffe_id),)
            await execute(connection, "DELETE FROM attested_nodes WHERE spiffe_id = %s", key)
            await execute(connection, "DELETE FROM node_selectors WHERE spiffe_id = %s", key)
            transaction.event(ChangeKind.NODE, [str(spiffe_id)])
            return current

        return await self._transact(work)

    async def set_node_selectors(
        self, spiffe_id: SpiffeId, selectors: tuple[Selector, ...]
    ) -> None:
        async def work(transaction: Transaction) -> None:
            await self._lock(transaction.connection, "node", str(spiffe_id))
            await self._replace_node_selectors(transaction.connection, spiffe_id, selectors)
            transaction.event(ChangeKind.NODE, [str(spiffe_id)])

        await self._transact(work)

    async def get_node_selectors(self, spiffe_id: SpiffeId) -> tuple[Selector, ...]:
        async with self._read() as connection:
            found = await self._node_selectors(connection, Decoder(), [str(spiffe_id)])
        return found.get(str(spiffe_id), ())

    async def list_all_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]:
        async with self._read() as connection:
            rows = await fetch(
                connection,
                "SELECT spiffe_id, type, value FROM node_selectors ORDER BY spiffe_id, position",
            )
        return await asyncio.to_thread(assemble_node_selectors, rows)

    # -- join tokens -----------------------------------------------------------------------------

    async def create_join_token(self, token: JoinToken) -> JoinToken:
        if not token.token:
            raise InvalidArgumentError("join token value is empty")

        async def work(transaction: Transaction) -> None:
            connection = transaction.connection
            if await fetch(
                connection, "SELECT 1 FROM join_tokens WHERE token = %s FOR UPDATE", (token.token,)
            ):
                raise AlreadyExistsError("join token already exists")
            await execute(
                connection,
                "INSERT INTO join_tokens (token, expires_at) VALUES (%s, %s)",
                (token.token, to_micros(token.expires_at)),
            )

        await self._transact(work)
        return JoinToken(token=token.token, expires_at=from_micros(to_micros(token.expires_at)))

    async def list_join_tokens(self) -> list[JoinToken]:
        async with self._read() as connection:
            rows = await fetch(
                connection, "SELECT token, expires_at FROM join_tokens ORDER BY token"
            )
        return [_join_token(row) for row in rows]

    async def fetch_join_token(self, token: str) -> JoinToken | None:
        async with self._read() as connection:
            rows = await fetch(
                connection, "SELECT token, expires_at FROM join_tokens WHERE token = %s", (token,)
            )
        return _join_token(rows[0]) if rows else None

    async def delete_join_token(self, token: str) -> None:
        async def work(transaction: Transaction) -> None:
            deleted = await execute(
                transaction.connection, "DELETE FROM join_tokens WHERE token = %s", (token,)
            )
            if not deleted:
                raise NotFoundError("join token not found")

        await self._transact(work)

    async def consume_join_token(self, token: str) -> JoinToken:
        async def work(transaction: Transaction) -> JoinToken:
            connection = transaction.connection
            rows = await fetch(
                connection,
                "SELECT token, expires_at FROM join_tokens WHERE token = %s FOR UPDATE",
                (token,),
            )
            if not rows:
                raise NotFoundError("join token not found or already used")
            await execute(connection, "DELETE FROM join_tokens WHERE token = %s", (token,))
            return _join_token(rows[0])

        return await self._transact(work)

    async def prune_join_tokens(self, expires_before: datetime) -> int:
        async def work(transaction: Transaction) -> int:
            return await execute(
                transaction.connection,
                "DELETE FROM join_tokens WHERE expires_at < %s",
                (to_micros(expires_before),),
            )

        return await self._transact(work)

    # -- bundles ---------------------------------------------------------------------------------

    async def _bundle(self, connection: Any, trust_domain: TrustDomain) -> Bundle | None:
        rows = await fetch(
            connection,
            f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE trust_domain = %s",
            (trust_domain.name,),
        )
        return bundle_from_json(*rows[0]) if rows else None

    async def _store_bundle(self, connection: Any, bundle: Bundle) -> Bundle:
        data = bundle_to_json(bundle)
        await self._bundle_changed(connection)
        await execute(
            connection,
            f"INSERT INTO bundles ({_BUNDLE_COLUMNS}) VALUES (%s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE sequence_number = VALUES(sequence_number), "
            "refresh_hint = VALUES(refresh_hint), data = VALUES(data)",
            (bundle.trust_domain.name, bundle.sequence_number, bundle.refresh_hint, data),
        )
        return bundle_from_json(
            bundle.trust_domain.name, bundle.sequence_number, bundle.refresh_hint, data
        )

    async def _bundle_write(
        self, trust_domain: TrustDomain, work: Callable[[Any], Awaitable[T]]
    ) -> T:
        """``work`` in a write transaction holding the lock of ``trust_domain``'s bundle, taken
        before anything is read, so read-modify-writes of one bundle never interleave."""

        async def locked(transaction: Transaction) -> T:
            await self._lock(transaction.connection, "bundle", trust_domain.name)
            return await work(transaction)

        return await self._transact(locked)

    async def _bundle_transaction(
        self, trust_domain: TrustDomain, work: Callable[[Any], Awaitable[T]]
    ) -> T:
        async def on_connection(transaction: Transaction) -> T:
            return await work(transaction.connection)

        return await self._bundle_write(trust_domain, on_connection)

    async def get_bundle(self, trust_domain: TrustDomain) -> Bundle | None:
        async with self._read() as connection:
            return await self._bundle(connection, trust_domain)

    async def list_bundles(self, page: Page | None = None) -> BundlePage:
        page = page or Page()
        after = name_page_token(page.token)
        limit = page.size + 1 if page.size else _NO_LIMIT
        async with self._read(replica=True) as connection:
            rows = await fetch(
                connection,
                f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE trust_domain > %s "
                "ORDER BY trust_domain LIMIT %s",
                (after, limit),
            )
        bundles = [bundle_from_json(*row) for row in rows]
        if page.size and len(bundles) == limit:
            return BundlePage(tuple(bundles[:-1]), bundles[-2].trust_domain.name)
        return BundlePage(tuple(bundles))

    async def count_bundles(self) -> int:
        async with self._read(replica=True) as connection:
            rows = await fetch(connection, "SELECT COUNT(*) FROM bundles")
        return int(rows[0][0])

    async def delete_bundle(
        self, trust_domain: TrustDomain, mode: BundleDeleteMode = BundleDeleteMode.RESTRICT
    ) -> None:
        async def work(transaction: Transaction) -> None:
            connection = transaction.connection
            if await self._bundle(connection, trust_domain) is None:
                raise NotFoundError(f"bundle for trust domain {trust_domain} not found")
            rows = await fetch(
                connection,
                "SELECT e.pk, e.entry_id FROM entry_federates_with AS f "
                "JOIN entries AS e ON e.pk = f.entry_pk WHERE f.trust_domain = %s "
                "ORDER BY e.pk FOR UPDATE",
                (trust_domain.name,),
            )
            if rows and mode is BundleDeleteMode.RESTRICT:
                raise FailedPreconditionError(
                    f"bundle for trust domain {trust_domain} is federated with by {len(rows)} "
                    "registration entries: delete them or use mode DELETE or DISSOCIATE"
                )
            pks = [row[0] for row in rows]
            if mode is BundleDeleteMode.DELETE:
                await self._delete_entry_rows(connection, pks)
            else:
                for chunk in _chunks(pks):
                    await execute(
                        connection,
                        "UPDATE entries SET revision_number = revision_number + 1 "
                        f"WHERE pk IN ({placeholders(len(chunk))})",
                        chunk,
                    )
            if rows and mode is not BundleDeleteMode.DELETE:
                await execute(
                    connection,
                    "DELETE FROM entry_federates_with WHERE trust_domain = %s",
                    (trust_domain.name,),
                )
            transaction.event(ChangeKind.ENTRY, [row[1] for row in rows])
            try:
                async with transaction.savepoint():
                    await execute(
                        connection,
                        "DELETE FROM bundles WHERE trust_domain = %s",
                        (trust_domain.name,),
                    )
                    await self._bundle_changed(connection)
            except MySQLError as error:
                if server_error_code(error) not in (1451, 1217):
                    raise
                raise FailedPreconditionError(
                    f"bundle for trust domain {trust_domain} gained federating registration "
                    "entries while it was being deleted; try again"
                ) from None

        await self._bundle_write(trust_domain, work)

    # -- CA journal ------------------------------------------------------------------------------

    async def get_ca_journal(self, name: str) -> bytes | None:
        async with self._read() as connection:
            rows = await fetch(connection, "SELECT data FROM ca_journals WHERE name = %s", (name,))
        return bytes(rows[0][0]) if rows else None

    async def set_ca_journal(self, name: str, data: bytes) -> None:
        if not name:
            raise InvalidArgumentError("CA journal name is empty")

        async def work(transaction: Transaction) -> None:
            await execute(
                transaction.connection,
                "INSERT INTO ca_journals (name, data) VALUES (%s, %s) "
                "ON DUPLICATE KEY UPDATE data = VALUES(data)",
                (name, bytes(data)),
            )

        await self._transact(work)

    # -- federation relationships ----------------------------------------------------------------

    async def _relationship(
        self, connection: Any, trust_domain: TrustDomain, *, lock: bool = False
    ) -> FederationRelationship | None:
        rows = await fetch(
            connection,
            f"SELECT {_RELATIONSHIP_COLUMNS} FROM federation_relationships "
            f"WHERE trust_domain = %s{' FOR UPDATE' if lock else ''}",
            (trust_domain.name,),
        )
        return relationship_from_row(Decoder(), rows[0]) if rows else None

    async def create_federation_relationship(
        self, relationship: FederationRelationship
    ) -> FederationRelationship:
        async def work(transaction: Transaction) -> None:
            connection = transaction.connection
            await self._lock(connection, "relationship", relationship.trust_domain.name)
            if await self._relationship(connection, relationship.trust_domain) is not None:
                raise AlreadyExistsError(
                    f"federation relationship with {relationship.trust_domain} already exists"
                )
            await execute(
                connection,
                f"INSERT INTO federation_relationships ({_RELATIONSHIP_COLUMNS}) "
                "VALUES (%s, %s, %s, %s)",
                relationship_columns(relationship),
            )

        await self._transact(work)
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
        limit = page.size + 1 if page.size else _NO_LIMIT
        async with self._read(replica=True) as connection:
            rows = await fetch(
                connection,
                f"SELECT {_RELATIONSHIP_COLUMNS} FROM federation_relationships "
                "WHERE trust_domain > %s ORDER BY trust_domain LIMIT %s",
                (after, limit),
            )
        decoder = Decoder()
        found = [relationship_from_row(decoder, row) for row in rows]
        if page.size and len(found) == limit:
            return FederationRelationshipPage(tuple(found[:-1]), found[-2].trust_domain.name)
        return FederationRelationshipPage(tuple(found))

    async def update_federation_relationship(
        self, relationship: FederationRelationship, mask: frozenset[str] | None = None
    ) -> FederationRelationship:
        fields = check_mask(mask, FEDERATION_RELATIONSHIP_MASK_FIELDS, "federation relationship")

        async def work(transaction: Transaction) -> FederationRelationship:
            connection = transaction.connection
            current = await self._relationship(connection, relationship.trust_domain, lock=True)
            if current is None:
                raise NotFoundError(
                    f"federation relationship with {relationship.trust_domain} not found"
                )
            updated = replace(current, **{name: getattr(relationship, name) for name in fields})
            await execute(
                connection,
                "UPDATE federation_relationships SET bundle_endpoint_url = %s, profile = %s, "
                "endpoint_spiffe_id = %s WHERE trust_domain = %s",
                (*relationship_columns(updated)[1:], updated.trust_domain.name),
            )
            return updated

        return await self._transact(work)

    async def delete_federation_relationship(self, trust_domain: TrustDomain) -> None:
        async def work(transaction: Transaction) -> None:
            deleted = await execute(
                transaction.connection,
                "DELETE FROM federation_relationships WHERE trust_domain = %s",
                (trust_domain.name,),
            )
            if not deleted:
                raise NotFoundError(f"federation relationship with {trust_domain} not found")

        await self._transact(work)

    # -- change feed -----------------------------------------------------------------------------

    async def list_change_events(
        self, after_event_id: int = 0, limit: int = 0
    ) -> list[ChangeEvent]:
        if limit < 0:
            raise InvalidArgumentError(f"change event limit {limit} is negative")
        async with self._read() as connection:
            rows = await fetch(
                connection,
                "SELECT event_id, kind, object_id, created_at FROM change_events "
                "WHERE event_id > %s ORDER BY event_id LIMIT %s",
                (after_event_id, limit or _NO_LIMIT),
            )
        return [change_event_from_row(row, from_micros) for row in rows]

    async def last_change_event_id(self) -> int:
        async with self._read() as connection:
            rows = await fetch(
                connection, "SELECT last_event_id FROM change_event_counter WHERE only_row = 1"
            )
        return int(rows[0][0])

    async def prune_change_events(self, before: datetime) -> int:
        async def work(transaction: Transaction) -> int:
            return await execute(
                transaction.connection,
                "DELETE FROM change_events WHERE created_at < %s",
                (to_micros(before),),
            )

        return await self._transact(work)
