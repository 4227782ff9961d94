"""The agent's admin socket: the administration APIs, for the agent's own user only.

SPIRE's agent serves its Debug API and, for ``authorized_delegates``, its Delegated Identity
API (:mod:`pyspire.agent.admin.delegated`) on this socket. Whoever reaches it learns about the
agent, so it follows the rules of the server's admin socket (:mod:`pyspire.transport.unix`): its
directory belongs to the agent's user with mode 0700 (created so when missing; one that is not
safe is refused, never tightened), the socket is verified to be ours after bind, and connections
are bounded in number and time (:data:`ADMIN_API_LIMITS`). The endpoint takes any number of
services, each served with the call context and the malformed-request guard every listener has.
Closing first stops the services that have open streams (a service with a ``stop()`` method ends
them with UNAVAILABLE), lets calls in progress finish for a short grace period, stops the server
and removes the socket.
"""

from __future__ import annotations

__all__ = ["ADMIN_API_LIMITS", "DRAIN_TIMEOUT", "AdminEndpoint", "StreamingService"]

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import grpclib.server
import structlog

from pyspire.transport.calls import InFlight, WithCallContext
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.listener import GuardedListener, serve_unix
from pyspire.transport.unix import ADMIN_DIRECTORY_MODE, ADMIN_SOCKET_MODE, remove_socket
from pyspire_sdk.errors import PyspireError

ADMIN_API_LIMITS = ConnectionLimits(
    max_connections=256, first_request_timeout=10.0, idle_timeout=300.0
)
"""Connections the agent's admin socket keeps."""

DRAIN_TIMEOUT = 5.0
"""Seconds calls in progress get to finish when the endpoint closes."""

_log = structlog.get_logger("pyspire.agent.admin")


@runtime_checkable
class StreamingService(Protocol):
    """A service whose streams never end on their own: :meth:`stop` ends them."""

    def stop(self) -> None:
        """End every open stream (with UNAVAILABLE) and refuse new calls."""
        ...


class AdminEndpoint:
    """Serves ``services`` (gRPC services: a ``__mapping__`` each) on the admin socket at
    ``socket_path``.

    Use as an async context manager, or call :meth:`start` and :meth:`close`; ``close`` is safe
    to call more than once and after a failed start.
    """

    def __init__(
        self,
        socket_path: Path,
        services: Sequence[Any],
        *,
        limits: ConnectionLimits = ADMIN_API_LIMITS,
        drain_timeout: float = DRAIN_TIMEOUT,
    ) -> None:
        self.socket_path = Path(socket_path)
        self._services = tuple(services)
        self._limits = limits
        self._drain_timeout = drain_timeout
        self._in_flight = InFlight()
        self._server: grpclib.server.Server | None = None
        self._listener: GuardedListener | None = None

    @property
    def open_connections(self) -> int:
        """Connections open now, idle or not."""
        return self._listener.counts.total if self._listener is not None else 0

    async def start(self) -> None:
        """Listen on the socket; raises :class:`~pyspire.transport.unix.SocketPathError` when
        the path cannot be used."""
        if self._server is not None:
            raise PyspireError("agent admin endpoint is already started")
        server = grpclib.server.Server(
            [WithCallContext(service, None, self._in_flight) for service in self._services]
        )
        self._server = server
        try:
            self._listener = await serve_unix(
                server,
                self.socket_path,
                directory_mode=ADMIN_DIRECTORY_MODE,
                socket_mode=ADMIN_SOCKET_MODE,
                limits=self._limits,
                name="agent admin api",
            )
        except BaseException:
            await self.close()
            raise
        _log.info("agent admin api listening", socket_path=str(self.socket_path))

    async def close(self) -> None:
        """Let calls in progress finish (for a grace period), stop, remove the socket."""
        server = self._server
        if server is None:
            return
        self._server = None
        for service in self._services:
            if isinstance(service, StreamingService):
                service.stop()
        if not await self._in_flight.drain(self._drain_timeout):
            _log.warning("agent admin api calls cut short", in_flight=self._in_flight.count)
        with contextlib.suppress(RuntimeError):
            server.close()
            await server.wait_closed()
        if self._listener is not None:
            # Only a socket we bound is ours to remove: a refused path is left as it was.
            self._listener = None
            await asyncio.to_thread(remove_socket, self.socket_path)
            _log.info("agent admin api stopped", socket_path=str(self.socket_path))

    async def __aenter__(self) -> AdminEndpoint:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
