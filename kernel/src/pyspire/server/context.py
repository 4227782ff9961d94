"""What the server's API services share: the subsystems the composition root built.

Services take this one object instead of a dozen arguments; tests build it from real parts (a
SQLite datastore in a temporary directory, an in-process key manager, a fake clock).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from pyspire.ca.manager import CaManager
from pyspire.registry.cache import RegistryCache
from pyspire.server.issuer import SvidIssuer
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire_sdk.clock import Clock
from pyspire_sdk.plugins.datastore import DataStore
from pyspire_sdk.plugins.node_attestor import ServerNodeAttestor
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

if TYPE_CHECKING:
    from pyspire.server.federation.refresh import FederatedBundles


@dataclass
class ServerContext:
    """The server's subsystems, as API services see them."""

    trust_domain: TrustDomain
    clock: Clock
    datastore: DataStore
    ca: CaManager
    registry: RegistryCache
    issuer: SvidIssuer
    node_attestors: Mapping[str, ServerNodeAttestor]
    started_at: datetime
    admin_ids: frozenset[SpiffeId] = field(default_factory=frozenset)
    server_svid_chain: tuple[bytes, ...] = ()
    """The server's current SVID chain (for Debug.GetInfo); kept current by the runtime."""
    metrics: PrometheusMetrics = field(default_factory=lambda: PrometheusMetrics("pyspire_server"))
    """Where services record what they measure (the process's registry)."""
    federation: FederatedBundles | None = None
    """The refresh loop of federated bundles, once the runtime started it."""
    trust_epoch: int = 0
    """Advanced whenever the trust bundle or the CA changes (:meth:`trust_changed`): what was
    concluded about a caller under an earlier epoch is worked out again."""

    def trust_changed(self, *_: object) -> None:
        """Note that the trust bundle or the CA changed (a bundle feed or CA listener)."""
        self.trust_epoch += 1

    @property
    def server_id(self) -> SpiffeId:
        return SpiffeId.from_segments(self.trust_domain, "spire", "server")
