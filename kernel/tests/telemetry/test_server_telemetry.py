"""A server runtime's metrics, scraped from its Prometheus endpoint over HTTP, and its health
probes, as their state changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpclib.const
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.catalog import Discovery
from pyspire.proto.gen.grpc.health import v1 as health_pb
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.server.runtime import ServerRuntime
from pyspire.transport.tls import build_client_context

from .servers import TELEMETRY, Samples, probe, scrape, start_server, stop_server

CREATE_JOIN_TOKEN = "pyspire_server_rpc_agent_v1_agent_create_join_token"
ATTEST = "pyspire_server_node_attestor_attest"
OK = (("status", "OK"),)


@pytest.fixture(scope="module")
def discovery() -> Discovery:
    return Discovery.load()


@pytest.fixture
async def server(tmp_path: Path, discovery: Discovery) -> AsyncIterator[ServerRuntime]:
    runtime, task = await start_server(tmp_path, discovery, **TELEMETRY)
    try:
        yield runtime
    finally:
        await stop_server(runtime, task)


def ports(runtime: ServerRuntime) -> tuple[int, int]:
    """The Prometheus and health ports the server picked."""
    assert runtime.telemetry.prometheus is not None
    assert runtime.telemetry.health is not None
    return runtime.telemetry.prometheus.port, runtime.telemetry.health.port


def admin(runtime: ServerRuntime) -> Channel:
    assert runtime.listening is not None
    return Channel(path=str(runtime.listening.socket_path))


def csr(spiffe_id: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def attest(runtime: ServerRuntime, attestor: str, token: str) -> Status:
    """AttestAgent over the admin socket (no rate limit there); how the call ended."""
    channel = admin(runtime)
    request = agent_pb.AttestAgentRequest(
        params=agent_pb.AttestAgentRequestParams(
            data=pb.AttestationData(type=attestor, payload=token.encode()),
            params=agent_pb.AgentX509SvidParams(csr=csr("spiffe://example.org/ignored")),
        )
    )
    try:
        async with channel.request(
            "/spire.api.server.agent.v1.Agent/AttestAgent",
            grpclib.const.Cardinality.STREAM_STREAM,
            agent_pb.AttestAgentRequest,
            agent_pb.AttestAgentResponse,
        ) as stream:
            await stream.send_message(request, end=True)
            while await stream.recv_message() is not None:
                pass
    except GRPCError as error:
        return error.status
    finally:
        channel.close()
    return Status.OK


async def test_rpc_calls_are_counted_and_timed_by_method_and_status(
    server: ServerRuntime,
) -> None:
    prometheus, _ = ports(server)
    assert server.listening is not None
    channel = admin(server)
    try:
        await agent_pb.AgentStub(channel).create_join_token(agent_pb.CreateJoinTokenRequest(ttl=60))
        bundle = await bundle_pb.BundleStub(channel).get_bundle(bundle_pb.GetBundleRequest())
    finally:
        channel.close()
    tls = build_client_context([authority.asn1 for authority in bundle.x509_authorities])
    remote = Channel("127.0.0.1", server.listening.port, ssl=tls)
    try:
        with pytest.raises(GRPCError):  # anonymous callers may not administer
            await agent_pb.AgentStub(remote).create_join_token(
                agent_pb.CreateJoinTokenRequest(ttl=60)
            )
    finally:
        remote.close()

    found = await scrape(prometheus)
    denied = (("status", "PERMISSION_DENIED"),)
    assert found[(f"{CREATE_JOIN_TOKEN}_total", OK)] == 1.0
    assert found[(f"{CREATE_JOIN_TOKEN}_total", denied)] == 1.0
    assert found[(f"{CREATE_JOIN_TOKEN}_elapsed_time_count", OK)] == 1.0
    assert found[(f"{CREATE_JOIN_TOKEN}_elapsed_time_sum", OK)] > 0.0
    assert found[("pyspire_server_rpc_bundle_v1_bundle_get_bundle_total", OK)] == 1.0


async def test_ca_rotations_and_signed_svids_are_counted(server: ServerRuntime) -> None:
    prometheus, _ = ports(server)
    before = await scrape(prometheus)
    for name in ("x509_ca_prepare", "x509_ca_activate", "jwt_key_prepare", "jwt_key_activate"):
        assert value(before, f"pyspire_server_ca_manager_{name}_total") == 1.0, name

    channel = admin(server)
    try:
        stub = svid_pb.SvidStub(channel)
        await stub.mint_x509_svid(svid_pb.MintX509SvidRequest(csr=csr("spiffe://example.org/w")))
        await stub.mint_jwtsvid(
            svid_pb.MintJwtsvidRequest(
                id=pb.Spiffeid(trust_domain="example.org", path="/w"), audience=["db"]
            )
        )
    finally:
        channel.close()

    after = await scrape(prometheus)
    for name in ("x509_svid", "jwt_svid"):
        metric = f"pyspire_server_server_ca_sign_{name}_total"
        assert value(after, metric) - value(before, metric) == 1.0, name


async def test_node_attestations_are_counted_by_attestor_and_status(
    server: ServerRuntime,
) -> None:
    prometheus, _ = ports(server)
    channel = admin(server)
    try:
        await agent_pb.AgentStub(channel).create_join_token(
            agent_pb.CreateJoinTokenRequest(ttl=60, token="good-token")
        )
    finally:
        channel.close()

    assert await attest(server, "join_token", "good-token") == Status.OK
    assert await attest(server, "join_token", "good-token") == Status.PERMISSION_DENIED
    assert await attest(server, "made_up", "x") == Status.INVALID_ARGUMENT

    found = await scrape(prometheus)
    join_token = (("attestor", "join_token"),)
    assert found[(f"{ATTEST}_total", (*join_token, *OK))] == 1.0
    assert found[(f"{ATTEST}_total", (*join_token, ("status", "PERMISSION_DENIED")))] == 1.0
    assert found[(f"{ATTEST}_elapsed_time_count", (*join_token, *OK))] == 1.0
    # An attestor name a caller makes up never becomes a label.
    assert not [key for key in found if ("attestor", "made_up") in key[1]]


async def test_readiness_follows_the_server(server: ServerRuntime) -> None:
    _, health = ports(server)
    assert await probe(health, "/live") == (200, {"live": True})
    status, body = await probe(health, "/ready")
    assert (status, body["ready"]) == (200, True), body
    assert set(body["checks"]) == {"datastore", "ca", "listeners"}

    # A call in progress keeps a stopping server draining: live all along, no longer ready.
    channel = admin(server)
    try:
        async with channel.request(
            "/grpc.health.v1.Health/Watch",
            grpclib.const.Cardinality.UNARY_STREAM,
            health_pb.HealthCheckRequest,
            health_pb.HealthCheckResponse,
        ) as watch:
            await watch.send_message(health_pb.HealthCheckRequest(), end=True)
            assert await watch.recv_message() is not None
            server.stop()  # the server stops serving at once, then waits for the Watch
            status, body = await probe(health, "/ready")
            assert status == 500
            assert body["checks"]["listeners"] == {"ready": False, "message": "not serving"}
            assert (await probe(health, "/live"))[0] == 200
            await watch.cancel()  # the server finishes draining and stops
    finally:
        channel.close()
