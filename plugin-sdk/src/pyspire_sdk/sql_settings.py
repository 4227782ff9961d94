"""The settings every datastore on a SQL server shares (SPIRE's ``sql`` plugin's), checked once.

The ``postgres`` and ``mysql`` datastores declare these keys each in its own configuration
class, with descriptions in their database's words; the rules a value must keep are the same,
and :func:`connection_setting_issues` states them for both.
"""

from __future__ import annotations

__all__ = ["SqlConnectionSettings", "connection_setting_issues"]

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Protocol

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
