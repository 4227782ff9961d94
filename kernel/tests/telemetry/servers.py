"""A real server runtime with its telemetry endpoints, and HTTP clients that read them the way
Prometheus and probes do (http.client, and prometheus_client's own text parser)."""

from __future__ import annotations

import asyncio
import http.client
import json
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pyspire.catalog import Discovery
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.server.runtime import ServerRuntime
from pyspire.transport.limits import ConnectionLimits

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def server_document(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    """A server on loopback (free ports everywhere) with the given extra settings."""
    return {
        "server": {
            "trust_domain": "example.org",
            "data_dir": str(tmp_path / "data"),
            "bind_address": "127.0.0.1",
            "bind_port": 0,
            "socket_path": str(tmp_path / "admin" / "api.sock"),
            **settings,
            "plugins": {
                "datastore": {"sqlite": {}},
                "key_manager": {"disk": {}},
                "node_attestor": {"join_token": {}},
            },
        }
    }


TELEMETRY = {
    "telemetry": {"Prometheus": {"host": "127.0.0.1", "port": 0}},
    "health_checks": {"listener_enabled": True, "bind_address": "127.0.0.1", "bind_port": 0},
}
"""Settings serving metrics and health checks on free loopback ports."""


async def start_server(
    tmp_path: Path,
    discovery: Discovery,
    *,
    tcp_limits: ConnectionLimits | None = None,
    admin_limits: ConnectionLimits | None = None,
    **settings: Any,
) -> tuple[ServerRuntime, asyncio.Task[None]]:
    loaded = load_document(SERVER_SCHEMA, server_document(tmp_path, **settings))
    limits: dict[str, ConnectionLimits] = {}
    if tcp_limits is not None:
        limits["tcp_limits"] = tcp_limits
    if admin_limits is not None:
        limits["admin_limits"] = admin_limits
    runtime = ServerRuntime(loaded, discovery, **limits)
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "the server did not become ready"
    return runtime, task


async def stop_server(runtime: ServerRuntime, task: asyncio.Task[None]) -> None:
    if not task.done():
        runtime.stop()
    await asyncio.wait_for(task, timeout=30)


def _get(port: int, path: str, accept: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Accept": accept} if accept else {})
        response = connection.getresponse()
        return response.status, response.headers.get("Content-Type", ""), response.read()
    finally:
        connection.close()


async def get(port: int, path: str, accept: str = "") -> tuple[int, str, bytes]:
    """GET over real HTTP (http.client in a thread, as an outside client): the status, content
    type and body."""
    return await asyncio.to_thread(_get, port, path, accept)


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """GET over real HTTP: the status and body."""
    status, _, body = await get(port, path)
    return status, body


async def refused(port: int) -> bool:
    """Whether nothing listens on the loopback ``port`` any more."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """A health probe: the status and the JSON body."""
    status, body = await http_get(port, path)
    return status, json.loads(body)


async def scrape(port: int) -> Samples:
    """Every sample the Prometheus endpoint serves, parsed by prometheus_client's parser."""
    status, content_type, body = await get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
