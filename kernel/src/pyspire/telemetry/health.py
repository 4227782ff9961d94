"""SPIRE's HTTP health checks (``health_checks``): a liveness and a readiness path.

- **live** (``live_path``, ``/live``): 200 while the process runs. The answer is written by the
  process's own event loop, so getting one at all proves the loop is not stuck; a probe that
  times out or cannot connect is the failure.
- **ready** (``ready_path``, ``/ready``): 200 when every readiness check of the process passes
  (the server: its datastore answers, its CA has an active X.509 CA and JWT key, its listeners
  are up; the agent: it holds an unexpired SVID and its Workload API can answer), 500 with the
  reasons otherwise, as SPIRE answers. Checks run when asked, concurrently, each bounded by
  :data:`CHECK_TIMEOUT` (and probes by the endpoint's connection bound), so an answer is never
  stale.

Both answer JSON: ``{"live": true}``, and ``{"ready": <bool>, "checks": {"<name>": {"ready":
<bool>, "message": "<why not>"}}}``. Any other path is 404.
"""

from __future__ import annotations

__all__ = ["CHECK_TIMEOUT", "NOT_READY", "CheckResult", "HealthCheck", "HealthChecks"]

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

from pyspire.telemetry.handler import HttpResponse

CHECK_TIMEOUT = 5.0
"""Seconds one readiness check may take before it counts as failed."""

NOT_READY = HTTPStatus.INTERNAL_SERVER_ERROR
"""The status of a failed probe: SPIRE's (``pkg/common/health``)."""

_JSON = "application/json"


@dataclass(frozen=True)
class CheckResult:
    """What one readiness check found: ready or not, and why not."""

    ready: bool
    message: str = ""


HealthCheck = Callable[[], Awaitable[CheckResult]]
"""A readiness check; raising counts as not ready, the error being the reason."""


class HealthChecks:
    """The named readiness checks of a process and the HTTP answers of its probes."""

    def __init__(
        self,
        checks: Mapping[str, HealthCheck],
        *,
        live_path: str = "/live",
        ready_path: str = "/ready",
        check_timeout: float = CHECK_TIMEOUT,
    ) -> None:
        self._checks = dict(checks)
        self.live_path = live_path
        self.ready_path = ready_path
        self._timeout = check_timeout

    async def _run(self, check: HealthCheck) -> CheckResult:
        try:
            async with asyncio.timeout(self._timeout):
                return await check()
        except TimeoutError:
            return CheckResult(False, f"no answer within {self._timeout:g}s")
        except Exception as error:
            return CheckResult(False, str(error) or type(error).__name__)

    async def readiness(self) -> dict[str, CheckResult]:
        """Run every check, concurrently; each check's result by name."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[name]) for name in names))
        return dict(zip(names, results, strict=True))

    async def answer(self, path: str, headers: Mapping[str, str]) -> HttpResponse:
        """The HTTP answer to a probe of ``path`` (an HTTP handler)."""
        if path == self.live_path:
            return HttpResponse(HTTPStatus.OK, b'{"live": true}\n', _JSON)
        if path != self.ready_path:
            return HttpResponse(HTTPStatus.NOT_FOUND)
        results = await self.readiness()
        ready = all(result.ready for result in results.values())
        body = {
            "ready": ready,
            "checks": {
                name: {"ready": result.ready, "message": result.message}
                for name, result in results.items()
            },
        }
        return HttpResponse(
            HTTPStatus.OK if ready else NOT_READY,
            json.dumps(body, sort_keys=True).encode() + b"\n",
            _JSON,
        )
