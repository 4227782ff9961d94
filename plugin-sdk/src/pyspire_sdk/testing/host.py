"""Host services for plugins under test: a fake clock, a real logger, a recording metrics sink,
and a trust bundle a test sets."""

from __future__ import annotations

__all__ = ["RecordingMetrics", "StaticTrustBundle", "make_host_services"]

from collections import defaultdict
from pathlib import Path

import structlog

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.plugin import HostServices, TrustBundleSource
from pyspire_sdk.plugins.upstream_authority import UpstreamServers
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.fake_clock import FakeClock


class RecordingMetrics:
    """A metrics sink that keeps what it is told, so tests can assert on it."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.samples: dict[str, list[float]] = defaultdict(list)

    def increment(self, name: str, value: float = 1.0, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += value

    def observe(self, name: str, value: float, **labels: str) -> None:
        self.samples[name].append(value)


class StaticTrustBundle:
    """The server's trust bundle as a test sets it (:class:`~pyspire_sdk.plugin.TrustBundleSource`):
    ``bundle`` is served until changed; ``None`` answers as a server that has not loaded one."""

    def __init__(self, bundle: Bundle | None = None) -> None:
        self.bundle = bundle

    async def current_bundle(self) -> Bundle:
        if self.bundle is None:
            raise UnavailableError("the server's trust bundle is not loaded")
        return self.bundle


def make_host_services(
    data_dir: Path,
    *,
    trust_domain: str = "example.org",
    clock: Clock | None = None,
    plugin_name: str = "under-test",
    plugin_type: str = "",
    trust_bundle: TrustBundleSource | None = None,
    upstream_servers: UpstreamServers | None = None,
) -> HostServices:
    """Host services as the kernel would give them, for a plugin under test."""
    return HostServices(
        trust_domain=TrustDomain(trust_domain),
        clock=clock if clock is not None else FakeClock(),
        logger=structlog.get_logger().bind(plugin=plugin_name),
        metrics=RecordingMetrics(),
        data_dir=data_dir,
        plugin_name=plugin_name,
        plugin_type=plugin_type,
        trust_bundle=trust_bundle,
        upstream_servers=upstream_servers,
    )
