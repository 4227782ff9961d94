"""The settings every datastore on a SQL server shares (SPIRE's ``sql`` plugin's), checked once.

The ``postgres`` and ``mysql`` datastores declare these keys each in its own configuration
class; the rules a value must keep are the same, and :func:`connection_setting_issues` states
them for both. Keys whose meaning depends on the database (the connection string's forms, idle
connections, TLS files, the statement timeout) are described in its words by each plugin; the
keys that mean the same everywhere are declared here once (``ro_connection_string:
str | None = ro_connection_string_setting()``), default and description alike.
"""

from __future__ import annotations

__all__ = [
    "SqlConnectionSettings",
    "conn_max_lifetime_setting",
    "connection_setting_issues",
    "disable_migration_setting",
    "max_open_conns_setting",
    "ro_connection_string_setting",
]

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue


class SqlConnectionSettings(Protocol):
    """The keys of a SQL datastore's configuration that :func:`connection_setting_issues`
    checks."""

    @property
    def connection_string(self) -> str: ...
    @property
    def ro_connection_string(self) -> str | None: ...
    @property
    def max_open_conns(self) -> int: ...
    @property
    def max_idle_conns(self) -> int: ...
    @property
    def conn_max_lifetime(self) -> timedelta: ...
    @property
    def statement_timeout(self) -> timedelta: ...
    @property
    def client_cert_path(self) -> Path | None: ...
    @property
    def client_key_path(self) -> Path | None: ...


def connection_setting_issues(settings: SqlConnectionSettings) -> Iterator[ConfigIssue]:
    """What is wrong with the connection settings, one issue per key: an empty connection
    string, pool sizes that cannot hold (fewer than one open connection, more idle than open),
    a negative lifetime or timeout, a client certificate without its key or a key without its
    certificate."""
    if not settings.connection_string.strip():
        yield ConfigIssue("connection_string", "must not be empty")
    if settings.ro_connection_string is not None and not settings.ro_connection_string.strip():
        yield ConfigIssue("ro_connection_string", "must not be empty when set")
    if settings.max_open_conns < 1:
        yield ConfigIssue("max_open_conns", f"must be at least 1, found {settings.max_open_conns}")
    if settings.max_idle_conns < 0:
        yield ConfigIssue(
            "max_idle_conns", f"must not be negative, found {settings.max_idle_conns}"
        )
    elif settings.max_idle_conns > settings.max_open_conns:
        yield ConfigIssue(
            "max_idle_conns",
            f"{settings.max_idle_conns} is more than max_open_conns {settings.max_open_conns}",
        )
    if settings.conn_max_lifetime < timedelta(0):
        yield ConfigIssue("conn_max_lifetime", "must not be negative")
    if settings.statement_timeout < timedelta(0):
        yield ConfigIssue("statement_timeout", "must not be negative")
    if (settings.client_cert_path is None) != (settings.client_key_path is None):
        missing = "client_key_path" if settings.client_key_path is None else "client_cert_path"
        yield ConfigIssue(
            missing, "is required with client_cert_path and client_key_path: set both or none"
        )


def ro_connection_string_setting() -> Any:
    """The ``ro_connection_string`` field (``str | None``, default ``None``, secret): a replica
    for the reads that tolerate lag."""
    return setting(
        None,
        description=(
            "a read-only replica for reads that tolerate lag (entry, agent, bundle and "
            "federation listings and counts); same forms as `connection_string`; never logged"
        ),
        secret=True,
    )


def max_open_conns_setting() -> Any:
    """The ``max_open_conns`` field (``int``, SPIRE's default 100)."""
    return setting(100, description="the most connections open at once, per connection string")


def conn_max_lifetime_setting() -> Any:
    """The ``conn_max_lifetime`` field (``timedelta``, default 0: no limit)."""
    return setting(
        timedelta(0),
        description="how long a connection may be reused before it is replaced; 0 for no limit",
    )


def disable_migration_setting() -> Any:
    """The ``disable_migration`` field (``bool``, default ``False``)."""
    return setting(
        False,
        description=(
            "never change the schema: refuse to start unless the database already has the "
            "schema version this release writes"
        ),
    )
