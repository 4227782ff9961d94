"""A workload that serves mutual TLS with its SPIFFE identity and admits one client SPIFFE ID.

    SPIFFE_ENDPOINT_SOCKET=unix:///tmp/pyspire-agent/public/api.sock \\
        python examples/quickstart/workload_server.py --allow spiffe://example.org/client

It asks the Workload API (through py-spiffe's ``X509Source``) for its X509-SVID and trust
bundle, listens on 127.0.0.1 (``--port``, 0 picks a free port; the chosen port is printed), and
for each connection: completes a TLS handshake that requires a client certificate chaining to
the bundle, reads the client's SPIFFE ID from the certificate's URI SAN, and answers
``hello <client ID>, this is <server ID>`` when that ID was given with ``--allow``, or closes
the connection without a word otherwise. It stops after ``--count`` connections.

Hostname checking plays no part: SPIFFE peers are authenticated by their SPIFFE ID, checked
after the handshake. The TLS context is rebuilt whenever the agent rotates the SVID or changes
the bundle (an ``ssl.SSLContext`` can add trust anchors but never forget one).
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from spiffe import SpiffeId, X509Source
from spiffe.errors import PySpiffeError

SOURCE_TIMEOUT = 10.0
"""Seconds to wait for the first answer of the Workload API."""

IO_TIMEOUT = 10.0
"""Seconds a connection may take to shake hands and be answered."""


def peer_spiffe_id(connection: ssl.SSLSocket) -> SpiffeId:
    """The SPIFFE ID in the peer certificate's URI SAN; a SPIFFE leaf has exactly one."""
    der = connection.getpeercert(binary_form=True)
    if der is None:
        raise ValueError("the peer sent no certificate")
    certificate = x509.load_der_x509_certificate(der)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise ValueError("the peer certificate has no subject alternative name") from None
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ValueError(f"the peer certificate has {len(uris)} URI SANs, a SPIFFE ID needs one")
    return SpiffeId(uris[0])


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by this user only, from the first byte."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(data)


class TlsCredentials:
    """The server's TLS context, made from the source's current SVID and bundles."""

    def __init__(self, source: X509Source, directory: Path) -> None:
        self._source = source
        self._directory = directory
        self._fingerprint: tuple[bytes, ...] = ()
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        """A context for the current SVID and bundles, new when either changed."""
        svid = self._source.get_x509_context().default_svid
        authorities = [
            authority
            for bundle in self._source.get_x509_context().x509_bundle_set.bundles
            for authority in bundle.x509_authorities
        ]
        der = serialization.Encoding.DER
        fingerprint = tuple(c.public_bytes(der) for c in [*svid.cert_chain, *authorities])
        if self._context is None or fingerprint != self._fingerprint:
            self._context = self._build(svid.cert_chain, svid.private_key, authorities)
            self._fingerprint = fingerprint
        return self._context

    def _build(
        self,
        chain: list[x509.Certificate],
        key: PrivateKeyTypes,
        authorities: list[x509.Certificate],
    ) -> ssl.SSLContext:
        pem = serialization.Encoding.PEM
        chain_path = self._directory / "svid.pem"
        key_path = self._directory / "svid.key"
        bundle_path = self._directory / "bundle.pem"
        chain_path.write_bytes(b"".join(c.public_bytes(pem) for c in chain))
        write_private(
            key_path,
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )
        bundle_path.write_bytes(b"".join(c.public_bytes(pem) for c in authorities))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(chain_path, key_path)
        context.load_verify_locations(cafile=bundle_path)
        return context


def serve_one(
    listener: socket.socket, credentials: TlsCredentials, me: SpiffeId, allowed: set[str]
) -> None:
    """Accept one connection, authenticate the client, answer it or refuse it."""
    raw, address = listener.accept()
    raw.settimeout(IO_TIMEOUT)
    try:
        with credentials.context().wrap_socket(raw, server_side=True) as connection:
            client = peer_spiffe_id(connection)
            if str(client) not in allowed:
                print(f"server: refused {client}: not an allowed client", flush=True)
                return
            connection.sendall(f"hello {client}, this is {me}\n".encode())
            print(f"server: answered {client}", flush=True)
    except (OSError, ValueError, PySpiffeError) as error:
        print(f"server: connection from {address or 'a local peer'} failed: {error}", flush=True)
    finally:
        raw.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--allow",
        action="append",
        required=True,
        metavar="SPIFFE_ID",
        help="a client SPIFFE ID to answer (repeatable)",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any)")
    parser.add_argument("--count", type=int, default=1, help="connections to handle, then stop")
    args = parser.parse_args(argv)
    try:
        allowed = {str(SpiffeId(text)) for text in args.allow}
    except PySpiffeError as error:
        parser.error(f"invalid --allow: {error}")
    try:
        source = X509Source(timeout_in_seconds=SOURCE_TIMEOUT)
    except PySpiffeError as error:
        print(f"server: no identity from the Workload API: {error}", file=sys.stderr)
        return 1
    with source, tempfile.TemporaryDirectory(prefix="workload-server-") as folder:
        me = source.get_x509_context().default_svid.spiffe_id
        print(f"server: my identity is {me}", flush=True)
        credentials = TlsCredentials(source, Path(folder))
        with socket.create_server(("127.0.0.1", args.port)) as listener:
            print(f"server: listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
            for _ in range(args.count):
                serve_one(listener, credentials, me, allowed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
