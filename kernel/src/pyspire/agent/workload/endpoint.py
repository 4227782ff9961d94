"""The Workload API's unix socket: where local workloads reach the agent.

The socket's directory is made world-readable (0755) and the socket world-writable (0777): any
local process may ask, and workload attestation decides what it gets. The directory must be the
agent's own and writable by no one else (see :mod:`pyspire.transport.unix`), and connections are
bounded in number and time (:data:`WORKLOAD_API_LIMITS`). Closing ends open streams
with UNAVAILABLE (a stream ending with OK would look like a broken stream to clients), lets
unary calls in progress finish for a short grace period, stops the server and removes the
socket.
"""

from __future__ import annotations

__all__ = [
    "DRAIN_TIMEOUT",
    "SOCKET_DIRECTORY_MODE",
    "SOCKET_MODE",
    "WORKLOAD_API_LIMITS",
    "WorkloadEndpoint",
]

import asyncio
import contextlib
from pathlib import Path
from types import TracebackType

import grpclib.server
import structlog
from structlog.typing import FilteringBoundLogger

from pyspire.agent.workload.sds import SecretDiscoveryService
from pyspire.agent.workload.service import WorkloadApiService
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire.transport.calls import InFlight, WithCallContext
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.listener import GuardedListener, serve_unix
from pyspire.transport.unix import remove_socket
from pyspire_sdk.errors import PyspireError

SOCKET_DIRECTORY_MODE = 0o755
"""Mode of the directory holding the Workload API socket."""

SOCKET_MODE = 0o777
"""Mode of the Workload API socket: every local process may connect."""

DRAIN_TIMEOUT = 5.0
"""Seconds calls in progress get to finish when the endpoint closes."""

WORKLOAD_API_LIMITS = ConnectionLimits(
    max_connections=1024, first_request_timeout=10.0, idle_timeout=300.0
)
"""Connections the Workload API keeps: an open stream is a call in progress, never idle."""


class WorkloadEndpoint:
    """Serves a :class:`WorkloadApiService` on a unix socket, with Envoy's Secret Discovery
    Service (``sds``) and ``health`` (a ``grpc.health.v1.Health`` servable) beside it when
    given.

    Use as an async context manager, or call :meth:`start` and :meth:`close`. ``close`` is
    safe to call more than once and after a failed start.
    """

    def __init__(
        self,
        socket_path: Path,
        service: WorkloadApiService,
        *,
        health: object | None = None,
        sds: SecretDiscoveryService | None = None,
        drain_timeout: float = DRAIN_TIMEOUT,
        limits: ConnectionLimits = WORKLOAD_API_LIMITS,
        logger: FilteringBoundLogger | None = None,
        metrics: PrometheusMetrics | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self._service = service
        self._health = health
        self._sds = sds
        self._drain_timeout = drain_timeout
        self._limits = limits
        self._metrics = metrics
        self._in_flight = InFlight()
        self._server: grpclib.server.Server | None = None
        self._listener: GuardedListener | None = None
        self._log: FilteringBoundLogger = (
            logger if logger is not None else structlog.get_logger("pyspire.agent.workload")
        )

    @property
    def in_flight(self) -> int:
        """Calls being handled now (streams included)."""
        return self._in_flight.count

    @property
    def open_connections(self) -> int:
        """Connections open now, idle or not."""
        return self._listener.counts.total if self._listener is not None else 0

    async def start(self) -> None:
        """Listen on the socket; raises :class:`~pyspire.transport.unix.SocketPathError` when
        the path cannot be used."""
        if self._server is not None:
            raise PyspireError("workload api endpoint is already started")
        servables = [
            WithCallContext(
                servable,
                self._service.gate,
                self._in_flight,
                request_timeout=self._limits.request_timeout,
                metrics=self._metrics,
            )
            # SDS and grpc.health.v1 beside the Workload API, as SPIRE serves them (the gate's
            # security header is the Workload API's alone).
            for servable in (self._service, self._sds, self._health)
            if servable is not None
        ]
        server = grpclib.server.Server(servables)
        self._server = server
        try:
            self._listener = await serve_unix(
                server,
                self.socket_path,
                directory_mode=SOCKET_DIRECTORY_MODE,
                socket_mode=SOCKET_MODE,
                limits=self._limits,
                name="workload api",
            )
        except BaseException:
            await self.close()
            raise
        self._log.info("workload api listening", socket_path=str(self.socket_path))

    async def close(self) -> None:
        """End streams with UNAVAILABLE, let unary calls finish, stop, remove the socket."""
        server = self._server
        if server is None:
            return
        self._server = None
        self._service.stop()
        if self._sds is not None:
            self._sds.stop()
        if not await self._in_flight.drain(self._drain_timeout):
            self._log.warning("workload api calls cut short", in_flight=self._in_flight.count)
        with contextlib.suppress(RuntimeError):
            server.close()
            await server.wait_closed()
        if self._listener is not None:
            # Only a socket we bound is ours to remove: a refused path is left as it was.
            self._listener = None
            await asyncio.to_thread(remove_socket, self.socket_path)
        self._log.info("workload api stopped", socket_path=str(self.socket_path))

    async def __aenter__(self) -> WorkloadEndpoint:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
