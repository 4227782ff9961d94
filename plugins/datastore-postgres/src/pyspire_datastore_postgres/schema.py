"""The database schema and its versioned migrations.

Tables live in the connection's current schema (the first schema of ``search_path`` that
exists), so several pyspire deployments, or test runs, can share one database. The
``schema_version`` table holds one row: the version of the last migration applied.

Each migration step runs in its own transaction, which first takes a transaction-scoped
advisory lock (``pg_advisory_xact_lock``) named after the schema. Servers starting together
therefore take turns: the first applies a step, the others wait, then find the step done and
apply nothing. A database written by a newer release (a version above :data:`SCHEMA_VERSION`)
is refused rather than guessed at, as the ``sqlite`` datastore does.

Timestamps are ``timestamptz`` (microseconds, like Python's ``datetime``). Lists (selectors,
DNS names, federated trust domains) live in child tables with a ``position`` column that keeps
the caller's order.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "schema_lock_key"]

import asyncpg
import structlog

from pyspire_sdk.errors import PluginError
from pyspire_sdk.stored_records import SchemaTooNewError

_V1: tuple[str, ...] = (
    """
    CREATE TABLE bundles (
        trust_domain text PRIMARY KEY,
        sequence_number bigint NOT NULL,
        refresh_hint bigint NOT NULL,
        data bytea NOT NULL
    )
    """,
    """
    CREATE TABLE entries (
        pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        entry_id text NOT NULL UNIQUE,
        spiffe_id text NOT NULL,
        parent_id text NOT NULL,
        selectors_hash bytea NOT NULL,
        x509_svid_ttl integer NOT NULL,
        jwt_svid_ttl integer NOT NULL,
        admin boolean NOT NULL,
        downstream boolean NOT NULL,
        expires_at timestamptz,
        revision_number bigint NOT NULL,
        store_svid boolean NOT NULL,
        hint text NOT NULL,
        created_at timestamptz NOT NULL,
        UNIQUE (spiffe_id, parent_id, selectors_hash)
    )
    """,
    "CREATE INDEX entries_by_parent_id ON entries (parent_id)",
    "CREATE INDEX entries_by_hint ON entries (hint)",
    "CREATE INDEX entries_by_downstream ON entries (downstream) WHERE downstream",
    "CREATE INDEX entries_by_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL",
    """
    CREATE TABLE entry_selectors (
        entry_pk bigint NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
        position integer NOT NULL,
        type text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (entry_pk, position)
    )
    """,
    "CREATE UNIQUE INDEX entry_selectors_by_selector ON entry_selectors (type, value, entry_pk)",
    """
    CREATE TABLE entry_dns_names (
        entry_pk bigint NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
        position integer NOT NULL,
        name text NOT NULL,
        PRIMARY KEY (entry_pk, position)
    )
    """,
    """
    CREATE TABLE entry_federates_with (
        entry_pk bigint NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
        position integer NOT NULL,
        trust_domain text NOT NULL REFERENCES bundles (trust_domain),
        PRIMARY KEY (entry_pk, position)
    )
    """,
    """
    CREATE UNIQUE INDEX entry_federates_with_by_trust_domain
        ON entry_federates_with (trust_domain, entry_pk)
    """,
    """
    CREATE TABLE attested_nodes (
        pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        spiffe_id text NOT NULL UNIQUE,
        attestation_type text NOT NULL,
        serial_number text NOT NULL,
        expires_at timestamptz,
        new_serial_number text NOT NULL,
        new_expires_at timestamptz,
        banned boolean NOT NULL,
        can_reattest boolean NOT NULL,
        agent_version text NOT NULL
    )
    """,
    "CREATE INDEX attested_nodes_by_attestation_type ON attested_nodes (attestation_type)",
    "CREATE INDEX attested_nodes_by_expires_at ON attested_nodes (expires_at)",
    """
    CREATE TABLE node_selectors (
        spiffe_id text NOT NULL,
        position integer NOT NULL,
        type text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (spiffe_id, position)
    )
    """,
    "CREATE UNIQUE INDEX node_selectors_by_selector ON node_selectors (type, value, spiffe_id)",
    """
    CREATE TABLE join_tokens (
        token text PRIMARY KEY,
        expires_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX join_tokens_by_expires_at ON join_tokens (expires_at)",
    """
    CREATE TABLE ca_journals (
        name text PRIMARY KEY,
        data bytea NOT NULL
    )
    """,
    """
    CREATE TABLE federation_relationships (
        trust_domain text PRIMARY KEY,
        bundle_endpoint_url text NOT NULL,
        profile text NOT NULL,
        endpoint_spiffe_id text
    )
    """,
    """
    CREATE TABLE change_events (
        event_id bigint PRIMARY KEY,
        kind text NOT NULL,
        object_id text NOT NULL,
        created_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX change_events_by_created_at ON change_events (created_at)",
    """
    CREATE TABLE change_event_counter (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        last_event_id bigint NOT NULL
    )
    """,
    "INSERT INTO change_event_counter (last_event_id) VALUES (0)",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
"""Migration ``n`` (1-based) brings a schema from version ``n - 1`` to ``n``. Only ever append:
a released migration is never edited."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code writes and understands."""


def schema_lock_key(schema: str, name: str) -> str:
    """The text whose hash names an advisory lock of ``schema`` (``pg_advisory_xact_lock(
    hashtextextended(key, 0))``): locks of different schemas never meet."""
    return f"pyspire/{schema}/{name}"


async def _version(connection: asyncpg.Connection, schema: str, where: str) -> int | None:
    """The stored version, ``None`` before the first migration."""
    exists = await connection.fetchval(
        "SELECT to_regclass(format('%I.schema_version', $1::text)) IS NOT NULL", schema
    )
    if not exists:
        return None
    rows = await connection.fetch("SELECT version FROM schema_version")
    if len(rows) != 1:
        raise PluginError(f"{where}: schema_version has {len(rows)} rows, expected one")
    return int(rows[0][0])


def _too_new(where: str, found: int) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"{where}: schema version {found} is newer than the {SCHEMA_VERSION} this "
        "pyspire-datastore-postgres understands; upgrade it or use a database written by this "
        "release"
    )


