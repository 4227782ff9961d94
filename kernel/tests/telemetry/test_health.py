"""Health probes over real HTTP: live while the process answers, ready only while every check
passes, with the reasons when not."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pyspire.telemetry.health import NOT_READY, CheckResult, HealthChecks
from pyspire.telemetry.http import HttpServer, serve_http


class Switch:
    """A readiness check the test turns on and off."""

    def __init__(self, ready: bool) -> None:
        self.ready = ready

    async def __call__(self) -> CheckResult:
        return CheckResult(self.ready, "" if self.ready else "switched off")


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET ``path`` the way a probe does (urllib, a real HTTP client): status and JSON body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, json.loads(body) if body.startswith(b"{") else {}


async def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(get, port, path)


@pytest.fixture
async def switches() -> dict[str, Switch]:
    return {"datastore": Switch(True), "ca": Switch(False)}


@pytest.fixture
async def endpoint(switches: dict[str, Switch]) -> AsyncIterator[HttpServer]:
    checks = HealthChecks(switches, live_path="/alive", ready_path="/ready", check_timeout=0.2)
    async with serve_http(checks.answer, "127.0.0.1", 0, name="health") as server:
        yield server


async def test_live_answers_while_the_process_runs(endpoint: HttpServer) -> None:
    assert await probe(endpoint.port, "/alive") == (200, {"live": True})


async def test_ready_follows_the_checks(endpoint: HttpServer, switches: dict[str, Switch]) -> None:
    status, body = await probe(endpoint.port, "/ready")
    assert status == NOT_READY.value == 500
    assert body == {
        "ready": False,
        "checks": {
            "ca": {"ready": False, "message": "switched off"},
            "datastore": {"ready": True, "message": ""},
        },
    }
    switches["ca"].ready = True
    status, body = await probe(endpoint.port, "/ready")
    assert (status, body["ready"]) == (200, True)
    switches["datastore"].ready = False
    status, body = await probe(endpoint.port, "/ready")
    assert (status, body["checks"]["datastore"]["ready"]) == (500, False)


async def test_a_failing_or_stuck_check_is_not_ready_with_its_reason() -> None:
    async def broken() -> CheckResult:
        raise ConnectionError("database is unreachable")

    async def stuck() -> CheckResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    checks = HealthChecks({"broken": broken, "stuck": stuck}, check_timeout=0.2)
    async with serve_http(checks.answer, "127.0.0.1", 0, name="health") as server:
        status, body = await probe(server.port, "/ready")
        live = await probe(server.port, "/live")
    assert status == 500
    assert body["checks"] == {
        "broken": {"ready": False, "message": "database is unreachable"},
        "stuck": {"ready": False, "message": "no answer within 0.2s"},
    }
    assert live == (200, {"live": True})


async def test_other_paths_are_not_found(endpoint: HttpServer) -> None:
    assert (await probe(endpoint.port, "/live"))[0] == 404
    assert (await probe(endpoint.port, "/"))[0] == 404
