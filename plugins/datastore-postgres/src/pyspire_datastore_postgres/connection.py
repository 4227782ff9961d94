"""Connection strings, their secrets, and the connection pools built from them.

A connection string comes in either of libpq's forms, a URI or key/value pairs; both become one
URI that asyncpg understands, with the TLS files of the configuration added as libpq's
``sslrootcert``/``sslcert``/``sslkey``. The password (and anything else secret in the string)
must never reach a log or an error message: every message that may quote a string or a driver
error goes through :meth:`ConnectionTarget.scrub`.
"""

from __future__ import annotations

__all__ = ["ConnectionTarget", "LifetimeConnection", "open_pool"]

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import asyncpg

from pyspire_sdk.errors import ConfigError, ConfigIssue
from pyspire_sdk.stored_records import scrub_secrets

_URI_SCHEMES = ("postgresql", "postgres")
_SECRET_KEYS = frozenset({"password", "sslpassword"})
_REDACTED = "***"
_IDLE_CLOSE_SECONDS = 60.0
"""Idle connections above ``max_idle_conns`` close after this long unused."""


def _parse_key_values(text: str, key: str) -> dict[str, str]:
    """libpq's ``keyword = value`` pairs; a value may be single-quoted with ``\\`` escapes."""
    pairs: dict[str, str] = {}
    index, length = 0, len(text)
    while True:
        while index < length and text[index].isspace():
            index += 1
        if index >= length:
            return pairs
        start = index
        while index < length and text[index] not in "= \t\r\n":
            index += 1
        name = text[start:index]
        while index < length and text[index].isspace():
            index += 1
        if not name or index >= length or text[index] != "=":
            raise ConfigError(
                [ConfigIssue(key, f"expected keyword=value pairs or a URI; {name!r} has no value")]
            )
        index += 1
        while index < length and text[index].isspace():
            index += 1
        value: list[str] = []
        if index < length and text[index] == "'":
            index += 1
            while True:
                if index >= length:
                    raise ConfigError([ConfigIssue(key, f"the value of {name!r} has no closing '")])
                char = text[index]
                if char == "\\" and index + 1 < length:
                    value.append(text[index + 1])
                    index += 2
                    continue
                index += 1
                if char == "'":
                    break
                value.append(char)
        else:
            while index < length and not text[index].isspace():
                value.append(text[index])
                index += 1
        pairs[name] = "".join(value)


def _redact_uri(uri: str) -> str:
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, _, hosts = netloc.rpartition("@")
        user, colon, _password = credentials.partition(":")
        netloc = f"{user}:{_REDACTED}@{hosts}" if colon else f"{credentials}@{hosts}"
    query = [
        (name, _REDACTED if name in _SECRET_KEYS else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    encoded = urlencode(query, safe="*/", quote_via=quote)
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{encoded}" if encoded else "")


@dataclass(frozen=True)
class ConnectionTarget:
    """One configured connection string, ready for asyncpg and safe to show.

    ``key`` is the configuration key it came from, named in every error about it; ``shown`` is
    the string with its secrets replaced by ``***``.
    """

    key: str
    uri: str = field(repr=False)
    shown: str
    secrets: tuple[str, ...] = field(repr=False)

    @classmethod
    def parse(
        cls,
        key: str,
        text: str,
        *,
        root_ca: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
    ) -> ConnectionTarget:
        """Read ``text`` (a URI or key/value pairs) and add the TLS files given.

        Raises :class:`ConfigError` at ``key`` for a string that cannot be read, or that already
        names a TLS file the configuration sets too.
        """
        stripped = text.strip()
        scheme = stripped.partition("://")[0].lower() if "://" in stripped else ""
        if scheme in _URI_SCHEMES:
            parts = urlsplit(stripped)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            password = unquote(parts.password) if parts.password else ""
        elif scheme:
            raise ConfigError(
                [ConfigIssue(key, f"URI scheme {scheme!r} is not postgresql:// or postgres://")]
            )
        else:
            # The database becomes the path, every other keyword a query parameter: asyncpg
            # reads host, port, user, password... from the query and passes the rest on as
            # server settings.
            query = _parse_key_values(stripped, key)
            database = query.pop("dbname", "")
            parts = urlsplit(f"postgresql:///{quote(database, safe='')}")
            password = ""
        secrets = tuple(
            value for value in (password, *(query.get(name, "") for name in _SECRET_KEYS)) if value
        )
        files = {"sslrootcert": root_ca, "sslcert": client_cert, "sslkey": client_key}
        for name, path in files.items():
            if path is None:
                continue
            if name in query:
                raise ConfigError(
                    [
                        ConfigIssue(
                            key,
                            f"names {name} while the configuration sets it too; keep one",
                        )
                    ]
                )
            query[name] = str(path)
        if root_ca is not None and "sslmode" not in query:
            query["sslmode"] = "verify-full"
        encoded = urlencode(query, quote_via=quote)
        uri = f"{parts.scheme or 'postgresql'}://{parts.netloc}{parts.path or '/'}"
        if encoded:
            uri += f"?{encoded}"
        return cls(key=key, uri=uri, shown=_redact_uri(uri), secrets=secrets)

    def scrub(self, text: str) -> str:
        """``text`` with every secret of this connection string replaced by ``***`` (driver
        errors may quote what they were given)."""
        return scrub_secrets(text, self.secrets, _REDACTED)


class LifetimeConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that knows when it was opened, so a pool can retire it after
    ``conn_max_lifetime``."""

    opened_at: datetime | None = None


def open_pool(
    target: ConnectionTarget,
    *,
    max_open: int,
    max_idle: int,
    statement_timeout: timedelta,
    now: Callable[[], datetime],
    read_only: bool = False,
    extra_settings: dict[str, str] | None = None,
) -> Any:
    """An asyncpg pool for ``target`` (not yet initialized: await it).

    Every connection runs with ``statement_timeout`` (0 for none) and records when it was
    opened; a read-only pool's connections refuse writes.
    """
    settings = {
        "application_name": "pyspire-server",
        "statement_timeout": str(int(statement_timeout.total_seconds() * 1000)),
        **(extra_settings or {}),
    }
    if read_only:
        settings["default_transaction_read_only"] = "on"

    async def stamp(connection: LifetimeConnection) -> None:
        connection.opened_at = now()

    return asyncpg.create_pool(
        target.uri,
        min_size=max_idle,
        max_size=max_open,
        max_inactive_connection_lifetime=_IDLE_CLOSE_SECONDS,
        connection_class=LifetimeConnection,
        init=stamp,
        server_settings=settings,
    )
