"""The agent's gRPC health service (``grpc.health.v1.Health``), served on the Workload API socket.

SPIRE's ``spire-agent healthcheck`` asks Health/Check on the Workload API socket; ours does the
same. The answer does not depend on who asks: Health is not a Workload API call, so no workload
attestation runs and a readiness probe (or an operator's shell) needs no registration entry.

The agent is SERVING when it can hand out identities: its own SVID is unexpired and was not
refused by the server, and it holds its trust domain's bundle (which it gets by syncing with
the server). Otherwise it is NOT_SERVING; a health answer has no room for the reason, so the
reason is logged, once each time it changes (probes poll several times a second).

The whole agent answers under the service names ``""``, ``spire.agent`` and ``pyspire.agent``;
any other name gets NOT_FOUND, as the health checking protocol specifies. Watch is left
UNIMPLEMENTED (the generated base's answer): an open health stream would hold the socket's
shutdown for its grace period, and every client of ours and SPIRE's polls Check.
"""

from __future__ import annotations

__all__ = ["SERVICE_NAMES", "AgentHealthService", "HealthCheck", "SvidHolder", "health_problem"]

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import structlog
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.identities import Snapshot
from pyspire.proto.gen.grpc.health import v1 as health_pb
from pyspire_sdk.model import X509Svid

SERVICE_NAMES: frozenset[str] = frozenset({"", "spire.agent", "pyspire.agent"})
"""Service names the agent answers for: the whole agent, under SPIRE's and our name."""

HealthCheck = Callable[[], "str | None"]
"""Says why the agent cannot serve identities now, or None when it can."""

_ServingStatus = health_pb.HealthCheckResponseServingStatus
_SERVING = _ServingStatus(_ServingStatus.SERVING)
_NOT_SERVING = _ServingStatus(_ServingStatus.NOT_SERVING)

_log = structlog.get_logger("pyspire.agent.health")


class SvidHolder(Protocol):
    """What health needs to know of the agent's own identity
    (:class:`~pyspire.agent.node_identity.NodeIdentity` is one)."""

    @property
    def svid(self) -> X509Svid: ...

    @property
    def revoked(self) -> bool: ...

    @property
    def revocation_reason(self) -> str: ...


def health_problem(identity: SvidHolder, snapshot: Snapshot, now: datetime) -> str | None:
    """Why an agent with ``identity`` and cache ``snapshot`` cannot serve identities at
    ``now``; None when it can."""
    if identity.revoked:
        return f"the server refused this agent: {identity.revocation_reason}"
    if now >= identity.svid.expires_at:
        return "the agent SVID has expired and could not be renewed yet"
    if snapshot.bundle is None:
        return "no trust bundle yet: no sync with the server has succeeded"
    return None


class AgentHealthService(health_pb.HealthBase):
    """``grpc.health.v1.Health`` answering from ``check`` (see the module documentation)."""

    def __init__(self, check: HealthCheck) -> None:
        self._check = check
        self._last_problem: str | None = None

    async def check(
        self, health_check_request: health_pb.HealthCheckRequest
    ) -> health_pb.HealthCheckResponse:
        if health_check_request.service not in SERVICE_NAMES:
            raise GRPCError(Status.NOT_FOUND, f"unknown service {health_check_request.service!r}")
        problem = self._check()
        if problem != self._last_problem:
            if problem is None:
                _log.info("agent is serving identities")
            else:
                _log.warning("agent is not serving identities", reason=problem)
            self._last_problem = problem
        return health_pb.HealthCheckResponse(status=_SERVING if problem is None else _NOT_SERVING)
