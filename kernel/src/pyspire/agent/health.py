"""The agent's gRPC health service (``grpc.health.v1.Health``), served on the Workload API socket.

SPIRE's ``spire-agent healthcheck`` asks Health/Check on the Workload API socket; ours does the
same. The answer does not depend on who asks: Health is not a Workload API call, so no workload
attestation runs and a readiness probe (or an operator's shell) needs no registration entry.

The agent is SERVING when every readiness check passes — the same checks its HTTP ready path
answers from (:mod:`pyspire.agent.readiness`): it holds an unexpired SVID the server has not
refused, and its Workload API is open with a trust bundle to serve. Otherwise it is
NOT_SERVING; a health answer has no room for the reasons, so they are logged, once each time
they change (probes poll several times a second).

The whole agent answers under the service names ``""``, ``spire.agent`` and ``pyspire.agent``;
any other name gets NOT_FOUND, as the health checking protocol specifies. Watch is left
UNIMPLEMENTED (the generated base's answer): an open health stream would hold the socket's
shutdown for its grace period, and every client of ours and SPIRE's polls Check.
"""

from __future__ import annotations

__all__ = ["SERVICE_NAMES", "AgentHealthService"]

from collections.abc import Mapping

import structlog
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.proto.gen.grpc.health import v1 as health_pb
from pyspire.telemetry.health import HealthCheck, HealthChecks

SERVICE_NAMES: frozenset[str] = frozenset({"", "spire.agent", "pyspire.agent"})
"""Service names the agent answers for: the whole agent, under SPIRE's and our name."""

_ServingStatus = health_pb.HealthCheckResponseServingStatus
_SERVING = _ServingStatus(_ServingStatus.SERVING)
_NOT_SERVING = _ServingStatus(_ServingStatus.NOT_SERVING)

_log = structlog.get_logger("pyspire.agent.health")


class AgentHealthService(health_pb.HealthBase):
    """``grpc.health.v1.Health`` answering from the agent's readiness ``checks``."""

    def __init__(self, checks: Mapping[str, HealthCheck]) -> None:
        self._checks = HealthChecks(checks)
        self._last_problem: str | None = None

    async def problem(self) -> str | None:
        """Why the agent cannot serve identities now (every failing check); None when it can."""
        results = await self._checks.readiness()
        failing = [
            f"{name}: {result.message}" for name, result in results.items() if not result.ready
        ]
        return "; ".join(failing) if failing else None

    async def check(
        self, health_check_request: health_pb.HealthCheckRequest
    ) -> health_pb.HealthCheckResponse:
        if health_check_request.service not in SERVICE_NAMES:
            raise GRPCError(Status.NOT_FOUND, f"unknown service {health_check_request.service!r}")
        problem = await self.problem()
        if problem != self._last_problem:
            if problem is None:
                _log.info("agent is serving identities")
            else:
                _log.warning("agent is not serving identities", reason=problem)
            self._last_problem = problem
        return health_pb.HealthCheckResponse(status=_SERVING if problem is None else _NOT_SERVING)
