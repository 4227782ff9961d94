"""When the server is ready to serve (its ``health_checks`` ready path), as SPIRE decides it.

Three checks, filled in by the composition root as the server starts:

- ``datastore``: the datastore answers a read of our bundle (SPIRE's ``catalog.datastore``);
- ``ca``: an X.509 CA and a JWT key are active and the CA has not expired (``server.ca``);
- ``listeners``: the agent and admin listeners are up, and no stop was asked for (``server``).
"""

from __future__ import annotations

__all__ = ["ServerReadiness"]

from pyspire.ca.manager import CaManager, CaNotReadyError
from pyspire.telemetry.health import CheckResult, HealthCheck
from pyspire_sdk.clock import Clock
from pyspire_sdk.plugins.datastore import DataStore
from pyspire_sdk.spiffeid import TrustDomain

_STARTING = CheckResult(False, "the server is starting")


class ServerReadiness:
    """The server's readiness checks over the parts the runtime hands it."""

    def __init__(self, trust_domain: TrustDomain, clock: Clock) -> None:
        self._trust_domain = trust_domain
        self._clock = clock
        self.datastore: DataStore | None = None
        self.ca: CaManager | None = None
        self.serving = False
        """True while the listeners are up and no stop was asked for."""

    def checks(self) -> dict[str, HealthCheck]:
        return {"datastore": self._datastore, "ca": self._ca, "listeners": self._listeners}

    async def _datastore(self) -> CheckResult:
        if self.datastore is None:
            return _STARTING
        await self.datastore.get_bundle(self._trust_domain)
        return CheckResult(True)

    async def _ca(self) -> CheckResult:
        if self.ca is None:
            return _STARTING
        try:
            x509_ca, _ = self.ca.x509_ca, self.ca.jwt_key
        except CaNotReadyError as error:
            return CheckResult(False, str(error))
        if x509_ca.not_after <= self._clock.now():
            return CheckResult(False, "the active X.509 CA has expired")
        return CheckResult(True)

    async def _listeners(self) -> CheckResult:
        return CheckResult(True) if self.serving else CheckResult(False, "not serving")
