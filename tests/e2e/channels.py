"""gRPC channels for tests and benchmarks that play many clients from one process.

The server admits one attestation per second per client address, so a test or benchmark that
attests many agents at once gives each its own loopback address (all of ``127.0.0.0/8`` reaches
this host on Linux). :func:`race_join_token` plays many agents attesting with one join token at
the same moment, against one server or several; :func:`attest_join_token` attests one agent as
the agent does and hands back its credentials, for tests and benchmarks that then call as it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path

import betterproto
import grpclib.const
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol

from pyspire.agent.client import ServerClient
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.transport.tls import ALPN
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import make_host_services

ATTEST_AGENT = "/spire.api.server.agent.v1.Agent/AttestAgent"
CALL_TIMEOUT = 30.0


class SourceBoundChannel(Channel):
    """A grpclib channel whose TCP connection leaves from ``source``, so the server sees each
    client as a different address. grpclib has no option for it: this overrides its connection
    factory, the one place that would break on a grpclib change."""

    def __init__(self, source: str, host: str, port: int, ssl: ssl.SSLContext) -> None:
        super().__init__(host, port, ssl=ssl)
        self._source = source

    async def _create_connection(self) -> H2Protocol:
        _, protocol = await self._loop.create_connection(
            self._protocol_factory,
            self._host,
            self._port,
            ssl=self._ssl,
            local_addr=(self._source, 0),
        )
        return protocol


def anonymous_context() -> ssl.SSLContext:
    """A client context without a certificate that does not check the server's, as an agent's
    first contact (insecure bootstrap) is."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(ALPN)
    return context


def _csr(key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


async def send_join_token_attestation(
    channel: Channel, token: str, csr: bytes, *, call_timeout: float = CALL_TIMEOUT
) -> agent_pb.AttestAgentResponse | None:
    """One AttestAgent with ``token`` and ``csr``, as the agent's client runs it: the request,
    the answer, the end of the agent's side, the end of the server's (the trailers read); the
    answer, None when the server sent none. GRPCError when the server refused."""
    async with channel.request(
        ATTEST_AGENT,
        grpclib.const.Cardinality.STREAM_STREAM,
        agent_pb.AttestAgentRequest,
        agent_pb.AttestAgentResponse,
        timeout=call_timeout,
    ) as stream:
        await stream.send_message(
            agent_pb.AttestAgentRequest(
                params=agent_pb.AttestAgentRequestParams(
                    data=pb.AttestationData(type="join_token", payload=token.encode()),
                    params=agent_pb.AgentX509SvidParams(csr=csr),
                )
            )
        )
        response = await stream.recv_message()
        await stream.end()
        await stream.recv_trailing_metadata()
    return response


def attestation_outcome(response: agent_pb.AttestAgentResponse | None) -> str:
    """``OK`` for an answer with an agent SVID, else what was wrong with it."""
    if response is None or betterproto.which_one_of(response, "step")[0] != "result":
        return "NO_RESULT"
    return "OK" if response.result.svid.cert_chain else "EMPTY_SVID"


async def _attest(channel: Channel, token: str, csr: bytes, ready: asyncio.Barrier) -> str:
    """Connect (TLS included), wait for every racer to be connected, then attest: ``OK`` with
    an agent SVID, else the status name the server refused with."""
    await channel.__connect__()
    await ready.wait()
    try:
        response = await send_join_token_attestation(channel, token, csr)
    except GRPCError as error:
        return error.status.name
    return attestation_outcome(response)


async def race_join_token(
    ports: Sequence[int], token: str, racers_per_port: int, first_address: int = 10
) -> list[str]:
    """``racers_per_port`` clients per server port, each from its own loopback address
    (``127.0.0.<first_address>`` on), connect, then all send AttestAgent with ``token`` at the
    same moment; the outcome of each (``OK`` or the status name of the refusal)."""
    racers = len(ports) * racers_per_port
    ready = asyncio.Barrier(racers)
    context = anonymous_context()
    csr = _csr()
    channels = [
        SourceBoundChannel(
            f"127.0.0.{first_address + n}", "127.0.0.1", ports[n % len(ports)], context
        )
        for n in range(racers)
    ]
    try:
        return list(await asyncio.gather(*(_attest(c, token, csr, ready) for c in channels)))
    finally:
        for channel in channels:
            channel.close()


async def attest_join_token(
    port: int, authorities: Sequence[bytes], token: str, data_dir: Path
) -> tuple[tuple[bytes, ...], ec.EllipticCurvePrivateKey]:
    """Attest at ``127.0.0.1:port`` with ``token`` through the agent's own client and join
    token attestor, verifying the server with ``authorities``; the agent SVID chain and key."""
    from pyspire_nodeattestor_join_token.plugin import (
        AgentJoinTokenAttestor,
        AgentJoinTokenConfig,
    )

    attestor = AgentJoinTokenAttestor()
    await attestor.configure(
        AgentJoinTokenConfig(token=token), make_host_services(data_dir, clock=SystemClock())
    )
    client = server_client(port, authorities)
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        result = await client.attest("join_token", attestor, _csr(key))
    finally:
        await client.close()
    return tuple(result.svid.cert_chain), key


def server_client(port: int, authorities: Sequence[bytes]) -> ServerClient:
    """The agent's client for the server at ``127.0.0.1:port``, trusting ``authorities``."""
    return ServerClient(
        trust_domain=TrustDomain("example.org"),
        address="127.0.0.1",
        port=port,
        bundle=Bundle(TrustDomain("example.org"), tuple(X509Authority(der) for der in authorities)),
    )
