"""The host services a process hands each of its plugins. Shared by the server and the agent
so both treat plugins the same way."""

from __future__ import annotations

from pathlib import Path

import structlog

from pyspire.catalog.plan import PlannedPlugin
from pyspire_sdk.clock import Clock
from pyspire_sdk.plugin import HostServices, JoinTokenStore, Metrics, TrustBundleSource
from pyspire_sdk.plugins.upstream_authority import UpstreamServers
from pyspire_sdk.spiffeid import TrustDomain


def host_services_for(
    planned: PlannedPlugin,
    *,
    trust_domain: TrustDomain,
    clock: Clock,
    metrics: Metrics,
    data_dir: Path,
    join_tokens: JoinTokenStore | None = None,
    trust_bundle: TrustBundleSource | None = None,
    upstream_servers: UpstreamServers | None = None,
) -> HostServices:
    """Host services for one planned plugin: a logger bound to its name and type, the
    process's clock, metrics and state directory; ``join_tokens`` only for node attestors,
    ``trust_bundle`` (the server's own bundle) for every plugin of a process that has one,
    ``upstream_servers`` only for upstream authorities."""
    kind = planned.kind.toml_name
    return HostServices(
        trust_domain=trust_domain,
        clock=clock,
        logger=structlog.get_logger("pyspire.plugin").bind(plugin=planned.name, plugin_type=kind),
        metrics=metrics,
        data_dir=data_dir,
        plugin_name=planned.name,
        plugin_type=kind,
        join_tokens=join_tokens if kind == "node_attestor" else None,
        trust_bundle=trust_bundle,
        upstream_servers=upstream_servers if kind == "upstream_authority" else None,
    )
