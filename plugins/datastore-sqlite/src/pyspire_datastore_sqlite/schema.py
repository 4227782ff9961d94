"""The database schema and its versioned migrations.

The ``schema_version`` table holds one row: the version of the last migration applied. At start
every migration above it runs, all in one transaction, so a database is never left between two
versions. A database written by a newer release (a version above :data:`SCHEMA_VERSION`) is
refused rather than guessed at: this code does not know what the newer tables mean.

Timestamps are stored as integer microseconds since the Unix epoch (UTC), so they round-trip
exactly. Lists (selectors, DNS names, federated trust domains) live in child tables with a
``position`` column that keeps the caller's order.

Crash tests need to stop a server *inside* a migration: with :data:`PAUSE_ENV` set to a version
``n``, the migration to ``n`` runs its statements, logs ``migration paused`` and then waits
forever without committing, so the test can kill the process at that point and check that the
database still holds the whole previous version. Unset (always, outside such tests), it costs
one environment lookup per start.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "PAUSE_ENV", "SCHEMA_VERSION", "SchemaTooNewError", "migrate"]

import asyncio
import os
from pathlib import Path

import aiosqlite
import structlog

from pyspire_sdk.errors import PluginError
from pyspire_sdk.stored_records import SchemaTooNewError

_V1: tuple[str, ...] = (
    """
    CREATE TABLE bundles (
        trust_domain TEXT PRIMARY KEY,
        sequence_number INTEGER NOT NULL,
        refresh_hint INTEGER NOT NULL,
        data BLOB NOT NULL
    )
    """,
    """
    CREATE TABLE entries (
        pk INTEGER PRIMARY KEY,
        entry_id TEXT NOT NULL UNIQUE,
        spiffe_id TEXT NOT NULL,
        parent_id TEXT NOT NULL,
        selectors_hash BLOB NOT NULL,
        x509_svid_ttl INTEGER NOT NULL,
        jwt_svid_ttl INTEGER NOT NULL,
        admin INTEGER NOT NULL,
        downstream INTEGER NOT NULL,
        expires_at INTEGER,
        revision_number INTEGER NOT NULL,
        store_svid INTEGER NOT NULL,
        hint TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (spiffe_id, parent_id, selectors_hash)
    )
    """,
    "CREATE INDEX entries_by_parent_id ON entries (parent_id)",
    "CREATE INDEX entries_by_hint ON entries (hint)",
    "CREATE INDEX entries_by_downstream ON entries (downstream)",
    "CREATE INDEX entries_by_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL",
    """
    CREATE TABLE entry_selectors (
        entry_pk INTEGER NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        type TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (entry_pk, position)
    ) WITHOUT ROWID
    """,
    "CREATE UNIQUE INDEX entry_selectors_by_selector ON entry_selectors (type, value, entry_pk)",
    """
    CREATE TABLE entry_dns_names (
        entry_pk INTEGER NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (entry_pk, position)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE entry_federates_with (
        entry_pk INTEGER NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        trust_domain TEXT NOT NULL REFERENCES bundles (trust_domain),
        PRIMARY KEY (entry_pk, position)
    ) WITHOUT ROWID
    """,
    """
    CREATE UNIQUE INDEX entry_federates_with_by_trust_domain
        ON entry_federates_with (trust_domain, entry_pk)
    """,
    """
    CREATE TABLE attested_nodes (
        pk INTEGER PRIMARY KEY,
        spiffe_id TEXT NOT NULL UNIQUE,
        attestation_type TEXT NOT NULL,
        serial_number TEXT NOT NULL,
        expires_at INTEGER,
        new_serial_number TEXT NOT NULL,
        new_expires_at INTEGER,
        banned INTEGER NOT NULL,
        can_reattest INTEGER NOT NULL,
        agent_version TEXT NOT NULL
    )
    """,
    "CREATE INDEX attested_nodes_by_attestation_type ON attested_nodes (attestation_type)",
    "CREATE INDEX attested_nodes_by_expires_at ON attested_nodes (expires_at)",
    """
    CREATE TABLE node_selectors (
        spiffe_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        type TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (spiffe_id, position)
    ) WITHOUT ROWID
    """,
    "CREATE UNIQUE INDEX node_selectors_by_selector ON node_selectors (type, value, spiffe_id)",
    """
    CREATE TABLE join_tokens (
        token TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    "CREATE INDEX join_tokens_by_expires_at ON join_tokens (expires_at)",
    """
    CREATE TABLE ca_journals (
        name TEXT PRIMARY KEY,
        data BLOB NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE federation_relationships (
        trust_domain TEXT PRIMARY KEY,
        bundle_endpoint_url TEXT NOT NULL,
        profile TEXT NOT NULL,
        endpoint_spiffe_id TEXT
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE change_events (
        event_id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        object_id TEXT NOT NULL,
        created_at INTEGER NOT NULL
    )
    """,
    "CREATE INDEX change_events_by_created_at ON change_events (created_at)",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
"""Migration ``n`` (1-based) brings a database from version ``n - 1`` to ``n``. Only ever append:
a released migration is never edited."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code writes and understands."""


PAUSE_ENV = "PYSPIRE_SQLITE_PAUSE_IN_MIGRATION"
"""Test hook: the schema version whose migration pauses before committing (see the module)."""


async def migrate(connection: aiosqlite.Connection, path: Path) -> int:
    """Bring the database to :data:`SCHEMA_VERSION` in one transaction; return the version found.

    ``connection`` must be in autocommit mode (``isolation_level=None``). Raises
    :class:`SchemaTooNewError` for a database newer than this code, changing nothing.
    """
    await connection.execute("BEGIN IMMEDIATE")
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
        )
        rows = list(await connection.execute_fetchall("SELECT version FROM schema_version"))
        if len(rows) > 1:
            raise PluginError(
                f"database_path {str(path)!r}: schema_version has {len(rows)} rows, expected one"
            )
        found = int(rows[0][0]) if rows else 0
        if found > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"database_path {str(path)!r}: schema version {found} is newer than the "
                f"{SCHEMA_VERSION} this pyspire-datastore-sqlite understands; upgrade it or "
                "use a database written by this release"
            )
        pause = os.environ.get(PAUSE_ENV)
        for version, statements in enumerate(MIGRATIONS[found:], start=found + 1):
            for statement in statements:
                await connection.execute(statement)
            if pause == str(version):
                structlog.get_logger("pyspire_datastore_sqlite").warning(
                    "migration paused", version=version, env=PAUSE_ENV
                )
                await asyncio.Event().wait()
        if not rows:
            await connection.execute(
                "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
            )
        elif found != SCHEMA_VERSION:
            await connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        await connection.execute("COMMIT")
    except BaseException:
        await connection.rollback()
        raise
    return found
