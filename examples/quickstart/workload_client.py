"""A workload that calls a mutual-TLS server and talks to it only if it has the expected ID.

    SPIFFE_ENDPOINT_SOCKET=unix:///tmp/pyspire-agent/public/api.sock \\
        python examples/quickstart/workload_client.py --port 8443 \\
        --server-id spiffe://example.org/server

It asks the Workload API (through py-spiffe's ``X509Source``) for its X509-SVID and trust
bundle, connects to 127.0.0.1:``--port``, presents its SVID, and requires the server's
certificate to chain to the bundle. After the handshake it reads the server's SPIFFE ID from
the certificate's URI SAN: when it is not ``--server-id`` the client hangs up without sending
or reading anything and exits 1; otherwise it prints the server's one-line answer and exits 0.
A server that refuses this client's identity closes the connection, which also exits 1.

Hostname checking is off: SPIFFE peers are authenticated by their SPIFFE ID, not a DNS name.
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
from spiffe import SpiffeId, X509Source
from spiffe.errors import PySpiffeError

SOURCE_TIMEOUT = 10.0
"""Seconds to wait for the first answer of the Workload API."""

IO_TIMEOUT = 10.0
"""Seconds the connection, the handshake and the answer may take."""


class RefusedError(Exception):
    """The exchange did not happen; the message says why."""


def peer_spiffe_id(connection: ssl.SSLSocket) -> SpiffeId:
    """The SPIFFE ID in the peer certificate's URI SAN; a SPIFFE leaf has exactly one."""
    der = connection.getpeercert(binary_form=True)
    if der is None:
        raise RefusedError("the server sent no certificate")
    certificate = x509.load_der_x509_certificate(der)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise RefusedError("the server certificate has no subject alternative name") from None
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise RefusedError(
            f"the server certificate has {len(uris)} URI SANs, a SPIFFE ID needs one"
        )
    return SpiffeId(uris[0])


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by this user only, from the first byte."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(data)


def tls_context(source: X509Source, directory: Path) -> ssl.SSLContext:
    """A client context presenting the source's SVID and trusting only its bundles."""
    pem = serialization.Encoding.PEM
    svid = source.get_x509_context().default_svid
    chain_path = directory / "svid.pem"
    key_path = directory / "svid.key"
    bundle_path = directory / "bundle.pem"
    chain_path.write_bytes(b"".join(c.public_bytes(pem) for c in svid.cert_chain))
    write_private(
        key_path,
        svid.private_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    bundle_path.write_bytes(
        b"".join(
            authority.public_bytes(pem)
            for bundle in source.get_x509_context().x509_bundle_set.bundles
            for authority in bundle.x509_authorities
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(chain_path, key_path)
    context.load_verify_locations(cafile=bundle_path)
    return context


def exchange(context: ssl.SSLContext, host: str, port: int, server_id: SpiffeId) -> str:
    """Connect, check the server's SPIFFE ID, and return its answer."""
    try:
        with (
            socket.create_connection((host, port), timeout=IO_TIMEOUT) as raw,
            context.wrap_socket(raw) as connection,
        ):
            peer = peer_spiffe_id(connection)
            if peer != server_id:
                raise RefusedError(f"the server is {peer}, expected {server_id}")
            answer = connection.makefile("rb").readline()
    except ssl.SSLError as error:
        raise RefusedError(f"the TLS handshake failed: {error.reason or error}") from None
    except OSError as error:
        raise RefusedError(f"cannot talk to {host}:{port}: {error}") from None
    if not answer:
        raise RefusedError("the server closed the connection without answering (refused our ID?)")
    return answer.decode("utf-8", "replace").rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server-id", required=True, metavar="SPIFFE_ID", help="the SPIFFE ID the server must have"
    )
    parser.add_argument("--port", type=int, required=True, help="the server's TCP port")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address")
    args = parser.parse_args(argv)
    try:
        server_id = SpiffeId(args.server_id)
    except PySpiffeError as error:
        parser.error(f"invalid --server-id: {error}")
    try:
        source = X509Source(timeout_in_seconds=SOURCE_TIMEOUT)
    except PySpiffeError as error:
        print(f"client: no identity from the Workload API: {error}", file=sys.stderr)
        return 1
    with source, tempfile.TemporaryDirectory(prefix="workload-client-") as folder:
        print(
            f"client: my identity is {source.get_x509_context().default_svid.spiffe_id}", flush=True
        )
        try:
            answer = exchange(tls_context(source, Path(folder)), args.host, args.port, server_id)
        except RefusedError as error:
            print(f"client: refused: {error}", file=sys.stderr)
            return 1
    print(f"client: the server said: {answer}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
