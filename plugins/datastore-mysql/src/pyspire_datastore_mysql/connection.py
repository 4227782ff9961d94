"""Connection strings, their secrets, and the TLS context built from the configuration.

Two forms are read: SPIRE's (Go's MySQL driver), ``user:password@tcp(host:port)/db?params`` or
``user@unix(/path/to/socket)/db``, and a URI, ``mysql://user:password@host:port/db?params``
(``mariadb://`` too). The password must never reach a log or an error message: every message
that may quote a string or a driver error goes through :meth:`ConnectionTarget.scrub`.
"""

from __future__ import annotations

__all__ = ["ConnectionTarget", "TlsFiles", "TlsMode", "is_mariadb", "statement_timeout_sql"]

import re
import ssl
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pyspire_sdk.errors import ConfigError, ConfigIssue
from pyspire_sdk.stored_records import scrub_secrets

_REDACTED = "***"
_URI_SCHEMES = ("mysql", "mariadb")
_GO_DSN = re.compile(
    r"^(?:(?P<user>[^:@]*)(?::(?P<password>.*))?@)?"
    r"(?P<net>tcp|unix)?(?:\((?P<address>[^)]*)\))?"
    r"/(?P<database>[^?]*)(?:\?(?P<query>.*))?$",
    re.S,
)
_DURATION = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_IGNORED_PARAMETERS = frozenset({"parseTime"})
"""Parameters of Go's driver that SPIRE's examples set and that change nothing here (times are
stored as integers)."""


class TlsMode(StrEnum):
    """Go's ``tls`` parameter: whether and how to use TLS when no root CA is configured."""

    FALSE = "false"
    """Plain connections (the default)."""
    TRUE = "true"
    """TLS, the server's certificate verified against the system's CAs and its name checked."""
    SKIP_VERIFY = "skip-verify"
    """TLS without verifying the server (only against eavesdropping, not impersonation)."""


@dataclass(frozen=True)
class TlsFiles:
    """The TLS files of the configuration (``root_ca_path``, ``client_cert_path``,
    ``client_key_path``)."""

    root_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


def is_mariadb(connection: Any) -> bool:
    """Whether the server behind ``connection`` is MariaDB (else MySQL)."""
    return "mariadb" in str(connection.get_server_info()).lower()


def statement_timeout_sql(connection: Any, seconds: float) -> str:
    """The statement that bounds every later statement of the session to ``seconds`` (0: no
    bound): MariaDB's ``max_statement_time`` (any statement), MySQL's ``max_execution_time``
    (reads only: MySQL has no bound for writes)."""
    if is_mariadb(connection):
        return f"SET SESSION max_statement_time = {seconds:.6f}"
    return f"SET SESSION max_execution_time = {round(seconds * 1000)}"


def _issue(key: str, reason: str) -> ConfigError:
    return ConfigError([ConfigIssue(key, reason)])


