"""Settings of the ``mysql`` datastore (SPIRE's ``sql`` plugin with ``database_type =
"mysql"``, under our own name)."""

from __future__ import annotations

__all__ = ["MysqlDataStoreConfig"]

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
class MysqlDataStoreConfig:
    """Where the database is, how many connections to keep, how to secure them and how often
    to look for changes other servers made."""

    connection_string: str = setting(
        description=(
            "the database to use: SPIRE's form (`user:password@tcp(host:3306)/db?tls=true`, "
            "or `unix(/path/to/socket)`) or a URI (`mysql://user:password@host:3306/db`); "
            "query parameters `tls` (`true`, `skip-verify`, `false`), `timeout` "
            "(connect timeout, e.g. `5s`) and `parseTime` (accepted, no effect); the database "
            "must exist; keep the password out of the file with `-expandEnv` and `${VAR}`; "
            "never logged"
        ),
        secret=True,
    )
    ro_connection_string: str | None = ro_connection_string_setting()
    max_open_conns: int = max_open_conns_setting()
    max_idle_conns: int = setting(
        2,
        description=(
            "connections kept open while idle; a connection released while this many are "
            "idle is closed"
        ),
    )
    conn_max_lifetime: timedelta = conn_max_lifetime_setting()
    root_ca_path: Path | None = setting(
        None,
        description=(
            "CA certificates (PEM) that verify the server's certificate; setting it turns TLS "
            "on, with the server's name checked"
        ),
    )
    client_cert_path: Path | None = setting(
        None, description="client certificate (PEM) presented to the server; turns TLS on"
    )
    client_key_path: Path | None = setting(
        None, description="private key (PEM) of `client_cert_path`"
    )
    statement_timeout: timedelta = setting(
        timedelta(seconds=30),
        description=(
            "longest a statement may run before the server stops it (MariaDB's "
            "`max_statement_time`, MySQL's `max_execution_time` for reads; the call then fails "
            "as unavailable); 0 for no limit; migrations run without it"
        ),
    )
    disable_migration: bool = disable_migration_setting()
    events_poll_interval: timedelta = setting(
        timedelta(milliseconds=500),
        description=(
            "how often the change event counter and the bundles' write generation are read, so "
            "changes made through other servers sharing the database reach this one within "
            "about this long"
        ),
    )

    def validate(self) -> Iterable[ConfigIssue]:
        yield from connection_setting_issues(self)
        if self.events_poll_interval <= timedelta(0):
            yield ConfigIssue("events_poll_interval", "must be positive")
