"""Settings of the ``postgres`` datastore (SPIRE's ``sql`` plugin with ``database_type =
"postgres"``, under our own name)."""

from __future__ import annotations

__all__ = ["PostgresDataStoreConfig"]

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue
from pyspire_sdk.sql_settings import (
    conn_max_lifetime_setting,
    connection_setting_issues,
    disable_migration_setting,
    max_open_conns_setting,
    ro_connection_string_setting,
)


@dataclass(frozen=True, kw_only=True)
class PostgresDataStoreConfig:
    """Where the database is, how many connections to keep and how to secure them."""

    connection_string: str = setting(
        description=(
            "the database to use: a URI (`postgresql://user:password@host:5432/db?sslmode=...`) "
            "or libpq key/value pairs (`host=... dbname=... user=... password=...`); tables go "
            "into the first schema of `search_path` (a URI query parameter or `options=-c "
            "search_path=...`), `public` by default; keep the password out of the file with "
            "`-expandEnv` and `${VAR}`; never logged"
        ),
        secret=True,
    )
    ro_connection_string: str | None = ro_connection_string_setting()
    max_open_conns: int = max_open_conns_setting()
    max_idle_conns: int = setting(
        2,
        description=(
            "connections kept open while idle (opened at start); connections above it close "
            "after a minute unused"
        ),
    )
    conn_max_lifetime: timedelta = conn_max_lifetime_setting()
    root_ca_path: Path | None = setting(
        None,
        description=(
            "CA certificates (PEM) that verify the server's certificate (libpq's `sslrootcert`); "
            "with it, `sslmode` defaults to `verify-full`"
        ),
    )
    client_cert_path: Path | None = setting(
        None, description="client certificate (PEM) presented to the server (libpq's `sslcert`)"
    )
    client_key_path: Path | None = setting(
        None, description="private key (PEM) of `client_cert_path` (libpq's `sslkey`)"
    )
    statement_timeout: timedelta = setting(
        timedelta(seconds=30),
        description=(
            "longest a statement may run before the server cancels it (the call then fails as "
            "unavailable); 0 for no limit; migrations run without it"
        ),
    )
    disable_migration: bool = disable_migration_setting()

    def validate(self) -> Iterable[ConfigIssue]:
        yield from connection_setting_issues(self)