async def migrate(
    connection: asyncpg.Connection, schema: str, where: str, *, allowed: bool = True
) -> int:
    """Bring ``schema`` to :data:`SCHEMA_VERSION`, one transaction per step; return the version
    found before.

    ``where`` names the database in errors (its redacted connection string and schema). Raises
    :class:`SchemaTooNewError` for a newer schema and, with ``allowed`` false
    (``disable_migration``), :class:`PluginError` for an older one; neither changes anything.
    """
    logger = structlog.get_logger("pyspire_datastore_postgres")
    lock = schema_lock_key(schema, "migrate")
    found: int | None = None
    while True:
        async with connection.transaction():
            await connection.execute("SET LOCAL statement_timeout = 0")
            await connection.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock)
            version = await _version(connection, schema, where)
            if found is None:
                found = version or 0
            current = version or 0
            if current > SCHEMA_VERSION:
                raise _too_new(where, current)
            if current == SCHEMA_VERSION:
                return found
            if not allowed:
                raise PluginError(
                    f"{where}: schema version {current} is older than the {SCHEMA_VERSION} this "
                    "release needs, and disable_migration is set; migrate it with a server "
                    "that may, or unset disable_migration"
                )
            if version is None:
                await connection.execute("CREATE TABLE schema_version (version integer NOT NULL)")
                await connection.execute("INSERT INTO schema_version (version) VALUES (0)")
            for statement in MIGRATIONS[current]:
                await connection.execute(statement)
            await connection.execute("UPDATE schema_version SET version = $1", current + 1)
            logger.info("schema migrated", schema=schema, version=current + 1)
