"""What a telemetry endpoint answers, apart from the HTTP server that serves it.

The endpoints (Prometheus metrics, health probes) answer a ``GET`` of a path given its headers;
they need nothing else of HTTP. Keeping that contract here, free of the server, lets the health
checks and the gRPC health service share :mod:`pyspire.telemetry.health` without importing the
HTTP server, which a process loads only when it serves an endpoint
(:mod:`pyspire.telemetry.endpoints`).
"""

from __future__ import annotations

__all__ = ["HttpHandler", "HttpResponse"]

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus


@dataclass(frozen=True)
class HttpResponse:
    """What a handler answers."""

    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


HttpHandler = Callable[[str, Mapping[str, str]], Awaitable[HttpResponse]]
"""Answers a ``GET`` (or ``HEAD``) of a path (without its query string), given the request's
headers (looked up by name in any case)."""
