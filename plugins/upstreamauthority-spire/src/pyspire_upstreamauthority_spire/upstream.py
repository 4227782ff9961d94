"""The ``spire`` upstream authority, as SPIRE's ``upstreamauthority/spire`` (nested servers).

A downstream server is a workload of its upstream server, in the same trust domain: the agent
on its node (an agent of the upstream) gives it an X509-SVID for an entry marked
``downstream``. Before each call the plugin fetches that SVID and the trust domain's bundle from
the agent's Workload API (py-spiffe, in a worker thread; the SVID rotates, so the current one is
always used) and hands them to the host's ``upstream_servers`` session, which keeps the wire:

- ``mint_x509_ca`` checks the CSR with SPIRE's rules (``validate_ca_csr``), then calls
  ``SVID.NewDownstreamX509CA``: the upstream signs the server's CA with its own CA and returns
  the chain and its X.509 roots;
- ``publish_jwt_key`` is ``Bundle.PublishJWTAuthority``: the key joins the upstream's bundle and
  the upstream's JWT authorities come back, so JWT-SVIDs of every tier validate everywhere;
- ``subscribe_to_bundle_updates`` reads the upstream's bundle (``Bundle.GetBundle``) every
  :data:`BUNDLE_POLL_INTERVAL` and yields its roots (with the upstream's taint marks) and JWT
  keys whenever they change: a root tainted upstream makes this server replace a CA that
  chains to it at once (SPIRE's tainted upstream authorities).
"""

from __future__ import annotations

__all__ = ["BUNDLE_POLL_INTERVAL", "WORKLOAD_API_TIMEOUT", "SpireUpstreamAuthority"]

import asyncio
import warnings
from collections.abc import AsyncIterator
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    # py-spiffe names DSA in a type alias of its JWT bundles, which cryptography >= 51 warns
    # about at import; every server that has this plugin installed imports it at start, and
    # nothing here uses DSA, so the warning would only be noise on every start.
    warnings.filterwarnings("ignore", "DSA is deprecated", CryptographyDeprecationWarning)
    from spiffe import TrustDomain as SpiffeTrustDomain
    from spiffe import WorkloadApiClient
    from spiffe.errors import PySpiffeError

from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import ConfigError, ConfigIssue, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.upstream_authority import (
    UpstreamBundle,
    UpstreamServerSession,
    UpstreamX509CA,
)
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.upstream_ca import validate_ca_csr
from pyspire_upstreamauthority_spire.config import SpireUpstreamConfig

BUNDLE_POLL_INTERVAL = timedelta(seconds=5)
"""How often the upstream's bundle is read while the server subscribes to it."""

WORKLOAD_API_TIMEOUT = 10.0
"""Seconds a Workload API fetch may take before the call fails as unavailable."""

_Credentials = tuple[list[bytes], PrivateKeyTypes, Bundle]


def check_config(config: SpireUpstreamConfig) -> None:
    """ConfigError naming each setting that cannot work."""
    issues = []
    if not config.server_address.strip():
        issues.append(ConfigIssue("server_address", "is empty"))
    if not 0 < config.server_port < 65536:
        issues.append(ConfigIssue("server_port", f"{config.server_port} is not a TCP port"))
    if not config.workload_api_socket.is_absolute():
        issues.append(
            ConfigIssue("workload_api_socket", f"{config.workload_api_socket} is not absolute")
        )
    if issues:
        raise ConfigError(issues)


class SpireUpstreamAuthority:
    """See the module documentation."""

    def __init__(self) -> None:
        self._session: UpstreamServerSession | None = None
        self._socket = ""
        self._trust_domain = TrustDomain("unconfigured.invalid")
        self._clock: Clock | None = None

    async def configure(self, config: SpireUpstreamConfig, host: HostServices) -> None:
        check_config(config)
        if host.upstream_servers is None:
            raise PluginError("the host offers no upstream_servers service to reach the upstream")
        self._trust_domain = host.trust_domain
        self._clock = host.clock
        self._socket = str(config.workload_api_socket)
        self._session = host.upstream_servers.connect(config.server_address, config.server_port)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _fetch(self) -> _Credentials:
        """Blocking: this server's X509-SVID and the trust domain's bundle from the agent (a
        new connection each time: the agent may start after the server, or restart)."""
        try:
            with WorkloadApiClient(
                socket_path=f"unix://{self._socket}", default_timeout=WORKLOAD_API_TIMEOUT
            ) as workload:
                context = workload.fetch_x509_context()
            svid = context.default_svid
            x509_bundle = context.x509_bundle_set.get_bundle_for_trust_domain(
                SpiffeTrustDomain(self._trust_domain.name)
            )
        except PySpiffeError as error:
            raise UnavailableError(
                f"cannot fetch this server's X509-SVID from the workload api at "
                f"{self._socket}: {error}"
            ) from None
        if svid is None or x509_bundle is None or not x509_bundle.x509_authorities:
            raise UnavailableError(
                f"the workload api at {self._socket} gave no X509-SVID and bundle of "
                f"trust domain {self._trust_domain.name!r}"
            )
        der = serialization.Encoding.DER
        bundle = Bundle(
            trust_domain=self._trust_domain,
            x509_authorities=tuple(
                X509Authority(der=c.public_bytes(der)) for c in x509_bundle.x509_authorities
            ),
        )
        return [c.public_bytes(der) for c in svid.cert_chain], svid.private_key, bundle

    async def _ready_session(self) -> UpstreamServerSession:
        if self._session is None:
            raise UnavailableError("the spire upstream authority is not configured")
        chain, key, bundle = await asyncio.to_thread(self._fetch)
        self._session.use_credentials(chain, key, bundle)
        return self._session

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        # The upstream reads only the CSR's key; SPIRE's CSR rules are checked here so a CSR
        # that is not for this trust domain is refused before anything is signed.
        await asyncio.to_thread(validate_ca_csr, csr_der, self._trust_domain)
        session = await self._ready_session()
        return await session.new_downstream_x509_ca(csr_der, preferred_ttl)

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        session = await self._ready_session()
        return await session.publish_jwt_authority(key)

    async def subscribe_to_bundle_updates(self) -> AsyncIterator[UpstreamBundle]:
        last: UpstreamBundle | None = None
        while True:
            session = await self._ready_session()
            bundle = await session.fetch_bundle()
            current = UpstreamBundle.of(bundle)
            if current != last:
                last = current
                yield current
            assert self._clock is not None
            await self._clock.sleep(BUNDLE_POLL_INTERVAL.total_seconds())
