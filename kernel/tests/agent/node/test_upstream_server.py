"""A downstream server's calls to a real upstream server over mutual TLS: the caller's X509-SVID
must match an entry marked ``downstream`` (SPIRE's ``CallerDownstreamEntries``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.server.upstream_server import UpstreamServerClient, UpstreamServers
from pyspire_sdk.bundle import JwtAuthority
from pyspire_sdk.errors import PermissionDeniedError
from pyspire_sdk.plugins.upstream_authority import UpstreamServerSession
from pyspire_sdk.spiffeid import SpiffeId

from .conftest import TD, RunningServer, workload_entry

NODE = SpiffeId.from_path(TD, "/spire/agent/join_token/node")
_T = TypeVar("_T")


async def workload_svid(
    server: RunningServer, spiffe_id: SpiffeId
) -> tuple[ec.EllipticCurvePrivateKey, list[bytes]]:
    """An X509-SVID for ``spiffe_id`` minted through the admin socket."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    async with server.admin() as channel:
        reply = await svid_pb.SvidStub(channel).mint_x509_svid(svid_pb.MintX509SvidRequest(csr=csr))
    return key, list(reply.svid.cert_chain)


async def client_for(server: RunningServer, spiffe_id: SpiffeId) -> UpstreamServerClient:
    key, chain = await workload_svid(server, spiffe_id)
    client = UpstreamServers(TD).connect("127.0.0.1", server.port)
    assert isinstance(client, UpstreamServerSession)
    client.use_credentials(chain, key, await server.bundle())
    return client


async def once_entries_are_seen(call: Callable[[], Awaitable[_T]]) -> _T:
    """``call()``, retried while the server's registry has not yet seen a new entry."""
    for _ in range(200):
        try:
            return await call()
        except PermissionDeniedError:
            await asyncio.sleep(0.05)
    return await call()


def ca_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "x")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


async def test_downstream_server_gets_a_ca_and_publishes_jwt_keys(server: RunningServer) -> None:
    await server.create_entries(workload_entry("/downstream", NODE, downstream=True))
    client = await client_for(server, SpiffeId.from_path(TD, "/downstream"))
    try:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        minted = await once_entries_are_seen(
            lambda: client.new_downstream_x509_ca(ca_csr(ca_key), timedelta(minutes=10))
        )
        bundle = await server.bundle()
        assert list(minted.upstream_roots) == [a.der for a in bundle.x509_authorities]
        ca = x509.load_der_x509_certificate(minted.ca_certificate)
        assert ca.public_key() == ca_key.public_key()
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        san = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
        lifetime = ca.not_valid_after_utc - datetime.now(UTC)
        assert timedelta(minutes=9) < lifetime <= timedelta(minutes=10)
        chain = [x509.load_der_x509_certificate(der) for der in minted.ca_chain]
        roots = [x509.load_der_x509_certificate(der) for der in minted.upstream_roots]
        for child, parent in zip(chain, [*chain[1:], roots[0]], strict=True):
            child.verify_directly_issued_by(parent)

        public = ca_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        keys = await client.publish_jwt_authority(
            JwtAuthority(key_id="downstream-1", public_key=public, expires_at=expires)
        )
        assert JwtAuthority("downstream-1", public, expires) in keys
        assert [k.key_id for k in keys] == [
            k.key_id for k in (await server.bundle()).jwt_authorities
        ]
    finally:
        await client.close()


async def test_a_workload_not_marked_downstream_is_refused(server: RunningServer) -> None:
    await server.create_entries(workload_entry("/plain", NODE))
    client = await client_for(server, SpiffeId.from_path(TD, "/plain"))
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(PermissionDeniedError):
            await client.new_downstream_x509_ca(ca_csr(key), timedelta(minutes=10))
        with pytest.raises(PermissionDeniedError):
            await client.publish_jwt_authority(JwtAuthority("k", b"x"))
    finally:
        await client.close()
