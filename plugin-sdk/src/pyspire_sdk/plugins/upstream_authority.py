"""Upstream authorities: another CA that signs this server's intermediate CA.

Without an upstream authority the server's X.509 CA is self-signed and is the trust bundle's
root. With one, the server sends a CSR for each new CA key to the upstream, which returns the
signed CA certificate with its chain and the upstream's roots; the roots, not the server's own
CA, go into the bundle. Mirrors SPIRE's ``UpstreamAuthority`` (``MintX509CAAndSubscribe``,
``PublishJWTKeyAndSubscribe``, ``SubscribeToLocalBundle``) with the streams split into a call
and a subscription.

``UpstreamX509CA`` and the ``upstream_servers`` host service (``UpstreamServers``,
``UpstreamServerSession``) are public here and defined below :mod:`pyspire_sdk.plugin`, whose
:class:`~pyspire_sdk.plugin.HostServices` carries that host service.
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

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from pyspire_sdk._upstream import UpstreamServers, UpstreamServerSession, UpstreamX509CA, check_ders
from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugin import Plugin, PluginRegistration, hookspec


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
        check_ders("x509_roots", self.x509_roots, required=True)
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


@hookspec
def pyspire_upstream_authorities() -> list[PluginRegistration[Any, UpstreamAuthority]]:  # type: ignore[empty-body]
    """Return the upstream authorities this plugin module provides.

    A server uses at most one. Return ``[]`` when the module provides none. The hook is
    synchronous and must not do I/O.
    """
