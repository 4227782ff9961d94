"""Helpers for the Agent, SVID and Bundle service tests: CSRs, callers, a challenge attestor."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.proto.gen.codec import spire_api_server_agent_v1 as agent_wire
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.server.api.agent import AgentService
from pyspire.server.api.bundle import BundleService
from pyspire.server.api.gate import TcpGate
from pyspire.server.authorization import Caller, CallerKind
from pyspire.server.context import ServerContext
from pyspire.transport.calls import set_caller
from pyspire_sdk.errors import PermissionDeniedError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import (
    AttestationPeer,
    Challenger,
    agent_id,
    current_peer,
)
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
AGENT_METHOD = "/spire.api.server.svid.v1.SVID/BatchNewX509SVID"


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    uris: Sequence[str] = (),
    dns: Sequence[str] = (),
) -> bytes:
    """A DER CSR for ``key`` (a fresh one when None) with the given SANs."""
    key = key or make_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "test")])
    )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def corrupt_signature(csr_der: bytes) -> bytes:
    """The CSR with its signature altered: still parses, no longer verifies."""
    return csr_der[:-1] + bytes([csr_der[-1] ^ 0x01])


def caller(
    *kinds: CallerKind,
    spiffe_id: SpiffeId | None = None,
    address: str = "",
) -> Caller:
    """Set (and return) the caller of the direct service calls in this task."""
    who = Caller(kinds=frozenset(kinds or (CallerKind.ANY,)), spiffe_id=spiffe_id, address=address)
    set_caller(who)
    return who


async def as_agent(context: ServerContext, svid_der: bytes, method: str = AGENT_METHOD) -> Caller:
    """Identify the caller through the real TCP gate (as if it presented ``svid_der``)."""
    who = await TcpGate(context).identify(method, svid_der, "127.0.0.1")
    set_caller(who)
    return who


def leaf(chain: Sequence[bytes]) -> x509.Certificate:
    return x509.load_der_x509_certificate(chain[0])


def verify_chain(chain: Sequence[bytes], roots: Sequence[bytes]) -> None:
    """Raise unless ``chain[0]`` verifies through ``chain[1:]`` up to one of ``roots``."""
    from cryptography.x509.verification import PolicyBuilder, Store

    store = Store([x509.load_der_x509_certificate(der) for der in roots])
    certificate = leaf(chain)
    verifier = (
        PolicyBuilder()
        .store(store)
        .time(certificate.not_valid_before_utc + timedelta(seconds=30))
        .build_client_verifier()
    )
    verifier.verify(certificate, [x509.load_der_x509_certificate(d) for d in chain[1:]])


class Requests:
    """An async iterator of requests that a test feeds one at a time."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[agent_pb.AttestAgentRequest | None] = asyncio.Queue()

    def put(self, request: agent_pb.AttestAgentRequest | None) -> None:
        self._queue.put_nowait(request)

    def __aiter__(self) -> Requests:
        return self

    async def __anext__(self) -> agent_pb.AttestAgentRequest:
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item


def params(kind: str, payload: bytes, csr: bytes) -> agent_pb.AttestAgentRequest:
    return agent_pb.AttestAgentRequest(
        params=agent_pb.AttestAgentRequestParams(
            data=pb.AttestationData(type=kind, payload=payload),
            params=agent_pb.AgentX509SvidParams(csr=csr),
        )
    )


async def attest_stream(
    service: AgentService, requests: AsyncIterator[agent_pb.AttestAgentRequest]
) -> AsyncGenerator[agent_pb.AttestAgentResponse, None]:
    """AttestAgent's responses to ``requests`` as the wire carries both ways: each request is
    encoded and read by the route's codec, each encoded response read back by betterproto.
    Closing this stream closes the service's."""

    async def wire_requests() -> AsyncIterator[agent_wire.AttestAgentRequest]:
        async for request in requests:
            yield agent_wire.decode_AttestAgentRequest(bytes(request))

    async with contextlib.aclosing(service.attest_agent_encoded(wire_requests())) as responses:
        async for response in responses:
            yield agent_pb.AttestAgentResponse().parse(response.data)


async def attest(
    service: AgentService, *requests: agent_pb.AttestAgentRequest
) -> list[agent_pb.AttestAgentResponse]:
    """Run AttestAgent with a fixed list of requests; return every response."""

    async def feed() -> AsyncIterator[agent_pb.AttestAgentRequest]:
        for request in requests:
            yield request

    return [response async for response in attest_stream(service, feed())]


class ChallengeAttestor:
    """A server node attestor that asks one challenge: the answer must be the payload
    reversed. Reattestable; reports one selector value; remembers whom it saw attesting."""

    def __init__(self, trust_domain: TrustDomain = TD) -> None:
        self.trust_domain = trust_domain
        self.calls = 0
        self.peers: list[AttestationPeer] = []
        self.cancelled = 0

    async def configure(self, config: object, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        self.calls += 1
        self.peers.append(current_peer())
        try:
            answer = await challenge(b"reverse:" + payload)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if answer != payload[::-1]:
            raise PermissionDeniedError("challenge answer is wrong")
        return AttestationResult(
            agent_id=agent_id(self.trust_domain, "challenge", payload.decode()),
            selector_values=("region:eu", "region:eu"),
            can_reattest=True,
        )


@pytest.fixture
def challenge_attestor() -> ChallengeAttestor:
    return ChallengeAttestor()


@pytest.fixture
def context(server_context: ServerContext, challenge_attestor: ChallengeAttestor) -> ServerContext:
    """The shared server context with the ``challenge`` attestor added and an admin ID."""
    return dataclasses.replace(
        server_context,
        node_attestors={**server_context.node_attestors, "challenge": challenge_attestor},
        admin_ids=frozenset({SpiffeId.parse("spiffe://example.org/ops")}),
    )


@pytest.fixture
def agent_service(context: ServerContext) -> AgentService:
    return AgentService(context, attestation_rate_limit=False)


@pytest.fixture
def bundle_service(context: ServerContext) -> BundleService:
    """The Bundle service, called by a local (admin socket) caller."""
    caller(CallerKind.LOCAL)
    return BundleService(context)