def _seconds(key: str, text: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise _issue(key, f"timeout {text!r} is not a duration like 5s, 500ms or 1m")
    return float(match["number"]) * _UNIT_SECONDS[match["unit"]]


@dataclass(frozen=True)
class ConnectionTarget:
    """One configured connection string, ready for the driver and safe to show.

    ``key`` is the configuration key it came from, named in every error about it; ``shown`` is
    the string with its password replaced by ``***``.
    """

    key: str
    shown: str
    user: str
    password: str = field(repr=False)
    database: str
    host: str = "127.0.0.1"
    port: int = 3306
    unix_socket: str | None = None
    tls: TlsMode = TlsMode.FALSE
    connect_timeout: float = 10.0

    @classmethod
    def parse(cls, key: str, text: str) -> ConnectionTarget:
        """Read ``text`` in either form; :class:`ConfigError` at ``key`` when it cannot be
        read (the message never quotes the password)."""
        stripped = text.strip()
        if "://" in stripped:
            return cls._parse_uri(key, stripped)
        match = _GO_DSN.match(stripped)
        if match is None:
            raise _issue(
                key, "expected user:password@tcp(host:port)/database or mysql://... (not shown)"
            )
        password = match["password"] or ""
        address = match["address"] or ""
        options: dict[str, object] = {}
        if match["net"] == "unix":
            if not address:
                raise _issue(key, "unix() needs the socket's path")
            options["unix_socket"] = address
        elif address:
            host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
            options["host"] = host.strip("[]") or "127.0.0.1"
            if port:
                options["port"] = cls._port(key, port)
        user = match["user"] or ""
        shown = (
            stripped.replace(f"{user}:{password}@", f"{user}:{_REDACTED}@", 1)
            if password
            else stripped
        )
        return cls._finish(
            key, shown, user, password, match["database"], match["query"] or "", options
        )

    @classmethod
    def _parse_uri(cls, key: str, text: str) -> ConnectionTarget:
        parts = urlsplit(text)
        if parts.scheme.lower() not in _URI_SCHEMES:
            raise _issue(key, f"URI scheme {parts.scheme!r} is not mysql:// or mariadb://")
        try:
            port = parts.port
        except ValueError:
            raise _issue(key, "the URI's port is not a number") from None
        password = unquote(parts.password) if parts.password else ""
        options: dict[str, object] = {"host": parts.hostname or "127.0.0.1"}
        if port is not None:
            options["port"] = port
        netloc = parts.netloc
        if parts.password:
            netloc = netloc.replace(f":{parts.password}@", f":{_REDACTED}@", 1)
        shown = f"{parts.scheme}://{netloc}{parts.path}" + (
            f"?{parts.query}" if parts.query else ""
        )
        return cls._finish(
            key,
            shown,
            unquote(parts.username or ""),
            password,
            unquote(parts.path.lstrip("/")),
            parts.query,
            options,
        )

    @staticmethod
    def _port(key: str, text: str) -> int:
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise _issue(key, f"port {text!r} is not a number from 1 to 65535")
        return int(text)

    @classmethod
    def _finish(
        cls,
        key: str,
        shown: str,
        user: str,
        password: str,
        database: str,
        query: str,
        options: dict[str, object],
    ) -> ConnectionTarget:
        if not database:
            raise _issue(key, "names no database: add /<database>")
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name == "tls":
                try:
                    options["tls"] = TlsMode(value)
                except ValueError:
                    modes = ", ".join(mode.value for mode in TlsMode)
                    raise _issue(key, f"tls={value!r} is not one of {modes}") from None
            elif name == "timeout":
                options["connect_timeout"] = _seconds(key, value)
            elif name not in _IGNORED_PARAMETERS:
                raise _issue(
                    key, f"parameter {name!r} is not supported (tls, timeout and parseTime are)"
                )
        return cls(
            key=key,
            shown=shown,
            user=user,
            password=password,
            database=database,
            **options,  # type: ignore[arg-type]
        )

    def ssl_context(self, files: TlsFiles) -> ssl.SSLContext | None:
        """The TLS context for connections to this target, or ``None`` for plain connections.

        A root CA (or a client certificate) turns TLS on with the server verified (against the
        root CA's certificates alone when one is configured, the system's otherwise) and its
        name checked; ``tls=skip-verify`` without a root CA verifies nothing.
        Raises :class:`ConfigError` naming the file that cannot be read.
        """
        configured = files.root_ca is not None or files.client_cert is not None
        if self.tls is TlsMode.FALSE and not configured:
            return None
        if files.root_ca is not None:
            # Only the configured CAs, not the system's: the database's CA is a private one.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
        else:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if files.root_ca is not None:
            try:
                context.load_verify_locations(cafile=str(files.root_ca))
            except (OSError, ssl.SSLError) as error:
                raise _issue("root_ca_path", f"cannot load {files.root_ca}: {error}") from None
        elif self.tls is TlsMode.SKIP_VERIFY:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if files.client_cert is not None and files.client_key is not None:
            try:
                context.load_cert_chain(str(files.client_cert), str(files.client_key))
            except (OSError, ssl.SSLError) as error:
                raise _issue(
                    "client_cert_path",
                    f"cannot load {files.client_cert} with {files.client_key}: {error}",
                ) from None
        return context

    def scrub(self, text: str) -> str:
        """``text`` with the password replaced by ``***`` (driver errors may quote it)."""
        return scrub_secrets(text, (self.password,), _REDACTED)
