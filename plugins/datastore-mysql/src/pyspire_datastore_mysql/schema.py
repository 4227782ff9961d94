# ruff: noqa: S608 - SQL text is assembled from constants only
"""The database schema and its versioned migrations.

Tables live in the database the connection string names, so several deployments, or test
runs, can share one server. The ``schema_version`` table holds one row: the version of the last
migration applied.

MySQL commits implicitly before and after every DDL statement, so a step that creates tables
cannot be one atomic transaction as it is on PostgreSQL. Steps are therefore written to be
**idempotent** (``CREATE TABLE IF NOT EXISTS`` with the indexes inline, ``INSERT IGNORE``), and
each step's transaction ends by writing its version into ``schema_version``: a server killed in
the middle of a step leaves the version of the step before, and the next start runs the whole
step again, which finishes what the first attempt began. A released step is never edited, and
later steps keep that rule (a column added with ``ADD COLUMN IF NOT EXISTS``, say).

Servers starting together take turns through the named lock ``GET_LOCK`` (held by the
migrating session from the first read of the version to the last step): the first applies the
steps, the others wait, then find the schema current. A database written by a newer release
is refused rather than guessed at, as the ``sqlite`` datastore does.

Text is compared byte for byte: SPIFFE IDs and trust domain names are ASCII (``ascii_bin``;
spaces cannot occur in them), everything else ``utf8mb4`` with a binary collation that does not
ignore trailing spaces (MariaDB's ``utf8mb4_nopad_bin``, MySQL's ``utf8mb4_0900_bin``).
Timestamps are microseconds since the epoch in ``BIGINT`` columns (exact, free of the session
time zone). Identities too long for one index (two SPIFFE IDs and a selector set) are unique
through a SHA-256 of their parts.
"""

from __future__ import annotations

__all__ = ["LOCK_SLOTS", "MIGRATIONS", "SCHEMA_VERSION", "lock_name", "migrate"]

import hashlib
from typing import Any

import structlog

from pyspire_sdk.errors import PluginError
from pyspire_sdk.stored_records import SchemaTooNewError

LOCK_SLOTS = 512
"""Rows of ``object_locks``: a read-modify-write of an object that may not exist yet (a
bundle, a node) locks the row its name hashes to, for the length of its transaction."""

_TABLE = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={text} ROW_FORMAT=DYNAMIC"
_ID = "VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin"
_TD = "VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin"

