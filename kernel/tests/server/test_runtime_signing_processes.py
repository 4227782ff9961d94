"""A server with ``signing_processes``: an agent attests (its SVID signed in the server process)
and gets workload SVIDs (CSRs checked and leaves signed in the workers) over real TLS; a stop
ends every worker."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from pyspire_nodeattestor_join_token import AgentJoinTokenAttestor, AgentJoinTokenConfig

from pyspire.agent.client import ServerClient
from pyspire.agent.server_api import SvidRequest
from pyspire.catalog import Discovery
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.server.runtime import ServerRuntime
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.host import make_host_services

from .test_runtime import admin_bundle, server_document, stop

TD = TrustDomain("example.org")


def csr_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


@pytest.fixture(scope="module")
def discovery() -> Discovery:
    return Discovery.load()


async def start_with_workers(
    tmp_path: Path, discovery: Discovery
) -> tuple[ServerRuntime, asyncio.Task[None]]:
    document = server_document(tmp_path)
    document["server"]["signing_processes"] = 2  # type: ignore[index]
    runtime = ServerRuntime(load_document(SERVER_SCHEMA, document), discovery)
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "the server did not become ready"
    return runtime, task


async def admin_setup(runtime: ServerRuntime) -> tuple[str, str]:
    """A join token, and an entry for the agent it attests; both made over the admin socket."""
    assert runtime.listening is not None
    channel = Channel(path=str(runtime.listening.socket_path))
    try:
        token = await agent_pb.AgentStub(channel).create_join_token(
            agent_pb.CreateJoinTokenRequest(ttl=600, token="signing-workers")
        )
        created = await entry_pb.EntryStub(channel).batch_create_entry(
            entry_pb.BatchCreateEntryRequest(
                entries=[
                    pb.Entry(
                        spiffe_id=pb.Spiffeid(trust_domain="example.org", path="/workload"),
                        parent_id=pb.Spiffeid(
                            trust_domain="example.org",
                            path=f"/spire/agent/join_token/{token.value}",
                        ),
                        selectors=[pb.Selector(type="unix", value="uid:1000")],
                    )
                ]
            )
        )
    finally:
        channel.close()
    return token.value, created.results[0].entry.id


async def test_a_server_with_signing_workers_issues_through_both_paths(
    tmp_path: Path, discovery: Discovery
) -> None:
    runtime, task = await start_with_workers(tmp_path, discovery)
    try:
        workers = {child.pid for child in multiprocessing.active_children()}
        assert len(workers) >= 1
        token, entry_id = await admin_setup(runtime)
        bundle = await admin_bundle(runtime)
        authorities = [a.asn1 for a in bundle.x509_authorities]
        assert runtime.listening is not None
        client = ServerClient(
            trust_domain=TD,
            address="127.0.0.1",
            port=runtime.listening.port,
            bundle=Bundle(TD, tuple(X509Authority(der) for der in authorities)),
        )
        attestor = AgentJoinTokenAttestor()
        await attestor.configure(AgentJoinTokenConfig(token=token), make_host_services(tmp_path))
        agent_key = ec.generate_private_key(ec.SECP256R1())
        attested = await client.attest("join_token", attestor, csr_of(agent_key))
        client.use_identity(attested.svid.cert_chain, agent_key)
        assert [entry.id for entry in await client.fetch_authorized_entries()] == [entry_id]
        tampered = bytearray(csr_of(ec.generate_private_key(ec.SECP256R1())))
        tampered[-1] ^= 0x01
        workload_key = ec.generate_private_key(ec.SECP256R1())
        good, bad = await client.new_x509_svids(
            [SvidRequest(entry_id, csr_of(workload_key)), SvidRequest(entry_id, bytes(tampered))]
        )
        await client.close()
    finally:
        await stop(runtime, task)
    ca = x509.load_der_x509_certificate(authorities[0])
    for chain in (attested.svid.cert_chain, good.svid.cert_chain if good.svid else ()):
        leaf = x509.load_der_x509_certificate(chain[0])
        leaf.verify_directly_issued_by(ca)
    assert good.svid is not None
    leaf = x509.load_der_x509_certificate(good.svid.cert_chain[0])
    assert leaf.public_key() == workload_key.public_key()
    assert bad.svid is None
    assert "invalid CSR signature" in bad.error
    assert not workers & {child.pid for child in multiprocessing.active_children()}
