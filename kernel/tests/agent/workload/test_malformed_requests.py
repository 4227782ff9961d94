"""Malformed requests on the Workload API socket, served as the agent runtime serves it: each is
refused with INVALID_ARGUMENT and one warning, and the endpoint goes on answering."""

from __future__ import annotations

from typing import Any

import pytest
from grpclib.const import Status

from pyspire.agent.workload import WorkloadEndpoint
from pyspire.proto.gen import workload as pb

from .conftest import HEADER

FETCH_JWT_SVID = "/SpiffeWorkloadAPI/FetchJWTSVID"
METADATA = tuple(HEADER.items())
# JWTSVIDRequest{audience: [b"\xff\xfe"]}: a string that is not UTF-8.
_BAD_UTF8 = b"\x0a\x02\xff\xfe"


async def test_malformed_requests_get_invalid_argument(
    endpoint: WorkloadEndpoint, raw_grpc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(endpoint.socket_path)
    request = bytes(pb.JwtsvidRequest(audience=["audience-one"], spiffe_id="spiffe://x/y"))
    bodies = raw_grpc.malformed_bodies(request)
    bodies["invalid utf-8"] = raw_grpc.frame(_BAD_UTF8)
    for body in bodies.values():
        await raw_grpc.expect_malformed(caplog, FETCH_JWT_SVID, body, path=path, metadata=METADATA)
    valid = bytes(pb.JwtsvidRequest(audience=["audience-one"]))
    reply = await raw_grpc.call(FETCH_JWT_SVID, raw_grpc.frame(valid), path=path, metadata=METADATA)
    assert reply.status == Status.OK
