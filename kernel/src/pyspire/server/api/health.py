"""The gRPC health service (``grpc.health.v1.Health``) of the server, on the admin socket.

The server is SERVING when it can do its job: its CA has an active, unexpired X.509 authority
(it can sign SVIDs) and the datastore answers a read within a timeout. Otherwise it is
NOT_SERVING. The overall server (service ``""``) and its names ``spire.server`` and
``pyspire.server`` are known; any other service name gets NOT_FOUND from Check and
SERVICE_UNKNOWN from Watch, as the gRPC health checking protocol specifies.

Watch sends the status at once and again whenever it changes, checking every ``poll_interval``
seconds of the server's clock; the stream lasts until the client cancels it.
"""

from __future__ import annotations

__all__ = ["SERVICE_NAMES", "HealthService"]

import asyncio
from collections.abc import AsyncIterator

import structlog
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.proto.gen.grpc.health import v1 as health_pb
from pyspire.server.context import ServerContext
from pyspire.server.readiness import ca_ready, datastore_ready
from pyspire.telemetry.health import CheckResult
from pyspire_sdk.errors import InvalidArgumentError

SERVICE_NAMES: frozenset[str] = frozenset({"", "spire.server", "pyspire.server"})
"""Service names the server answers for: the whole server, under SPIRE's and our name."""

_ServingStatus = health_pb.HealthCheckResponseServingStatus
_SERVING = _ServingStatus(_ServingStatus.SERVING)
_NOT_SERVING = _ServingStatus(_ServingStatus.NOT_SERVING)
_SERVICE_UNKNOWN = _ServingStatus(_ServingStatus.SERVICE_UNKNOWN)

_log = structlog.get_logger("pyspire.server.api.health")


class HealthService(health_pb.HealthBase):
    """``grpc.health.v1.Health`` over a :class:`ServerContext`.

    ``poll_interval`` is how often Watch re-checks (seconds of ``context.clock``);
    ``datastore_timeout`` is how long the datastore may take to answer (real seconds: it bounds
    I/O, not server time).
    """

    def __init__(
        self,
        context: ServerContext,
        *,
        poll_interval: float = 5.0,
        datastore_timeout: float = 5.0,
    ) -> None:
        if poll_interval <= 0:
            raise InvalidArgumentError(f"poll_interval {poll_interval} must be positive")
        if datastore_timeout <= 0:
            raise InvalidArgumentError(f"datastore_timeout {datastore_timeout} must be positive")
        self._context = context
        self._poll_interval = poll_interval
        self._datastore_timeout = datastore_timeout

    async def serving_status(self) -> health_pb.HealthCheckResponseServingStatus:
        """SERVING or NOT_SERVING for the server as a whole, checked now."""
        context = self._context
        found = ca_ready(context.ca, context.clock)
        if found.ready:
            try:
                async with asyncio.timeout(self._datastore_timeout):
                    found = await datastore_ready(context.datastore, context.trust_domain)
            except TimeoutError:
                found = CheckResult(False, "the datastore did not answer in time")
            except Exception as error:  # any failure of the datastore plugin means "not serving"
                found = CheckResult(False, f"the datastore failed: {error}")
        if not found.ready:
            _log.warning("not serving", reason=found.message)
            return _NOT_SERVING
        return _SERVING

    async def check(
        self, health_check_request: health_pb.HealthCheckRequest
    ) -> health_pb.HealthCheckResponse:
        if health_check_request.service not in SERVICE_NAMES:
            raise GRPCError(Status.NOT_FOUND, f"unknown service {health_check_request.service!r}")
        return health_pb.HealthCheckResponse(status=await self.serving_status())

    async def watch(
        self, health_check_request: health_pb.HealthCheckRequest
    ) -> AsyncIterator[health_pb.HealthCheckResponse]:
        if health_check_request.service not in SERVICE_NAMES:
            yield health_pb.HealthCheckResponse(status=_SERVICE_UNKNOWN)
            # The protocol keeps the call open: the service could become known later. Ours
            # never will, so the stream just waits for the client to leave.
            await asyncio.Event().wait()
            return
        last: health_pb.HealthCheckResponseServingStatus | None = None
        while True:
            status = await self.serving_status()
            if status != last:
                yield health_pb.HealthCheckResponse(status=status)
                last = status
            await self._context.clock.sleep(self._poll_interval)
