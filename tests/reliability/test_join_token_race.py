"""One join token, many agents racing for it: exactly one attestation may succeed.

Forty clients, each from its own loopback address (127.0.0.10 to 127.0.0.49, so the server's
one-attestation-per-second-per-address limit lets every one through), open their connections
and then send AttestAgent with the same token at the same moment. Exactly one gets an agent
SVID; every other gets a clear refusal (never UNKNOWN); the server lists one agent.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Iterator

import betterproto
import grpclib.const
import pytest
from channels import SourceBoundChannel, anonymous_context
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from figures import Figures
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from processes import ServerProcess, ServerSettings, free_port, short_temp_dir

from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

RACERS = 40
FIRST_ADDRESS = 10
ATTEST_AGENT = "/spire.api.server.agent.v1.Agent/AttestAgent"
CALL_TIMEOUT = 30.0


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


async def _attest(channel: Channel, token: str, csr: bytes, ready: asyncio.Barrier) -> str:
    """Connect (TLS included), wait for every racer to be connected, then attest: ``OK`` with
    an agent SVID, else the status name the server refused with."""
    await channel.__connect__()
    await ready.wait()
    try:
        async with channel.request(
            ATTEST_AGENT,
            grpclib.const.Cardinality.STREAM_STREAM,
            agent_pb.AttestAgentRequest,
            agent_pb.AttestAgentResponse,
            timeout=CALL_TIMEOUT,
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
    except GRPCError as error:
        return error.status.name
    if response is None or betterproto.which_one_of(response, "step")[0] != "result":
        return "NO_RESULT"
    return "OK" if response.result.svid.cert_chain else "EMPTY_SVID"


async def _race(port: int, token: str) -> list[str]:
    ready = asyncio.Barrier(RACERS)
    context = anonymous_context()
    csr = _csr()
    channels = [
        SourceBoundChannel(f"127.0.0.{FIRST_ADDRESS + n}", "127.0.0.1", port, context)
        for n in range(RACERS)
    ]
    try:
        return list(await asyncio.gather(*(_attest(c, token, csr, ready) for c in channels)))
    finally:
        for channel in channels:
            channel.close()


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    root = short_temp_dir()
    process = ServerProcess(ServerSettings(root=root, port=free_port()))
    try:
        process.start()
        yield process
    finally:
        process.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_join_token_race(server: ServerProcess, figures: Figures) -> None:
    token = server.generate_token()

    outcomes = asyncio.run(_race(server.settings.port, token))
    agents = server.agent_ids()
    counted = Counter(outcomes)
    figures.add(
        racers=RACERS,
        succeeded=counted["OK"],
        refused=",".join(f"{name}:{count}" for name, count in sorted(counted.items())),
        agents_listed=len(agents),
    )
    figures.report()

    assert counted["OK"] == 1, counted
    assert "UNKNOWN" not in counted
    assert len(agents) == 1