_V1: tuple[str, ...] = (
    f"""
    CREATE TABLE IF NOT EXISTS bundles (
        trust_domain {_TD} NOT NULL PRIMARY KEY,
        sequence_number BIGINT NOT NULL,
        refresh_hint BIGINT NOT NULL,
        data LONGBLOB NOT NULL
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS entries (
        pk BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        entry_id VARCHAR(255) NOT NULL,
        spiffe_id {_ID} NOT NULL,
        parent_id {_ID} NOT NULL,
        selectors_hash BINARY(32) NOT NULL,
        identity_hash BINARY(32) NOT NULL,
        x509_svid_ttl INT NOT NULL,
        jwt_svid_ttl INT NOT NULL,
        admin BOOLEAN NOT NULL,
        downstream BOOLEAN NOT NULL,
        expires_at BIGINT NULL,
        revision_number BIGINT NOT NULL,
        store_svid BOOLEAN NOT NULL,
        hint VARCHAR(1024) NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE KEY entries_by_entry_id (entry_id),
        UNIQUE KEY entries_by_identity (identity_hash),
        KEY entries_by_spiffe_id (spiffe_id(255)),
        KEY entries_by_parent_id (parent_id(255)),
        KEY entries_by_hint (hint(191)),
        KEY entries_by_expires_at (expires_at)
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS entry_selectors (
        entry_pk BIGINT NOT NULL,
        position INT NOT NULL,
        type VARCHAR(255) NOT NULL,
        value VARCHAR(4096) NOT NULL,
        PRIMARY KEY (entry_pk, position),
        KEY entry_selectors_by_selector (type(64), value(191)),
        CONSTRAINT entry_selectors_entry FOREIGN KEY (entry_pk) REFERENCES entries (pk)
            ON DELETE CASCADE
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS entry_dns_names (
        entry_pk BIGINT NOT NULL,
        position INT NOT NULL,
        name VARCHAR(1024) NOT NULL,
        PRIMARY KEY (entry_pk, position),
        CONSTRAINT entry_dns_names_entry FOREIGN KEY (entry_pk) REFERENCES entries (pk)
            ON DELETE CASCADE
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS entry_federates_with (
        entry_pk BIGINT NOT NULL,
        position INT NOT NULL,
        trust_domain {_TD} NOT NULL,
        PRIMARY KEY (entry_pk, position),
        KEY entry_federates_with_by_trust_domain (trust_domain, entry_pk),
        CONSTRAINT entry_federates_with_entry FOREIGN KEY (entry_pk) REFERENCES entries (pk)
            ON DELETE CASCADE,
        CONSTRAINT entry_federates_with_bundle FOREIGN KEY (trust_domain)
            REFERENCES bundles (trust_domain)
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS attested_nodes (
        pk BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        spiffe_id {_ID} NOT NULL,
        attestation_type VARCHAR(1024) NOT NULL,
        serial_number VARCHAR(1024) NOT NULL,
        expires_at BIGINT NULL,
        new_serial_number VARCHAR(1024) NOT NULL,
        new_expires_at BIGINT NULL,
        banned BOOLEAN NOT NULL,
        can_reattest BOOLEAN NOT NULL,
        agent_version VARCHAR(1024) NOT NULL,
        UNIQUE KEY attested_nodes_by_spiffe_id (spiffe_id),
        KEY attested_nodes_by_attestation_type (attestation_type(191)),
        KEY attested_nodes_by_expires_at (expires_at)
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS node_selectors (
        spiffe_id {_ID} NOT NULL,
        position INT NOT NULL,
        type VARCHAR(255) NOT NULL,
        value VARCHAR(4096) NOT NULL,
        PRIMARY KEY (spiffe_id, position),
        KEY node_selectors_by_selector (type(64), value(191))
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS join_tokens (
        token VARCHAR(512) NOT NULL PRIMARY KEY,
        expires_at BIGINT NOT NULL,
        KEY join_tokens_by_expires_at (expires_at)
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS ca_journals (
        name VARCHAR(512) NOT NULL PRIMARY KEY,
        data LONGBLOB NOT NULL
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS federation_relationships (
        trust_domain {_TD} NOT NULL PRIMARY KEY,
        bundle_endpoint_url VARCHAR(4096) NOT NULL,
        profile VARCHAR(64) NOT NULL,
        endpoint_spiffe_id {_ID} NULL
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS change_events (
        event_id BIGINT NOT NULL PRIMARY KEY,
        kind VARCHAR(16) NOT NULL,
        object_id VARCHAR(2048) NOT NULL,
        created_at BIGINT NOT NULL,
        KEY change_events_by_created_at (created_at)
    ) {_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS change_event_counter (
        only_row TINYINT NOT NULL PRIMARY KEY,
        last_event_id BIGINT NOT NULL
    ) {_TABLE}
    """,
    "INSERT IGNORE INTO change_event_counter (only_row, last_event_id) VALUES (1, 0)",
    f"""
    CREATE TABLE IF NOT EXISTS bundle_changes (
        only_row TINYINT NOT NULL PRIMARY KEY,
        generation BIGINT NOT NULL
    ) {_TABLE}
    """,
    "INSERT IGNORE INTO bundle_changes (only_row, generation) VALUES (1, 0)",
    f"CREATE TABLE IF NOT EXISTS object_locks (slot INT NOT NULL PRIMARY KEY) {_TABLE}",
    "INSERT IGNORE INTO object_locks (slot) WITH RECURSIVE slots (n) AS (SELECT 0 UNION ALL "
    f"SELECT n + 1 FROM slots WHERE n < {LOCK_SLOTS - 1}) SELECT n FROM slots",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
"""Migration ``n`` (1-based) brings a schema from version ``n - 1`` to ``n``; every statement
is idempotent (see the module documentation). Only ever append: a released migration is never
edited."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code writes and understands."""

_LOCK_WAIT_SECONDS = 600


def lock_name(database: str, name: str) -> str:
    """The ``GET_LOCK`` name of ``name`` in ``database`` (names are limited to 64 characters,
    database names are not, so the database is hashed): locks of different databases never
    meet."""
    digest = hashlib.sha256(database.encode()).hexdigest()[:32]
    return f"pyspire:{digest}:{name}"[:64]


async def _fetch(connection: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async with connection.cursor() as cursor:
        await cursor.execute(sql, args or None)
        return list(await cursor.fetchall())


async def _collation(connection: Any) -> str:
    """The binary, no-pad collation of utf8mb4 this server has."""
    rows = await _fetch(
        connection,
        "SELECT collation_name FROM information_schema.collations "
        "WHERE collation_name IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')",
    )
    if not rows:
        raise PluginError("the server has neither utf8mb4_nopad_bin nor utf8mb4_0900_bin")
    return str(rows[0][0])


async def _version(connection: Any, where: str) -> int | None:
    """The stored version, ``None`` before the first migration."""
    tables = await _fetch(
        connection,
        "SELECT 1 FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name = 'schema_version'",
    )
    if not tables:
        return None
    rows = await _fetch(connection, "SELECT version FROM schema_version")
    if len(rows) != 1:
        raise PluginError(f"{where}: schema_version has {len(rows)} rows, expected one")
    return int(rows[0][0])


def _too_new(where: str, found: int) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"{where}: schema version {found} is newer than the {SCHEMA_VERSION} this "
        "pyspire-datastore-mysql understands; upgrade it or use a database written by this "
        "release"
    )


async def _step(connection: Any, version: int, collation: str) -> None:
    """Apply migration ``version`` and record it, in one transaction (DDL commits as it goes)."""
    await connection.begin()
    try:
        for statement in MIGRATIONS[version - 1]:
            await _fetch(connection, statement.replace("{text}", collation))
        await _fetch(connection, "UPDATE schema_version SET version = %s", version)
        await connection.commit()
    except BaseException:
        await connection.rollback()
        raise


async def migrate(connection: Any, database: str, where: str, *, allowed: bool = True) -> int:
    """Bring ``database`` to :data:`SCHEMA_VERSION`, one transaction per step; return the
    version found before. ``connection`` is a session of its own without a statement timeout
    (steps may take long on a large database).

    ``where`` names the database in errors (its redacted connection string). Raises
    :class:`SchemaTooNewError` for a newer schema and, with ``allowed`` false
    (``disable_migration``), :class:`PluginError` for an older one; neither changes anything.
    """
    logger = structlog.get_logger("pyspire_datastore_mysql")
    await _fetch(connection, "SET SESSION sql_notes = 0")  # "already exists" on a rerun
    lock = lock_name(database, "migrate")
    (held,) = (await _fetch(connection, "SELECT GET_LOCK(%s, %s)", lock, _LOCK_WAIT_SECONDS))[0]
    if held != 1:
        raise PluginError(f"{where}: waited {_LOCK_WAIT_SECONDS}s for another server's migration")
    try:
        version = await _version(connection, where)
        found = version or 0
        if found > SCHEMA_VERSION:
            raise _too_new(where, found)
        if found < SCHEMA_VERSION and not allowed:
            raise PluginError(
                f"{where}: schema version {found} is older than the {SCHEMA_VERSION} this "
                "release needs, and disable_migration is set; migrate it with a server that "
                "may, or unset disable_migration"
            )
        if version is None:
            await _fetch(
                connection,
                "CREATE TABLE IF NOT EXISTS schema_version (only_row TINYINT NOT NULL PRIMARY "
                "KEY, version INT NOT NULL) ENGINE=InnoDB",
            )
            await _fetch(
                connection, "INSERT IGNORE INTO schema_version (only_row, version) VALUES (1, 0)"
            )
        collation = await _collation(connection)
        for step in range(found + 1, SCHEMA_VERSION + 1):
            await _step(connection, step, collation)
            logger.info("schema migrated", database=database, version=step)
        return found
    finally:
        await _fetch(connection, "SELECT RELEASE_LOCK(%s)", lock)
