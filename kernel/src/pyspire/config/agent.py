"""The ``[agent]`` table of a pyspire agent configuration file.

Keys and defaults follow SPIRE's agent configuration (``doc/spire_agent.md``). The agent must be
told how to trust the server the first time it connects: exactly one of ``trust_bundle_path``,
``trust_bundle_url`` or ``insecure_bootstrap``.
"""

from __future__ import annotations

__all__ = ["BOOTSTRAP_KEYS", "AgentConfig"]

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pyspire.config.common import (
    KeyType,
    check_log_settings,
    check_positive,
    check_socket_path,
)
from pyspire.config.sds import SdsConfig
from pyspire.telemetry.settings import (
    HealthChecksConfig,
    TelemetryConfig,
    check_telemetry_endpoints,
)
from pyspire_sdk.config import check_port, setting
from pyspire_sdk.errors import ConfigIssue
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

BOOTSTRAP_KEYS = ("trust_bundle_path", "trust_bundle_url", "insecure_bootstrap")
"""The ways to bootstrap trust in the server; a configuration sets exactly one."""


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Settings of the pyspire agent process (the ``[agent]`` table without its plugins)."""

    trust_domain: TrustDomain = setting(description="The trust domain of the server and agent.")
    server_address: str = setting(description="DNS name or IP address of the pyspire server.")
    server_port: int = setting(description="TCP port of the pyspire server API.")
    data_dir: Path = setting(
        default=Path("."), description="Directory where the agent keeps its state."
    )
    socket_path: Path = setting(
        default=Path("/tmp/pyspire-agent/public/api.sock"),  # noqa: S108 - SPIRE's default
        description="Unix socket of the Workload API.",
    )
    admin_socket_path: Path | None = setting(
        default=None,
        description="Unix socket of the agent administration API; unset: no administration API.",
    )
    trust_bundle_path: Path | None = setting(
        default=None, description="File with the bundle to trust the server with at bootstrap."
    )
    trust_bundle_url: str | None = setting(
        default=None, description="HTTPS URL to download the bootstrap trust bundle from."
    )
    trust_bundle_format: Literal["pem", "spiffe"] = setting(
        default="pem",
        description="Format of the bootstrap trust bundle: pem or spiffe (SPIFFE bundle JSON).",
    )
    insecure_bootstrap: bool = setting(
        default=False,
        description="Trust the server without a bundle on first contact (for tests only).",
    )
    join_token: str | None = setting(
        default=None,
        description=(
            "One-time join token for the join_token node attestor. Prefer join_token_file: a "
            "token given with -joinToken is visible to every local user in the process list."
        ),
        secret=True,
    )
    join_token_file: Path | None = setting(
        default=None,
        description=(
            "File holding the join token (read once at start; refused when other users may "
            "read or write it). Excludes join_token."
        ),
    )
    sync_interval: timedelta = setting(
        default=timedelta(seconds=5),
        description=(
            "How often the agent fetches its authorized entries from the server (each wait "
            "shortened by up to 10 % at random, as SPIRE does, so that agents do not sync in "
            "step)."
        ),
    )
    workload_x509_svid_key_type: KeyType = setting(
        default=KeyType.EC_P256, description="Key type of the workload X.509-SVID keys."
    )
    x509_svid_cache_max_size: int = setting(
        default=1000, description="Soft limit on the number of X.509-SVIDs the agent caches."
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

    # -- Delegated Identity API (on the admin socket) ---------------------------------------
    authorized_delegates: tuple[SpiffeId, ...] = setting(
        default=(),
        description=(
            "SPIFFE IDs (of this trust domain) of the local processes allowed to use the "
            "Delegated Identity API on admin_socket_path."
        ),
    )
    # -- end of Delegated Identity API ------------------------------------------------------

    # -- Envoy SDS (SPIRE's `sds` block) ------------------------------------------------------
    sds: SdsConfig = setting(
        default_factory=SdsConfig,
        description="Envoy Secret Discovery Service settings (served on the Workload API socket).",
    )
    # -- end of Envoy SDS ---------------------------------------------------------------------

    def bootstrap_keys_set(self) -> list[str]:
        """The bootstrap keys this configuration sets, in :data:`BOOTSTRAP_KEYS` order."""
        chosen = {
            "trust_bundle_path": self.trust_bundle_path is not None,
            "trust_bundle_url": self.trust_bundle_url is not None,
            "insecure_bootstrap": self.insecure_bootstrap,
        }
        return [key for key in BOOTSTRAP_KEYS if chosen[key]]

    def validate(self) -> Iterator[ConfigIssue]:
        """Rules spanning several keys: one bootstrap way, sockets apart, sane sizes."""
        address = self.server_address.strip()
        if not address:
            yield ConfigIssue("server_address", "must not be empty")
        elif "://" in address or any(char.isspace() for char in address):
            yield ConfigIssue(
                "server_address",
                f"expected a DNS name or IP address without scheme, found {self.server_address!r}",
            )
        yield from check_port("server_port", self.server_port, allow_zero=False)
        yield from check_socket_path("socket_path", self.socket_path)
        yield from check_socket_path("admin_socket_path", self.admin_socket_path)
        if self.admin_socket_path is not None:
            workload_dir = os.path.abspath(self.socket_path.parent)
            admin_dir = os.path.abspath(self.admin_socket_path.parent)
            if os.path.commonpath([workload_dir, admin_dir]) == workload_dir:
                yield ConfigIssue(
                    "admin_socket_path",
                    "must not be in the directory of socket_path or below it: workloads "
                    "that reach the Workload API would reach the administration API too",
                )
        chosen = self.bootstrap_keys_set()
        if len(chosen) != 1:
            found = " and ".join(chosen) if chosen else "none"
            yield ConfigIssue(
                "",
                f"exactly one of {', '.join(BOOTSTRAP_KEYS)} must be set, found {found}",
            )
        if self.trust_bundle_url is not None:
            parts = urlsplit(self.trust_bundle_url)
            if parts.scheme != "https" or not parts.netloc:
                yield ConfigIssue(
                    "trust_bundle_url",
                    f"expected an https URL, found {self.trust_bundle_url!r}",
                )
        if self.join_token is not None and not self.join_token.strip():
            yield ConfigIssue("join_token", "must not be empty when set")
        if self.join_token is not None and self.join_token_file is not None:
            yield ConfigIssue(
                "join_token_file", "join_token and join_token_file exclude each other: set one"
            )
        yield from check_positive("sync_interval", self.sync_interval)
        if self.x509_svid_cache_max_size < 1:
            yield ConfigIssue(
                "x509_svid_cache_max_size",
                f"must be at least 1, found {self.x509_svid_cache_max_size}",
            )
        yield from check_log_settings(self.log_level, self.log_format)
        yield from check_telemetry_endpoints(self.telemetry, self.health_checks)
        yield from self._check_authorized_delegates()

    def _check_authorized_delegates(self) -> Iterator[ConfigIssue]:
        """Delegates are workloads of this trust domain (SPIRE's rule), each listed once."""
        seen: set[SpiffeId] = set()
        for index, delegate in enumerate(self.authorized_delegates):
            key = f"authorized_delegates[{index}]"
            if delegate.trust_domain != self.trust_domain:
                yield ConfigIssue(
                    key,
                    f"{delegate} is not a member of the trust domain {self.trust_domain.name!r}",
                )
            elif delegate.path == "":
                yield ConfigIssue(key, f"{delegate} names a trust domain, not a workload")
            elif delegate in seen:
                yield ConfigIssue(key, f"{delegate} is listed more than once")
            seen.add(delegate)

    def warnings(self) -> list[ConfigIssue]:
        """Advice that does not stop the agent: insecure bootstrap trusts any server once;
        delegates without an admin socket have no API to call; SDS bundle names that clash."""
        found = [ConfigIssue(f"sds.{issue.path}", issue.message) for issue in self.sds.warnings()]
        if self.insecure_bootstrap:
            found.append(
                ConfigIssue(
                    "insecure_bootstrap",
                    "the agent trusts whichever server answers its first connection; use "
                    "trust_bundle_path or trust_bundle_url outside of tests",
                )
            )
        if self.authorized_delegates and self.admin_socket_path is None:
            found.append(
                ConfigIssue(
                    "authorized_delegates",
                    "no admin_socket_path is set, so the Delegated Identity API is not served",
                )
            )
        return found
