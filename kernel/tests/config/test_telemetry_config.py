"""The ``telemetry`` and ``health_checks`` tables, the same on the server and the agent:
SPIRE's spelling and defaults, and every mistake reported with its key path."""

from __future__ import annotations

from typing import Any

import pytest

from pyspire.config import AgentConfig, ServerConfig
from pyspire.telemetry.settings import HealthChecksConfig, PrometheusConfig
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError

TABLES: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "server": (ServerConfig, {"trust_domain": "example.org", "data_dir": "/var/lib/pyspire"}),
    "agent": (
        AgentConfig,
        {
            "trust_domain": "example.org",
            "server_address": "spire.example.org",
            "server_port": 8081,
            "insecure_bootstrap": True,
        },
    ),
}


@pytest.fixture(params=sorted(TABLES))
def side(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def load(side: str, **table: Any) -> Any:
    config_type, minimal = TABLES[side]
    return load_config(config_type, {**minimal, **table}, path=side)


def issues(side: str, **table: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load(side, **table)
    return {issue.path: issue.message for issue in caught.value.issues}


def test_defaults_serve_nothing_and_are_spires(side: str) -> None:
    config = load(side)
    assert config.telemetry.Prometheus is None
    assert config.health_checks == HealthChecksConfig(
        listener_enabled=False,
        bind_address="localhost",
        bind_port=80,
        live_path="/live",
        ready_path="/ready",
    )


def test_spires_shape_parses(side: str) -> None:
    config = load(
        side,
        telemetry={"Prometheus": {"port": 9988}},
        health_checks={
            "listener_enabled": True,
            "bind_address": "0.0.0.0",  # noqa: S104 - what an operator may write
            "bind_port": 8080,
            "live_path": "/healthz",
            "ready_path": "/readyz",
        },
    )
    assert config.telemetry.Prometheus == PrometheusConfig(host="localhost", port=9988)
    assert config.health_checks.listener_enabled is True
    assert (config.health_checks.live_path, config.health_checks.ready_path) == (
        "/healthz",
        "/readyz",
    )


def test_a_prometheus_table_needs_its_port(side: str) -> None:
    found = issues(side, telemetry={"Prometheus": {"host": "127.0.0.1"}})
    assert found == {
        f"{side}.telemetry.Prometheus.port": "required key is missing (expected an integer)"
    }


def test_collectors_we_do_not_have_are_unknown_keys(side: str) -> None:
    found = issues(side, telemetry={"Statsd": [{"address": "localhost:8125"}]})
    assert list(found) == [f"{side}.telemetry.Statsd"]
    assert found[f"{side}.telemetry.Statsd"].startswith("unknown key; known keys: Prometheus")


def test_bad_values_are_named_by_their_key_paths(side: str) -> None:
    found = issues(
        side,
        telemetry={"Prometheus": {"host": " ", "port": 70000}},
        health_checks={
            "listener_enabled": True,
            "bind_address": "",
            "bind_port": -1,
            "live_path": "live",
            "ready_path": "/ready?x",
        },
    )
    assert found == {
        f"{side}.telemetry.Prometheus.host": "must not be empty",
        f"{side}.telemetry.Prometheus.port": "must be between 0 and 65535, found 70000",
        f"{side}.health_checks.bind_address": "must not be empty",
        f"{side}.health_checks.bind_port": "must be between 0 and 65535, found -1",
        f"{side}.health_checks.live_path": (
            "expected a path starting with '/', without spaces or '?', found 'live'"
        ),
        f"{side}.health_checks.ready_path": (
            "expected a path starting with '/', without spaces or '?', found '/ready?x'"
        ),
    }


def test_live_and_ready_paths_differ(side: str) -> None:
    found = issues(side, health_checks={"live_path": "/health", "ready_path": "/health"})
    assert found == {f"{side}.health_checks.ready_path": "must differ from live_path ('/health')"}


def test_metrics_and_health_cannot_share_an_address(side: str) -> None:
    found = issues(
        side,
        telemetry={"Prometheus": {"host": "127.0.0.1", "port": 9090}},
        health_checks={"listener_enabled": True, "bind_address": "127.0.0.1", "bind_port": 9090},
    )
    assert found == {
        f"{side}.health_checks.bind_port": "127.0.0.1:9090 is also telemetry.Prometheus' address"
    }
    # Free ports (0) never clash, and a disabled listener binds nothing.
    load(
        side,
        telemetry={"Prometheus": {"host": "127.0.0.1", "port": 0}},
        health_checks={"listener_enabled": True, "bind_address": "127.0.0.1", "bind_port": 0},
    )
    load(
        side,
        telemetry={"Prometheus": {"host": "127.0.0.1", "port": 9090}},
        health_checks={"bind_address": "127.0.0.1", "bind_port": 9090},
    )
