"""Settings of the ``sqlite`` datastore."""

from __future__ import annotations

__all__ = ["SqliteDataStoreConfig"]

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue


@dataclass(frozen=True, kw_only=True)
class SqliteDataStoreConfig:
    """Where the database lives and how many connections read it."""

    database_path: Path | None = setting(
        None,
        description=(
            "the SQLite database file; created (mode 0600, its directory 0700) when missing; "
            "default <data_dir>/datastore.sqlite3"
        ),
    )
    read_connections: int = setting(
        2,
        description="connections that serve reads concurrently with the single writer",
    )
    busy_timeout: timedelta = setting(
        timedelta(seconds=5),
        description="how long a statement waits for a lock held by another process",
    )

    def validate(self) -> Iterable[ConfigIssue]:
        if self.read_connections < 1:
            yield ConfigIssue(
                "read_connections", f"must be at least 1, found {self.read_connections}"
            )
        if self.busy_timeout < timedelta(0):
            yield ConfigIssue("busy_timeout", "must not be negative")
