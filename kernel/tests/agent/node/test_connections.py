"""How many connections the agent holds to its server: one once it has its SVID, replaced when
the SVID rotates (the old one closed once its calls end), kept when only the bundle grows.

Connections are counted by the kernel's own table (``/proc/net/tcp``): established sockets of
this process (by their inodes; the table lists every process's, and other tests may hold
connections to a server on the same port of another loopback address) whose remote port is the
server's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.server import Server

from pyspire.agent.client import ServerClient
from pyspire.proto.convert import bundle_to_proto
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.listener import serve_tcp
from pyspire.transport.tls import RotatingServerContext
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.spiffeid import SpiffeId

from .conftest import TD, Agent, make_ca, until, workload_entry
from .test_client import make_leaf

CA = tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate]
ESTABLISHED = "01"
LIMITS = ConnectionLimits(max_connections=16)


def own_socket_inodes() -> set[str]:
    """Inodes of the sockets this process holds (the table lists every process's)."""
    inodes = set()
    for descriptor in Path("/proc/self/fd").iterdir():
        try:
            target = descriptor.readlink()
        except OSError:  # closed since the listing
            continue
        if str(target).startswith("socket:["):
            inodes.add(str(target)[len("socket:[") : -1])
    return inodes


def client_ports(server_port: int) -> set[int]:
    """Local ports of this process's established TCP connections to ``server_port``."""
    ours = own_socket_inodes()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if (
                state == ESTABLISHED
                and inode in ours
                and int(remote.rsplit(":", 1)[1], 16) == server_port
            ):
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def test_an_attested_agent_holds_one_connection(agent: Agent) -> None:
    identity, client = await agent.build()
    await identity.start()  # pins the bundle and attests, both without a client certificate
    await agent.server.create_entries(workload_entry("/web", identity.spiffe_id))
    await client.fetch_authorized_entries()
    await client.fetch_bundle()
    await client.new_x509_svids([])
    port = agent.server.port
    await until(lambda: len(client_ports(port)) == 1)
    (first,) = client_ports(port)

    await identity.rotate()
    await client.fetch_authorized_entries()
    # The new SVID needs a new connection; the old one, idle, is closed.
    await until(lambda: len(client_ports(port)) == 1 and first not in client_ports(port))


class HeldBundle(bundle_pb.BundleBase):
    """GetBundle answers once ``release`` is set (and at once after that)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.release = asyncio.Event()
        self.waiting = 0

    async def get_bundle(self, get_bundle_request: bundle_pb.GetBundleRequest) -> pb.Bundle:
        self.waiting += 1
        await self.release.wait()
        return bundle_to_proto(self.bundle)


async def serve(
    issuer: CA, trusted: list[bytes], service: bundle_pb.BundleBase, port: int = 0
) -> tuple[Server, int]:
    """A server of ``service`` presenting a server SVID from ``issuer``, trusting clients that
    chain to ``trusted`` (closing it closes its connections)."""
    issuer_key, _, issuer_certificate = issuer
    server_id = str(SpiffeId.from_segments(TD, "spire", "server"))
    key, leaf = make_leaf(issuer_key, issuer_certificate, [server_id])
    tls = RotatingServerContext()
    await tls.update([leaf], key, trusted)
    server = Server([service])
    listener = await serve_tcp(
        server, "127.0.0.1", port, tls=tls.listening, limits=LIMITS, name="test"
    )
    return server, int(listener.sockets[0].getsockname()[1])


def agent_svid(ca: CA) -> tuple[list[bytes], ec.EllipticCurvePrivateKey]:
    ca_key, _, ca_certificate = ca
    agent_id = "spiffe://example.org/spire/agent/test/node"
    key, leaf = make_leaf(ca_key, ca_certificate, [agent_id])
    return [leaf], key


async def test_a_rotated_svid_closes_the_old_connection_once_its_calls_end() -> None:
    ca = make_ca()
    bundle = Bundle(TD, (X509Authority(ca[1]),))
    service = HeldBundle(bundle)
    server, port = await serve(ca, [ca[1]], service)
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=bundle)
    client.use_identity(*agent_svid(ca))
    try:
        held = asyncio.create_task(client.fetch_bundle())
        await until(lambda: service.waiting == 1)
        (old,) = client_ports(port)

        client.use_identity(*agent_svid(ca))  # the agent SVID rotated
        await asyncio.sleep(0.05)
        assert client_ports(port) == {old}, "a call in progress keeps its connection"
        second = asyncio.create_task(client.fetch_bundle())
        await until(lambda: service.waiting == 2)
        assert len(client_ports(port)) == 2 and old in client_ports(port)

        service.release.set()
        assert await held == bundle
        assert await second == bundle
        await until(lambda: len(client_ports(port)) == 1 and old not in client_ports(port))
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_a_grown_bundle_keeps_the_connection_a_shrunk_one_replaces_it() -> None:
    ca, successor = make_ca(), make_ca("successor ca")
    bundle = Bundle(TD, (X509Authority(ca[1]),))
    service = HeldBundle(bundle)
    service.release.set()
    server, port = await serve(ca, [ca[1]], service)
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=bundle)
    client.use_identity(*agent_svid(ca))
    try:
        await client.fetch_bundle()
        (first,) = client_ports(port)

        # The successor authority joins the bundle: the connection stays.
        client.use_bundle(Bundle(TD, (X509Authority(ca[1]), X509Authority(successor[1]))))
        await client.fetch_bundle()
        assert client_ports(port) == {first}

        # The server restarts with an SVID from the successor: once the connection is lost,
        # the next one is made with the grown bundle (the old one could not verify it).
        server.close()
        await server.wait_closed()
        await until(lambda: not client_ports(port))
        server, _ = await serve(successor, [ca[1]], service, port)
        await client.fetch_bundle()
        (second,) = client_ports(port)

        # The authority that verified the connection leaves the bundle: a new connection.
        client.use_bundle(Bundle(TD, (X509Authority(ca[1]),)))
        with pytest.raises(UnavailableError, match="cannot verify the server"):
            await client.fetch_bundle()
        await until(lambda: second not in client_ports(port))
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
