"""What an upstream returns for a CSR, and the host service that reaches an upstream server.

The names are public in :mod:`pyspire_sdk.plugins.upstream_authority`; they are defined here,
below :mod:`pyspire_sdk.plugin`, because :class:`~pyspire_sdk.plugin.HostServices` carries the
``upstream_servers`` host service, and the module of a plugin type imports
:mod:`pyspire_sdk.plugin`, never the other way round.
"""

from __future__ import annotations

__all__ = ["UpstreamServerSession", "UpstreamServers", "UpstreamX509CA", "check_ders"]

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import InvalidArgumentError


def check_ders(field: str, values: tuple[bytes, ...], *, required: bool) -> None:
    """Raise :class:`InvalidArgumentError` naming ``field`` when ``values`` holds something
    that is not a DER certificate (or, when ``required``, nothing at all)."""
    if required and not values:
        raise InvalidArgumentError(f"{field} is empty: at least one certificate is required")
    for index, value in enumerate(values):
        if not isinstance(value, bytes) or not value:
            raise InvalidArgumentError(f"{field}[{index}] is not a non-empty DER certificate")


@dataclass(frozen=True, slots=True)
class UpstreamX509CA:
    """What an upstream returns for one CSR.

    ``ca_chain`` is DER, leaf first: the server's new CA certificate (signed for the CSR's key),
    then any intermediates up to, but not including, a root. ``upstream_roots`` are the DER
    root certificates that verify the chain; they become the trust bundle's X.509 authorities.
    Both must be non-empty.
    """

    ca_chain: tuple[bytes, ...]
    upstream_roots: tuple[bytes, ...]

    def __post_init__(self) -> None:
        check_ders("ca_chain", self.ca_chain, required=True)
        check_ders("upstream_roots", self.upstream_roots, required=True)

    @property
    def ca_certificate(self) -> bytes:
        """The server's new CA certificate (DER): the first of ``ca_chain``."""
        return self.ca_chain[0]


@runtime_checkable
class UpstreamServerSession(Protocol):
    """Calls to an upstream server of the same trust domain, for a nested (downstream) server.

    The downstream server is a workload of the upstream: its entry there is marked
    ``downstream`` and it calls with that workload X509-SVID over mutual TLS, verifying the
    upstream server with the trust domain's bundle (both from its local agent's Workload API,
    given by :meth:`use_credentials` before the first call and whenever they change). Errors as
    :class:`~pyspire_sdk.plugins.upstream_authority.UpstreamAuthority`'s:
    :class:`~pyspire_sdk.errors.UnavailableError` when the upstream cannot be reached,
    :class:`~pyspire_sdk.errors.PermissionDeniedError` when it refuses the caller (no
    downstream entry for its SVID).
    """

    def use_credentials(
        self, chain: Sequence[bytes], private_key: PrivateKeyTypes, bundle: Bundle
    ) -> None:
        """Present ``chain`` (DER, leaf first) with ``private_key`` and verify the upstream
        server with ``bundle`` on the calls that follow."""
        ...

    async def new_downstream_x509_ca(
        self, csr_der: bytes, preferred_ttl: timedelta
    ) -> UpstreamX509CA:
        """``SVID.NewDownstreamX509CA``: an intermediate CA for the CSR's key, with the
        upstream's X.509 roots."""
        ...

    async def publish_jwt_authority(self, key: JwtAuthority) -> list[JwtAuthority]:
        """``Bundle.PublishJWTAuthority``: the upstream's JWT authorities after adding ``key``."""
        ...

    async def fetch_bundle(self) -> Bundle:
        """``Bundle.GetBundle``: the upstream's current bundle of the trust domain."""
        ...

    async def close(self) -> None:
        """Close the connections; later calls fail."""
        ...


@runtime_checkable
class UpstreamServers(Protocol):
    """Host service for upstream authorities (``HostServices.upstream_servers``): sessions with
    an upstream server of this trust domain. The host keeps the wire (gRPC and mutual TLS);
    the plugin decides when to call and with which credentials."""

    def connect(self, address: str, port: int) -> UpstreamServerSession:
        """A session with the upstream server at ``address``:``port`` (no I/O until a call)."""
        ...
