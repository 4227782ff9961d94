"""The ``[server]`` table of a pyspire server configuration file.

Keys and defaults follow SPIRE's server configuration (``doc/spire_server.md``) so an operator who
knows SPIRE finds the same names; durations are written ``"1h30m"``.
"""

from __future__ import annotations

__all__ = ["MAX_SVID_TTL_WARNING_CAP", "CaSubject", "ServerConfig"]

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pyspire.ca.templates import CaSubject
from pyspire.config.common import (
    KeyType,
    check_log_settings,
    check_positive,
    check_socket_path,
)
from pyspire.config.federation import FederationConfig
from pyspire.telemetry.settings import (
    HealthChecksConfig,
    TelemetryConfig,
    check_telemetry_endpoints,
)
from pyspire_sdk import format_duration
from pyspire_sdk.config import check_port, setting
from pyspire_sdk.errors import ConfigIssue
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

MAX_SIGNING_PROCESSES = 64
"""More signing workers than this is a typo, not a machine."""
MAX_SVID_TTL_WARNING_CAP = timedelta(days=7)
"""SVID TTLs above ``min(ca_ttl / 6, 7d)`` draw a warning: CA rotation may shorten them."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Settings of the pyspire server process (the ``[server]`` table without its plugins)."""

    trust_domain: TrustDomain = setting(
        description="The trust domain this server is the authority of (at most 255 bytes)."
    )
    data_dir: Path = setting(description="Directory where the server keeps its state.")
    bind_address: str = setting(
        default="0.0.0.0",  # noqa: S104 - the server API listens on every interface, like SPIRE
        description="IP address or host name the server API listens on for agents.",
    )
    bind_port: int = setting(
        default=8081, description="TCP port the server API listens on (0 picks a free port)."
    )
    socket_path: Path = setting(
        default=Path("/tmp/pyspire-server/private/api.sock"),  # noqa: S108 - SPIRE's default
        description="Unix socket of the local administration API.",
    )
    log_level: str = setting(
        default="INFO", description="Log level: DEBUG, INFO, WARN or ERROR (any case)."
    )
    log_format: str = setting(
        default="text",
        description="Log format: text, json, or auto (text on a terminal, json otherwise).",
    )
    log_file: Path | None = setting(
        default=None, description="File to append logs to (created with mode 0640); unset: stderr."
    )
    telemetry: TelemetryConfig = setting(
        default_factory=TelemetryConfig, description="Where metrics are served."
    )
    health_checks: HealthChecksConfig = setting(
        default_factory=HealthChecksConfig,
        description="HTTP liveness and readiness endpoints for probes.",
    )
    ca_key_type: KeyType = setting(
        default=KeyType.EC_P256, description="Key type of the X.509 CA keys."
    )
    jwt_key_type: KeyType | None = setting(
        default=None, description="Key type of the JWT signing keys; unset: ca_key_type."
    )
    ca_ttl: timedelta = setting(
        default=timedelta(hours=24), description="Lifetime of each X.509 CA and JWT signing key."
    )
    ca_subject: CaSubject = setting(
        default_factory=CaSubject, description="Subject of the X.509 CA certificates."
    )
    default_x509_svid_ttl: timedelta = setting(
        default=timedelta(hours=1),
        description="Lifetime of X.509-SVIDs whose registration entry sets none.",
    )
    default_jwt_svid_ttl: timedelta = setting(
        default=timedelta(minutes=5),
        description="Lifetime of JWT-SVIDs whose registration entry or request sets none.",
    )
    agent_ttl: timedelta | None = setting(
        default=None, description="Lifetime of agent X.509-SVIDs; unset: default_x509_svid_ttl."
    )
    jwt_issuer: str | None = setting(
        default=None, description="Issuer (iss claim) of JWT-SVIDs, a URL; unset: no iss claim."
    )
    admin_ids: tuple[SpiffeId, ...] = setting(
        default=(),
        description="SPIFFE IDs granted the administration APIs over mTLS, from any trust domain.",
    )
    signing_processes: int = setting(
        default=0,
        description=(
            "Worker processes that check CSR signatures and sign workload X509-SVIDs "
            "(memory and disk key managers; a KMS key still signs through its plugin); "
            "0: in the server process."
        ),
    )
    reuse_port: bool = setting(
        default=False,
        description=(
            "Listen with SO_REUSEPORT, so several server processes on one datastore share "
            "bind_address:bind_port and the kernel spreads agents' connections across them."
        ),
    )
    audit_log_enabled: bool = setting(
        default=False, description="Log every call to the server APIs as an audit event."
    )
    federation: FederationConfig = setting(
        default_factory=FederationConfig,
        description="The bundle endpoint served to other trust domains.",
    )

    @property
    def effective_jwt_key_type(self) -> KeyType:
        """The JWT key type in force: ``jwt_key_type`` if set, else ``ca_key_type``."""
        return self.jwt_key_type if self.jwt_key_type is not None else self.ca_key_type

    @property
    def effective_agent_ttl(self) -> timedelta:
        """The agent SVID lifetime in force: ``agent_ttl`` if set, else the X.509-SVID default."""
        return self.agent_ttl if self.agent_ttl is not None else self.default_x509_svid_ttl

    def _svid_ttls(self) -> list[tuple[str, timedelta]]:
        ttls = [
            ("default_x509_svid_ttl", self.default_x509_svid_ttl),
            ("default_jwt_svid_ttl", self.default_jwt_svid_ttl),
        ]
        if self.agent_ttl is not None:
            ttls.append(("agent_ttl", self.agent_ttl))
        return ttls

    def validate(self) -> Iterator[ConfigIssue]:
        """Rules spanning several keys; an SVID outliving its CA is an error."""
        if not self.bind_address.strip():
            yield ConfigIssue("bind_address", "must not be empty")
        yield from check_port("bind_port", self.bind_port, allow_zero=True)
        yield from check_socket_path("socket_path", self.socket_path)
        yield from check_log_settings(self.log_level, self.log_format)
        yield from check_telemetry_endpoints(self.telemetry, self.health_checks)
        yield from check_positive("ca_ttl", self.ca_ttl)
        if not 0 <= self.signing_processes <= MAX_SIGNING_PROCESSES:
            yield ConfigIssue(
                "signing_processes",
                f"must be between 0 and {MAX_SIGNING_PROCESSES}, found {self.signing_processes}",
            )
        yield from self._check_reuse_port()
        for key, ttl in self._svid_ttls():
            yield from check_positive(key, ttl)
            if ttl > self.ca_ttl:
                yield ConfigIssue(
                    key,
                    f"{format_duration(ttl)} is longer than ca_ttl "
                    f"({format_duration(self.ca_ttl)})",
                )
        if str(self.trust_domain) in self.federation.federates_with:
            yield ConfigIssue(
                f'federation.federates_with."{self.trust_domain}"',
                "a server does not federate with its own trust domain",
            )
        if self.jwt_issuer is not None:
            parts = urlsplit(self.jwt_issuer)
            if not parts.scheme or not parts.netloc:
                yield ConfigIssue(
                    "jwt_issuer",
                    f"expected a URL with a scheme and a host, found {self.jwt_issuer!r}",
                )

    def _check_reuse_port(self) -> Iterator[ConfigIssue]:
        """A shared port must exist on this platform and be fixed: port 0 gives each process
        a port of its own, and no agent reaches the others."""
        if not self.reuse_port:
            return
        if not hasattr(socket, "SO_REUSEPORT"):
            yield ConfigIssue("reuse_port", "this platform has no SO_REUSEPORT")
        if self.bind_port == 0:
            yield ConfigIssue("reuse_port", "needs a fixed bind_port, found 0")

    def warnings(self) -> list[ConfigIssue]:
        """Advice that does not stop the server: SVID TTLs that CA rotation may cut short.

        The CA prepares its successor when 1/6 of its lifetime remains, so an SVID longer than
        ``min(ca_ttl / 6, 7d)`` may be issued with less than its configured lifetime.
        """
        cap = min(self.ca_ttl / 6, MAX_SVID_TTL_WARNING_CAP)
        found: list[ConfigIssue] = []
        for key, ttl in self._svid_ttls():
            if cap < ttl <= self.ca_ttl:
                found.append(
                    ConfigIssue(
                        key,
                        f"{format_duration(ttl)} is longer than {format_duration(cap)} "
                        "(ca_ttl / 6, at most 7d): SVIDs may be issued with a shorter lifetime "
                        "near CA rotation",
                    )
                )
        found.extend(
            ConfigIssue(f"federation.{issue.path}", issue.message)
            for issue in self.federation.warnings()
        )
        return found
