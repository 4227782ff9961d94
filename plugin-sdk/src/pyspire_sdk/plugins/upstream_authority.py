"""Upstream authorities: another CA that signs this server's intermediate CA.

Without an upstream authority the server's X.509 CA is self-signed and is the trust bundle's
root. With one, the server sends a CSR for each new CA key to the upstream, which returns the
signed CA certificate with its chain and the upstream's roots; the roots, not the server's own
CA, go into the bundle. Mirrors SPIRE's ``UpstreamAuthority`` (``MintX509CAAndSubscribe``,
``PublishJWTKeyAndSubscribe``, ``SubscribeToLocalBundle``) with the streams split into a call
and a subscription.
"""

from __future__ import annotations

__all__ = [
    "UpstreamAuthority",
    "UpstreamBundle",
    "UpstreamServerSession",
    "UpstreamServers",
    "UpstreamX509CA",
    "pyspire_upstream_authorities",
]

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugin import Plugin, PluginRegistration, hookspec


def _check_ders(field: str, values: tuple[bytes, ...], *, required: bool) -> None:
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
        _check_ders("ca_chain", self.ca_chain, required=True)
        _check_ders("upstream_roots", self.upstream_roots, required=True)

    @property
    def ca_certificate(self) -> bytes:
        """The server's new CA certificate (DER): the first of ``ca_chain``."""
        return self.ca_chain[0]


@dataclass(frozen=True, slots=True)
class UpstreamBundle:
    """The upstream's current trust material, as delivered by a bundle subscription.

    ``x509_roots`` replace the upstream roots in the bundle (DER, non-empty).
    ``tainted_x509_roots`` are those of ``x509_roots`` the upstream marks tainted (SPIRE's
    ``X509Certificate.tainted`` on the roots an upstream authority reports): an operator
    upstream suspects their key, so a server whose CA chains to one of them replaces that CA at
    once (see :meth:`UpstreamAuthority.subscribe_to_bundle_updates`). ``jwt_authorities`` is the
    upstream's full JWT key set when the upstream manages JWT keys, else ``()``.
    """

    x509_roots: tuple[bytes, ...]
    jwt_authorities: tuple[JwtAuthority, ...] = ()
    tainted_x509_roots: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check_ders("x509_roots", self.x509_roots, required=True)
        for index, der in enumerate(self.tainted_x509_roots):
            if der not in self.x509_roots:
                raise InvalidArgumentError(f"tainted_x509_roots[{index}] is not one of x509_roots")

    @classmethod
    def of(cls, bundle: Bundle) -> UpstreamBundle:
        """The trust material of an upstream server's ``bundle``: its X.509 authorities (those
        marked tainted as such) and its JWT authorities."""
        return cls(
            x509_roots=tuple(a.der for a in bundle.x509_authorities),
            jwt_authorities=bundle.jwt_authorities,
            tainted_x509_roots=tuple(a.der for a in bundle.x509_authorities if a.tainted),
        )


@runtime_checkable
class UpstreamAuthority(Plugin, Protocol):
    """Signs the server's CA certificates and shares the upstream's roots.

    Errors: :class:`~pyspire_sdk.errors.UnavailableError` when the upstream cannot be reached
    (the server retries and keeps its current CA meanwhile);
    :class:`~pyspire_sdk.errors.InvalidArgumentError` for a CSR the upstream refuses to sign;
    :class:`~pyspire_sdk.errors.PermissionDeniedError` when the upstream denies this server.
    """

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        """Sign a CA certificate for the key in ``csr_der`` (a PKCS#10 CSR, DER).

        The certificate carries the CSR's public key and SPIFFE ID (URI SAN
        ``spiffe://<trust domain>``), ``basicConstraints CA:true`` and keyCertSign. Its
        lifetime is ``preferred_ttl`` when the upstream allows it and shorter otherwise (never
        past the upstream's own expiry); the host reads the real lifetime from the certificate.
        """
        ...

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        """Publish the server's new JWT signing key upstream.

        Returns the upstream's complete JWT key set after publishing (including ``key``), which
        the host puts into the bundle. An upstream that does not manage JWT keys returns ``[]``
        and the host keeps its own keys in the bundle as without an upstream.
        """
        ...

    def subscribe_to_bundle_updates(self) -> AsyncIterator[UpstreamBundle]:
        """Yield the upstream's trust material each time it changes, taints included.

        The first item, if any, is the current state; each later one replaces the previous.
        An upstream whose roots never change returns an iterator that ends at once without
        yielding ("no updates"); the host then relies on ``mint_x509_ca``'s
        ``upstream_roots``. When a root the host holds untainted arrives tainted, the host
        acts as SPIRE's CA manager: if its active X.509 CA chains to that root it prepares (or
        takes the prepared) CA from the upstream and activates it at once, then marks the root
        tainted in its own bundle, so its agents re-mint from the new CA and servers below it
        do the same; a root the host holds tainted that the upstream no longer lists is revoked
        from its bundle. An iterator that yields stays open until the host stops consuming
        it (``aclose``) or the plugin is closed. Raising
        :class:`~pyspire_sdk.errors.UnavailableError` ends the subscription; the host
        subscribes again after a back-off.
        """
        ...


@runtime_checkable
class UpstreamServerSession(Protocol):
    """Calls to an upstream server of the same trust domain, for a nested (downstream) server.

    The downstream server is a workload of the upstream: its entry there is marked
    ``downstream`` and it calls with that workload X509-SVID over mutual TLS, verifying the
    upstream server with the trust domain's bundle (both from its local agent's Workload API,
    given by :meth:`use_credentials` before the first call and whenever they change). Errors as
    :class:`UpstreamAuthority`'s: :class:`~pyspire_sdk.errors.UnavailableError` when the
    upstream cannot be reached, :class:`~pyspire_sdk.errors.PermissionDeniedError` when it
    refuses the caller (no downstream entry for its SVID).
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


@hookspec
def pyspire_upstream_authorities() -> list[PluginRegistration[Any, UpstreamAuthority]]:  # type: ignore[empty-body]
    """Return the upstream authorities this plugin module provides.

    A server uses at most one. Return ``[]`` when the module provides none. The hook is
    synchronous and must not do I/O.
    """
