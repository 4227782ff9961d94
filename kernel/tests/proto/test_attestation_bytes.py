"""The generated AttestAgent responses are byte for byte what betterproto makes, and the
generated request codec reads what betterproto writes (the agent's client still writes its
requests with betterproto)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pyspire.proto.attestation import attest_agent_challenge, attest_agent_result
from pyspire.proto.convert import x509_svid_to_proto
from pyspire.proto.gen.codec.spire_api_server_agent_v1 import decode_AttestAgentRequest
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire_sdk.model import X509Svid
from pyspire_sdk.spiffeid import SpiffeId

SVID = X509Svid(
    spiffe_id=SpiffeId.parse("spiffe://example.org/spire/agent/join_token/abc"),
    cert_chain=(b"\x30\x82" + b"l" * 300, b"\x30\x03abc"),
    expires_at=datetime(2030, 1, 1, 1, tzinfo=UTC),
)


@pytest.mark.parametrize("reattestable", [False, True])
@pytest.mark.parametrize(
    "svid",
    [
        SVID,
        X509Svid(SVID.spiffe_id, (b"x" * 100,), None, hint="node"),
    ],
)
def test_results_equal_betterproto(svid: X509Svid, reattestable: bool) -> None:
    expected = agent_pb.AttestAgentResponse(
        result=agent_pb.AttestAgentResponseResult(
            svid=x509_svid_to_proto(svid), reattestable=reattestable
        )
    )
    assert attest_agent_result(svid, reattestable=reattestable) == bytes(expected)


@pytest.mark.parametrize("challenge", [b"", b"nonce", b"c" * 300])
def test_challenges_equal_betterproto(challenge: bytes) -> None:
    expected = agent_pb.AttestAgentResponse(challenge=challenge)
    assert attest_agent_challenge(challenge) == bytes(expected)


def test_requests_betterproto_writes_read_alike() -> None:
    first = agent_pb.AttestAgentRequest(
        params=agent_pb.AttestAgentRequestParams(
            data=pb.AttestationData(type="join_token", payload=b"token"),
            params=agent_pb.AgentX509SvidParams(csr=b"\x30\x82" + b"r" * 200),
        )
    )
    read = decode_AttestAgentRequest(bytes(first))
    assert read.challenge_response is None
    assert read.params is not None
    assert read.params.data is not None
    assert (read.params.data.type, read.params.data.payload) == ("join_token", b"token")
    assert read.params.params is not None
    assert read.params.params.csr == first.params.params.csr
    for answer in (b"", b"answer"):
        read = decode_AttestAgentRequest(
            bytes(agent_pb.AttestAgentRequest(challenge_response=answer))
        )
        assert (read.params, read.challenge_response) == (None, answer)
