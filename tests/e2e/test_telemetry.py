"""A server and an agent as real processes, each serving Prometheus metrics and HTTP health
checks: a scraper sees the attestation, the SVIDs, the syncs and the Workload API calls, and the
agent's readiness follows its state (ready once it serves, not ready once the server bans it).

The tests run in file order on one deployment; the last one bans the agent.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from processes import (
    TRUST_DOMAIN,
    AgentProcess,
    AgentSettings,
    Deployment,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    join_token_agent_id,
    run_workload,
    short_temp_dir,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

WEB = f"spiffe://{TRUST_DOMAIN}/web"
CALLER_SELECTOR = f"unix:uid:{os.getuid()}"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def telemetry_tables(side: str, prometheus: int, health: int) -> str:
    return f"""
[{side}.telemetry.Prometheus]
host = "127.0.0.1"
port = {prometheus}

[{side}.health_checks]
listener_enabled = true
bind_address = "127.0.0.1"
bind_port = {health}
"""


class Ports:
    def __init__(self) -> None:
        self.server_metrics, self.server_health = free_port(), free_port()
        self.agent_metrics, self.agent_health = free_port(), free_port()


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports()


@pytest.fixture(scope="module")
def deployment(ports: Ports) -> Iterator[Deployment]:
    root = short_temp_dir()
    server = ServerProcess(
        ServerSettings(
            root=root,
            port=free_port(),
            extra=telemetry_tables("server", ports.server_metrics, ports.server_health),
        )
    )
    agent = AgentProcess(
        AgentSettings(
            root=root,
            server_port=server.settings.port,
            bootstrap_bundle=root / "bootstrap.pem",
            extra=telemetry_tables("agent", ports.agent_metrics, ports.agent_health),
        )
    )
    deployed = Deployment(root=root, server=server, agent=agent, token="", agent_id="")
    try:
        server.start()
        server.write_bundle(root / "bootstrap.pem")
        deployed.token = server.generate_token()
        deployed.agent_id = join_token_agent_id(deployed.token)
        server.create_entry(WEB, deployed.agent_id, CALLER_SELECTOR)
        agent.start(join_token=deployed.token)
    except ProcessError as error:
        logs = deployed.logs()
        deployed.stop()
        pytest.fail(f"the deployment did not start: {str(error).splitlines()[0]}\n{logs}")
    except BaseException:
        deployed.stop()
        raise
    try:
        yield deployed
    finally:
        deployed.stop()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    status, body = get(port, path)
    return status, json.loads(body)


def scrape(port: int) -> Samples:
    status, body = get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every series carrying at least ``labels``."""
    wanted = set(labels.items())
    return sum(
        value for (found, keys), value in samples.items() if found == name and wanted <= set(keys)
    )


def test_the_server_counts_the_attestation_and_the_svids(
    deployment: Deployment, ports: Ports
) -> None:
    found = scrape(ports.server_metrics)
    attest = "pyspire_server_rpc_agent_v1_agent_attest_agent_total"
    assert total(found, attest, status="OK") == 1.0
    node = "pyspire_server_node_attestor_attest_total"
    assert total(found, node, attestor="join_token", status="OK") == 1.0
    assert total(found, "pyspire_server_rpc_svid_v1_svid_batch_new_x509svid_total", status="OK")
    # The agent SVID and the workload SVID at least.
    assert total(found, "pyspire_server_server_ca_sign_x509_svid_total") >= 2.0
    assert total(found, "pyspire_server_ca_manager_x509_ca_activate_total") == 1.0


def test_the_agent_counts_its_syncs_cache_and_workload_calls(
    deployment: Deployment, ports: Ports
) -> None:
    out = deployment.root / "x509"
    out.mkdir()
    got = run_workload(deployment.agent.endpoint, "x509", str(out))
    assert got["spiffe_id"] == WEB
    found = scrape(ports.agent_metrics)
    assert total(found, "pyspire_agent_manager_sync_total", status="OK") >= 1.0
    assert total(found, "pyspire_agent_manager_sync_elapsed_time_count", status="OK") >= 1.0
    assert total(found, "pyspire_agent_lru_cache_record_map_size") == 1.0
    assert total(found, "pyspire_agent_lru_cache_svid_map_size") == 1.0
    # py-spiffe reads the first message of the stream, then cancels it.
    assert total(found, "pyspire_agent_rpc_workload_api_fetch_x509svid_total") >= 1.0


def test_both_are_live_and_ready(deployment: Deployment, ports: Ports) -> None:
    for port in (ports.server_health, ports.agent_health):
        assert probe(port, "/live") == (200, {"live": True})
        status, body = probe(port, "/ready")
        assert (status, body["ready"]) == (200, True), body
    _, agent = probe(ports.agent_health, "/ready")
    assert set(agent["checks"]) == {"agent", "workload_api"}


def test_a_banned_agent_is_live_but_not_ready(deployment: Deployment, ports: Ports) -> None:
    deployment.server.cli("agent", "ban", "-spiffeID", deployment.agent_id)

    def not_ready() -> dict[str, Any] | None:
        status, body = probe(ports.agent_health, "/ready")
        return body if status == 500 else None

    body = wait_for("the banned agent to report not ready", not_ready, 30, deployment.logs())
    assert body["checks"]["agent"]["ready"] is False
    assert body["checks"]["agent"]["message"].startswith("revoked by the server")
    assert probe(ports.agent_health, "/live")[0] == 200
    assert probe(ports.server_health, "/ready")[0] == 200
