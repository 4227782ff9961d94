"""The endpoints a configuration asks for, served over real loopback sockets: opened together,
closed together, a bind failure naming its setting, and no HTTP server loaded by a process that
serves none."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from pyspire.telemetry.endpoints import TelemetryEndpoints, serve_telemetry
from pyspire.telemetry.health import CheckResult, HealthCheck
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire.telemetry.settings import HealthChecksConfig, PrometheusConfig, TelemetryConfig
from pyspire_sdk.errors import PyspireError

from .servers import get, refused

BOTH = (
    TelemetryConfig(Prometheus=PrometheusConfig(host="127.0.0.1", port=0)),
    HealthChecksConfig(listener_enabled=True, bind_address="127.0.0.1", bind_port=0),
)


async def ready() -> CheckResult:
    return CheckResult(True)


CHECKS: dict[str, HealthCheck] = {"always": ready}


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


async def test_both_endpoints_answer_until_the_block_ends() -> None:
    metrics = PrometheusMetrics("pyspire_agent")
    metrics.increment("manager.sync")
    async with serve_telemetry(*BOTH, metrics=metrics, checks=CHECKS) as endpoints:
        assert endpoints.prometheus is not None
        assert endpoints.health is not None
        status, content_type, body = await get(endpoints.prometheus.port, "/metrics")
        assert (status, content_type.split(";")[0]) == (200, "text/plain")
        assert b"pyspire_agent_manager_sync_total 1.0" in body
        status, _, body = await get(endpoints.health.port, "/ready")
        assert (status, json.loads(body)["ready"]) == (200, True)
    assert await refused(endpoints.prometheus.port)
    assert await refused(endpoints.health.port)


async def test_a_scraper_asking_for_openmetrics_gets_it() -> None:
    metrics = PrometheusMetrics("pyspire_agent")
    metrics.increment("manager.sync")
    async with serve_telemetry(*BOTH, metrics=metrics, checks=CHECKS) as endpoints:
        assert endpoints.prometheus is not None
        status, content_type, body = await get(
            endpoints.prometheus.port,
            "/metrics",
            accept="application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
        )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_taken_port_names_the_setting_and_leaves_nothing_open(taken_port: int) -> None:
    prometheus_port = free_port()
    telemetry = TelemetryConfig(Prometheus=PrometheusConfig(host="127.0.0.1", port=prometheus_port))
    health_checks = HealthChecksConfig(
        listener_enabled=True, bind_address="127.0.0.1", bind_port=taken_port
    )
    opened: list[TelemetryEndpoints] = []
    metrics = PrometheusMetrics("pyspire_agent")
    with pytest.raises(PyspireError) as raised:
        async with serve_telemetry(
            telemetry, health_checks, metrics=metrics, checks=CHECKS
        ) as endpoints:
            opened.append(endpoints)
    assert str(raised.value) == (
        f"health_checks: cannot listen on 127.0.0.1:{taken_port}: address already in use"
    )
    assert opened == []
    assert await refused(prometheus_port)


def test_a_process_serving_no_endpoint_never_loads_the_http_server() -> None:
    """The agent's and server's start-up, and their telemetry with nothing configured, leave
    aiohttp unimported; configuring an endpoint imports it (so the check can fail)."""
    program = textwrap.dedent(
        """
        import asyncio, sys
        import pyspire.agent.runtime, pyspire.server.runtime, pyspire.cli.agent
        import pyspire.cli.server, pyspire.cli.commands.run
        from pyspire.telemetry.settings import HealthChecksConfig, TelemetryConfig
        from pyspire.telemetry.endpoints import TelemetryEndpoints, serve_telemetry
        from pyspire.telemetry.metrics import PrometheusMetrics

        def loaded():
            return any(name.split(".")[0] == "aiohttp" for name in sys.modules)

        async def serve(health_checks):
            async with serve_telemetry(
                TelemetryConfig(), health_checks, metrics=PrometheusMetrics("p"), checks={}
            ) as endpoints:
                return endpoints

        assert asyncio.run(serve(HealthChecksConfig())) == TelemetryEndpoints()
        before = loaded()
        asyncio.run(serve(HealthChecksConfig(
            listener_enabled=True, bind_address="127.0.0.1", bind_port=0)))
        print(before, loaded())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False True"
