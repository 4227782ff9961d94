"""TLS contexts for SPIFFE mutual TLS between agents and the server.

Python's ``ssl`` cannot forget a trust anchor, so every change of SVID or bundle builds a new
context. The server keeps one listening context whose SNI callback moves each new connection to
the newest context; connections already open keep the context they started with. SPIFFE peer
checks (the URI SAN) happen after the handshake on the peer's DER certificate; hostname checking
is off, since SPIFFE identities are not host names.

The server API issues no TLS session tickets (see :func:`_no_resumption`): agents never resume a
session, and each ticket cost the server a third of a mutual-TLS handshake.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError
from pyspire_sdk.spiffeid import SpiffeId

ALPN = ["h2"]


def _checked(chain_der: Sequence[bytes], field: str) -> None:
    """Refuse a certificate that does not parse, naming ``field``: OpenSSL would otherwise
    stop reading DER at the first bad one, silently when it looks like the end of the data."""
    for der in chain_der:
        try:
            x509.load_der_x509_certificate(der)
        except ValueError:
            raise InvalidArgumentError(f"{field} holds an invalid certificate") from None


def _identity_pem(chain_der: Sequence[bytes], key: PrivateKeyTypes) -> bytes:
    """The key then the chain (leaf first), PEM: one file, which ``load_cert_chain`` reads both
    from."""
    _checked(chain_der, "the TLS certificate chain")
    chain = "".join(ssl.DER_cert_to_PEM_cert(der) for der in chain_der).encode("ascii")
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem_key + chain


_IN_MEMORY_FILES = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
"""Linux: the identity is loaded from an anonymous file in memory, which no other process can
open by name and which never reaches a disk."""


def _load_identity(
    context: ssl.SSLContext, chain_der: Sequence[bytes], key: PrivateKeyTypes
) -> None:
    """Present ``chain_der`` with ``key``. ``load_cert_chain`` reads only files: the chain and
    key go to an anonymous in-memory file where the system has them (Linux), else to a file in
    a private directory (mode 0700, the file 0600) that is deleted after loading."""
    pem = _identity_pem(chain_der, key)
    try:
        if not (_IN_MEMORY_FILES and _loaded_from_memory(context, pem)):
            _load_from_private_directory(context, pem)
    except ssl.SSLError as error:
        raise InvalidArgumentError(
            f"the TLS certificate chain and key do not load: {error.reason or error}"
        ) from None


def _loaded_from_memory(context: ssl.SSLContext, pem: bytes) -> bool:
    """Load ``pem`` from an anonymous in-memory file; False when the system refuses to make
    one (a sandbox that forbids ``memfd_create``)."""
    try:
        descriptor = os.memfd_create("pyspire-tls", os.MFD_CLOEXEC)
    except OSError:
        return False
    try:
        written = 0
        while written < len(pem):
            written += os.write(descriptor, pem[written:])
        context.load_cert_chain(f"/proc/self/fd/{descriptor}")
    finally:
        os.close(descriptor)
    return True


def _load_from_private_directory(context: ssl.SSLContext, pem: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="pyspire-tls-") as folder:
        os.chmod(folder, 0o700)
        path = Path(folder) / "svid.pem"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
        context.load_cert_chain(path)


def _trust(context: ssl.SSLContext, bundle_der: Sequence[bytes]) -> None:
    if not bundle_der:
        raise InvalidArgumentError("the trust bundle has no X.509 authorities")
    _checked(bundle_der, "the trust bundle")
    # OpenSSL reads concatenated DER certificates as they are: no PEM round trip.
    context.load_verify_locations(cadata=b"".join(bundle_der))


def _no_resumption(context: ssl.SSLContext) -> None:
    """Issue no session tickets: OpenSSL otherwise sends two after every TLS 1.3 handshake,
    each an encrypted copy of the session with the client's certificate in it (about 500 us of
    server CPU per mutual-TLS handshake, up to 100 us per anonymous one), for clients that never
    resume. A resumed session would also carry a client identity past the certificate
    checks of a new handshake (an expired SVID, an authority since removed from the bundle)."""
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET


def build_server_context(
    chain_der: Sequence[bytes], private_key: PrivateKeyTypes, bundle_der: Sequence[bytes]
) -> ssl.SSLContext:
    """A server context presenting ``chain_der`` and accepting (not requiring) client SVIDs
    that chain to ``bundle_der``; agents attest before they have one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    context.verify_mode = ssl.CERT_OPTIONAL
    _no_resumption(context)
    _load_identity(context, chain_der, private_key)
    _trust(context, bundle_der)
    return context


def build_client_context(
    bundle_der: Sequence[bytes],
    chain_der: Sequence[bytes] = (),
    private_key: PrivateKeyTypes | None = None,
) -> ssl.SSLContext:
    """A client context trusting ``bundle_der``, presenting an SVID when one is given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    _trust(context, bundle_der)
    if chain_der:
        if private_key is None:
            raise InvalidArgumentError("a client SVID needs its private key")
        _load_identity(context, chain_der, private_key)
    return context


def build_web_server_context(
    chain_der: Sequence[bytes], private_key: PrivateKeyTypes
) -> ssl.SSLContext:
    """A plain HTTPS server context presenting ``chain_der``: no client certificate asked
    for (a SPIFFE bundle endpoint must not require client authentication), HTTP/1.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    _load_identity(context, chain_der, private_key)
    return context


class RotatingServerContext:
    """The listening context of a TLS server whose SVID and bundle change over time."""

    def __init__(self) -> None:
        self._current: ssl.SSLContext | None = None
        self.listening = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.listening.minimum_version = ssl.TLSVersion.TLSv1_2
        self.listening.set_alpn_protocols(ALPN)
        # OpenSSL keeps the verify mode of the context a connection started with, even when
        # the SNI callback moves it to another context: ask for client certificates here.
        self.listening.verify_mode = ssl.CERT_OPTIONAL
        # So it keeps the listening context's session tickets (none).
        _no_resumption(self.listening)
        self.listening.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if self._current is not None:
            connection.context = self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    async def update(
        self, chain_der: Sequence[bytes], private_key: PrivateKeyTypes, bundle_der: Sequence[bytes]
    ) -> None:
        """Serve new connections with this SVID and bundle from now on."""
        context = await asyncio.to_thread(build_server_context, chain_der, private_key, bundle_der)
        self._current = context


def spiffe_id_of(certificate_der: bytes) -> SpiffeId:
    """The SPIFFE ID of an X509-SVID: its one URI SAN. PermissionDeniedError otherwise."""
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        raise PermissionDeniedError("peer certificate has no URI SAN") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise PermissionDeniedError(
            f"peer certificate must have exactly one URI SAN, found {len(uris)}"
        )
    try:
        return SpiffeId.parse(uris[0])
    except InvalidArgumentError as error:
        raise PermissionDeniedError(f"peer certificate: {error}") from None
