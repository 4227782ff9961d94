"""When the agent is ready to serve (its ``health_checks`` ready path).

SPIRE's agent is ready when its own Workload API answers FetchX509Bundles with anything but
UNAVAILABLE. The same facts, read directly:

- ``agent``: it holds an SVID of its own that has not expired, and the server has not revoked
  it (banned or evicted);
- ``workload_api``: the Workload API socket is open (and no stop was asked for) and the agent
  has a trust bundle to serve.
"""

from __future__ import annotations

__all__ = ["AgentReadiness"]

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.node_identity import NodeIdentity
from pyspire.telemetry.health import CheckResult, HealthCheck
from pyspire_sdk.clock import Clock

_STARTING = CheckResult(False, "the agent is starting")


class AgentReadiness:
    """The agent's readiness checks over the parts the runtime hands it."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.identity: NodeIdentity | None = None
        self.cache: WorkloadCache | None = None
        self.serving = False
        """True while the Workload API socket is open and no stop was asked for."""

    def checks(self) -> dict[str, HealthCheck]:
        return {"agent": self._agent, "workload_api": self._workload_api}

    async def _agent(self) -> CheckResult:
        identity = self.identity
        if identity is None:
            return _STARTING
        if identity.revoked:
            return CheckResult(False, f"revoked by the server: {identity.revocation_reason}")
        if identity.svid.expires_at <= self._clock.now():
            return CheckResult(False, "the agent SVID has expired")
        return CheckResult(True)

    async def _workload_api(self) -> CheckResult:
        if not self.serving or self.cache is None:
            return CheckResult(False, "not serving")
        if self.cache.snapshot().bundle is None:
            return CheckResult(False, "no trust bundle yet")
        return CheckResult(True)
