"""The telemetry endpoints a process serves, as its configuration asks: the Prometheus endpoint
(``telemetry.Prometheus``) and the health endpoints (``health_checks``).

Both are HTTP servers (:mod:`pyspire.telemetry.http`) on the process's event loop, opened before
anything else starts (so ``/live`` answers and ``/ready`` says "not yet" during start-up) and
closed after everything else stopped. The HTTP server is imported only when one of them is
configured: aiohttp adds a quarter of a second to a process's start, which one serving neither
should not pay (``tests/bench/bench_import_time.py``).
"""

from __future__ import annotations

__all__ = ["TelemetryEndpoints", "prometheus_handler", "serve_telemetry"]

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from pyspire.telemetry.handler import HttpHandler, HttpResponse
from pyspire.telemetry.health import HealthCheck, HealthChecks
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire.telemetry.settings import HealthChecksConfig, TelemetryConfig
from pyspire_sdk.errors import PyspireError

if TYPE_CHECKING:
    from pyspire.telemetry.http import HttpServer


@dataclass(frozen=True)
class TelemetryEndpoints:
    """The endpoints a process serves (None: not configured)."""

    prometheus: HttpServer | None = None
    health: HttpServer | None = None


def prometheus_handler(metrics: PrometheusMetrics) -> HttpHandler:
    """Answers every path with the metrics, in the format the scraper accepts (SPIRE's
    Prometheus endpoint answers on any path too)."""

    async def answer(path: str, headers: Mapping[str, str]) -> HttpResponse:
        body, content_type = metrics.exposition(headers.get("accept", ""))
        return HttpResponse(HTTPStatus.OK, body, content_type)

    return answer


async def _listen(
    stack: contextlib.AsyncExitStack, key: str, handler: HttpHandler, host: str, port: int
) -> HttpServer:
    """Serve ``handler`` until ``stack`` closes; a bind failure names the setting ``key``."""
    from pyspire.telemetry.http import serve_http

    try:
        return await stack.enter_async_context(serve_http(handler, host, port, name=key))
    except OSError as error:
        # asyncio's message repeats the address; the errno's own words are the reason.
        reason = (os.strerror(error.errno) if error.errno else str(error)).lower()
        raise PyspireError(f"{key}: cannot listen on {host}:{port}: {reason}") from None


@contextlib.asynccontextmanager
async def serve_telemetry(
    telemetry: TelemetryConfig,
    health_checks: HealthChecksConfig,
    *,
    metrics: PrometheusMetrics,
    checks: Mapping[str, HealthCheck],
) -> AsyncIterator[TelemetryEndpoints]:
    """Serve what ``telemetry`` and ``health_checks`` ask for until the block ends, and close
    every endpoint before returning.

    ``checks`` are the process's readiness checks. Raises :class:`PyspireError` naming the
    setting when an address cannot be bound.
    """
    async with contextlib.AsyncExitStack() as stack:
        prometheus: HttpServer | None = None
        health: HttpServer | None = None
        if telemetry.Prometheus is not None:
            config = telemetry.Prometheus
            prometheus = await _listen(
                stack, "telemetry.Prometheus", prometheus_handler(metrics), config.host, config.port
            )
        if health_checks.listener_enabled:
            probes = HealthChecks(
                checks, live_path=health_checks.live_path, ready_path=health_checks.ready_path
            )
            health = await _listen(
                stack,
                "health_checks",
                probes.answer,
                health_checks.bind_address,
                health_checks.bind_port,
            )
        yield TelemetryEndpoints(prometheus=prometheus, health=health)
