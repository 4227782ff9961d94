"""When the server is ready to serve (its ``health_checks`` ready path), as SPIRE decides it.

Three checks, filled in by the composition root as the server starts:

- ``datastore``: the datastore answers a read of our bundle (SPIRE's ``catalog.datastore``);
- ``ca``: an X.509 CA and a JWT key are active and the CA has not expired (``server.ca``);
- ``listeners``: the agent and admin listeners are up, and no stop was asked for (``server``).

The first two are also what the gRPC health service (:mod:`pyspire.server.api.health`) calls
SERVING.
"""

from __future__ import annotations

__all__ = ["ServerReadiness", "ca_ready", "datastore_ready"]

from pyspire.ca.manager import CaManager, CaNotReadyError
from pyspire.telemetry.health import CheckResult, HealthCheck
from pyspire_sdk.clock import Clock
from pyspire_sdk.plugins.datastore import DataStore
from pyspire_sdk.spiffeid import TrustDomain

_STARTING = CheckResult(False, "the server is starting")


def ca_ready(ca: CaManager, clock: Clock) -> CheckResult:
    """Whether the CA can sign: an active X.509 CA that has not expired and a JWT key."""
    try:
        x509_ca, _ = ca.x509_ca, ca.jwt_key
    except CaNotReadyError as error:
        return CheckResult(False, str(error))
    if x509_ca.not_after <= clock.now():
        return CheckResult(False, "the active X.509 CA has expired")
    return CheckResult(True)


async def datastore_ready(datastore: DataStore, trust_domain: TrustDomain) -> CheckResult:
    """Whether the datastore answers a read (of our bundle); raises what the datastore raises.
    The caller bounds how long it may take."""
    await datastore.get_bundle(trust_domain)
    return CheckResult(True)


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
        return await datastore_ready(self.datastore, self._trust_domain)

    async def _ca(self) -> CheckResult:
        return _STARTING if self.ca is None else ca_ready(self.ca, self._clock)

    async def _listeners(self) -> CheckResult:
        return CheckResult(True) if self.serving else CheckResult(False, "not serving")
