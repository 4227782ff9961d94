"""The ``telemetry`` and ``health_checks`` tables of the server and agent configurations: what
:mod:`pyspire.telemetry.endpoints` serves.

They are declared here, in the room that serves them (as SPIRE's ``telemetry.FileConfig`` and
``health.Config`` live in its telemetry and health packages), and the configuration files take
them in (:mod:`pyspire.config.server`, :mod:`pyspire.config.agent`).
"""

from __future__ import annotations

__all__ = [
    "HealthChecksConfig",
    "PrometheusConfig",
    "TelemetryConfig",
    "check_telemetry_endpoints",
]

from collections.abc import Iterator
from dataclasses import dataclass

from pyspire_sdk.config import check_port, setting
from pyspire_sdk.errors import ConfigIssue


@dataclass(frozen=True, kw_only=True)
class PrometheusConfig:
    """Where metrics are served for Prometheus to scrape (SPIRE's ``telemetry.Prometheus``)."""

    host: str = setting(
        default="localhost", description="Address the Prometheus endpoint listens on."
    )
    port: int = setting(description="TCP port of the Prometheus endpoint (0 picks a free port).")

    def validate(self) -> Iterator[ConfigIssue]:
        if not self.host.strip():
            yield ConfigIssue("host", "must not be empty")
        yield from check_port("port", self.port, allow_zero=True)


@dataclass(frozen=True, kw_only=True)
class TelemetryConfig:
    """The ``telemetry`` table: where the process's metrics go (SPIRE's ``telemetry`` block)."""

    Prometheus: PrometheusConfig | None = setting(  # SPIRE spells the key so
        default=None,
        description="Serve metrics over HTTP for Prometheus, on any path; unset: not served.",
    )


@dataclass(frozen=True, kw_only=True)
class HealthChecksConfig:
    """The ``health_checks`` table: SPIRE's HTTP liveness and readiness endpoints."""

    listener_enabled: bool = setting(
        default=False, description="Serve the liveness and readiness endpoints over HTTP."
    )
    bind_address: str = setting(
        default="localhost", description="Address the health endpoints listen on."
    )
    bind_port: int = setting(
        default=80, description="TCP port of the health endpoints (0 picks a free port)."
    )
    live_path: str = setting(
        default="/live", description="Path answering 200 while the process runs and responds."
    )
    ready_path: str = setting(
        default="/ready", description="Path answering 200 when the process is ready to serve."
    )

    def validate(self) -> Iterator[ConfigIssue]:
        if not self.bind_address.strip():
            yield ConfigIssue("bind_address", "must not be empty")
        yield from check_port("bind_port", self.bind_port, allow_zero=True)
        for key, path in (("live_path", self.live_path), ("ready_path", self.ready_path)):
            if not path.startswith("/") or any(char.isspace() for char in path) or "?" in path:
                yield ConfigIssue(
                    key, f"expected a path starting with '/', without spaces or '?', found {path!r}"
                )
        if self.live_path == self.ready_path:
            yield ConfigIssue("ready_path", f"must differ from live_path ({self.live_path!r})")


def check_telemetry_endpoints(
    telemetry: TelemetryConfig, health_checks: HealthChecksConfig
) -> Iterator[ConfigIssue]:
    """An issue when the Prometheus and health endpoints would listen on the same address."""
    prometheus = telemetry.Prometheus
    if prometheus is None or not health_checks.listener_enabled or prometheus.port == 0:
        return
    if (prometheus.host, prometheus.port) == (health_checks.bind_address, health_checks.bind_port):
        yield ConfigIssue(
            "health_checks.bind_port",
            f"{health_checks.bind_address}:{health_checks.bind_port} is also "
            "telemetry.Prometheus' address",
        )
