"""``examples/envoy/envoy.yaml`` is a valid Envoy bootstrap (read with Envoy's published protos)
whose SDS source is the Workload API socket of ``examples/configs/agent.toml`` and whose secret
names are ones the agent serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2  # type: ignore[import-untyped]
from envoy.extensions.filters.network.tcp_proxy.v3 import (  # type: ignore[import-untyped]  # noqa: F401
    tcp_proxy_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # type: ignore[import-untyped]
from envoy.extensions.upstreams.http.v3 import (  # type: ignore[import-untyped]  # noqa: F401
    http_protocol_options_pb2,
)
from google.protobuf import json_format

from pyspire.config import load_agent_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "envoy" / "envoy.yaml"


def _contexts(bootstrap: Any) -> list[Any]:
    """The common TLS contexts of the example's listeners and clusters."""
    found = []
    for listener in bootstrap.static_resources.listeners:
        for chain in listener.filter_chains:
            if chain.HasField("transport_socket"):
                context = tls_pb2.DownstreamTlsContext()
                assert chain.transport_socket.typed_config.Unpack(context)
                found.append(context.common_tls_context)
    for cluster in bootstrap.static_resources.clusters:
        if cluster.HasField("transport_socket"):
            context = tls_pb2.UpstreamTlsContext()
            assert cluster.transport_socket.typed_config.Unpack(context)
            found.append(context.common_tls_context)
    return found


def test_the_envoy_example_is_a_bootstrap_using_the_agents_sds() -> None:
    bootstrap = json_format.ParseDict(
        yaml.safe_load(EXAMPLE.read_text()), bootstrap_pb2.Bootstrap()
    )
    agent = load_agent_config(ROOT / "examples" / "configs" / "agent.toml").settings
    [sds_cluster] = [c for c in bootstrap.static_resources.clusters if c.name == "pyspire_agent"]
    pipe = sds_cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe
    assert pipe.path == str(agent.socket_path)
    names = []
    for context in _contexts(bootstrap):
        secrets = [*context.tls_certificate_sds_secret_configs]
        secrets.append(context.combined_validation_context.validation_context_sds_secret_config)
        for secret in secrets:
            source = secret.sds_config.api_config_source
            assert source.grpc_services[0].envoy_grpc.cluster_name == "pyspire_agent"
            names.append(secret.name)
    sds = agent.sds
    served = {sds.default_svid_name, sds.default_bundle_name, sds.default_all_bundles_name}
    assert names == ["spiffe://example.org/myservice", "ALL", "default", "ROOTCA"]
    assert {name for name in names if not name.startswith("spiffe://")} <= served
