"""Fetching a federated trust domain's bundle from its bundle endpoint, as the SPIFFE
federation standard says.

One bounded HTTPS GET (total and connect timeouts, a cap on the body, no proxy from the
environment, no redirect followed). ``https_web`` verifies the endpoint against the Web PKI
trust store and the URL's host; ``https_spiffe`` verifies the endpoint's certificate chain
against the trust domain's last known bundle and requires its X509-SVID to carry the
relationship's endpoint SPIFFE ID. The body must be a SPIFFE bundle document
(:meth:`~pyspire_sdk.bundle.Bundle.from_spiffe_json` applies the standard's checks); anything
else raises, and the caller keeps the bundle it had.
"""

from __future__ import annotations

__all__ = ["FETCH_TIMEOUT", "MAX_BUNDLE_BYTES", "BundleFetcher", "spiffe_client_context"]

import ssl
from collections.abc import Callable

from pyspire.transport.tls import spiffe_id_of
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError, UnavailableError
from pyspire_sdk.model import FederationProfile, FederationRelationship

MAX_BUNDLE_BYTES = 1 << 20
"""The largest bundle document read (a bundle with hundreds of authorities is far smaller)."""
FETCH_TIMEOUT = 10.0
"""Seconds one fetch may take, connecting included."""


def spiffe_client_context(trusted: Bundle) -> ssl.SSLContext:
    """A client context accepting servers whose chain leads to ``trusted``'s X.509
    authorities; the name reached is not checked (the SPIFFE ID is, after the handshake)."""
    if not trusted.x509_authorities:
        raise UnavailableError(f"the bundle of {trusted.trust_domain} has no X.509 authorities")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.load_verify_locations(
        cadata=b"".join(authority.der for authority in trusted.x509_authorities)
    )
    return context


class BundleFetcher:
    """Fetches bundles; ``web_context`` makes the ``https_web`` trust store (the system's by
    default)."""

    def __init__(self, web_context: Callable[[], ssl.SSLContext] = ssl.create_default_context):
        self._web_context = web_context

    async def fetch(self, relationship: FederationRelationship, trusted: Bundle | None) -> Bundle:
        """The bundle the endpoint serves now. :class:`UnavailableError` when the endpoint
        cannot be reached or answers otherwise than 200, :class:`PermissionDeniedError` when it
        is not who the relationship says, :class:`InvalidArgumentError` for a bad bundle."""
        expected = relationship.endpoint_spiffe_id
        leaves: list[bytes] = []
        if relationship.profile is FederationProfile.HTTPS_SPIFFE:
            if trusted is None:
                raise UnavailableError(
                    f"no bundle of {relationship.trust_domain} to authenticate its endpoint "
                    "with: set one first (bundle set)"
                )
            context = spiffe_client_context(trusted)
            context.sslobject_class = _recording(leaves)
        else:
            context = self._web_context()
        body = await self._get(relationship.bundle_endpoint_url, context)
        if expected is not None:
            if not leaves:
                raise PermissionDeniedError("the endpoint presented no certificate")
            if spiffe_id_of(leaves[-1]) != expected:
                raise PermissionDeniedError(
                    f"the endpoint presented {spiffe_id_of(leaves[-1])}, expected {expected}"
                )
        try:
            return Bundle.from_spiffe_json(relationship.trust_domain, body)
        except (InvalidArgumentError, UnicodeDecodeError, ValueError) as error:
            raise InvalidArgumentError(f"refused the bundle served: {error}") from None

    async def _get(self, url: str, context: ssl.SSLContext) -> bytes:
        # aiohttp is imported when a bundle is first fetched: a server that federates with no
        # one does not pay for the import at start (tests/bench/bench_import_time.py).
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT, connect=FETCH_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
                session.get(url, ssl=context, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise UnavailableError(f"GET {url}: answered {response.status}")
                body = await response.content.read(MAX_BUNDLE_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise UnavailableError(f"GET {url}: {error or type(error).__name__}") from None
        if len(body) > MAX_BUNDLE_BYTES:
            raise InvalidArgumentError(f"GET {url}: bundle larger than {MAX_BUNDLE_BYTES} bytes")
        return body


def _recording(leaves: list[bytes]) -> type[ssl.SSLObject]:
    """An SSL object class that appends the peer's leaf certificate (DER) to ``leaves`` once
    the handshake is done: aiohttp does not show a response's TLS connection, so the SPIFFE ID
    of the endpoint is read where the handshake happens."""

    class Recording(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            leaf = self.getpeercert(binary_form=True)
            if leaf:
                leaves.append(leaf)

    return Recording
