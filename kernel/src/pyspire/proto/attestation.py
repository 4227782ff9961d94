"""AttestAgent on the wire, the server's half: the responses written by the generated codecs
straight from SDK values.

A storm of agents attesting at once (a fleet restarting) makes AttestAgent a hot path, and a
generic encoder builds three message objects for one response. The requests are read by the
codec's ``decode_AttestAgentRequest`` (grpclib calls it as the route's request type).
"""

from __future__ import annotations

__all__ = ["attest_agent_challenge", "attest_agent_result"]

from pyspire.proto.gen.codec.spire_api_server_agent_v1 import (
    write_AttestAgentResponse,
    write_AttestAgentResponse_Result,
)
from pyspire.proto.svids import encode_x509_svid
from pyspire_sdk.model import X509Svid


def attest_agent_challenge(challenge: bytes) -> bytes:
    """The encoding of an ``AttestAgentResponse`` that relays a node attestor's challenge."""
    return write_AttestAgentResponse(challenge=challenge)


def attest_agent_result(svid: X509Svid, *, reattestable: bool) -> bytes:
    """The encoding of the final ``AttestAgentResponse``: the agent SVID, and whether the agent
    renews by attesting again."""
    return write_AttestAgentResponse(
        result=write_AttestAgentResponse_Result(
            svid=encode_x509_svid(svid), reattestable=reattestable
        )
    )
