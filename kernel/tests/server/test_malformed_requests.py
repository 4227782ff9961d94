"""Malformed requests on both listeners of a server started by its runtime.

Random bytes, a truncated message, invalid UTF-8 in a string field, a stream that ends inside a
message or its prefix, the compressed flag and a unary call without a message each get
INVALID_ARGUMENT "malformed request: ..." and one warning in the log: no error, no traceback, and
the server goes on answering.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status

from pyspire.catalog import Discovery
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.server.runtime import ServerRuntime
from pyspire.transport.tls import build_client_context

from .test_runtime import admin_bundle, start, stop

GET_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetBundle"
ATTEST_AGENT = "/spire.api.server.agent.v1.Agent/AttestAgent"
BATCH_CREATE_ENTRY = "/spire.api.server.entry.v1.Entry/BatchCreateEntry"

_VALID_ENTRY = bytes(
    entry_pb.BatchCreateEntryRequest(
        entries=[
            pb.Entry(
                spiffe_id=pb.Spiffeid(trust_domain="example.org", path="/w"),
                parent_id=pb.Spiffeid(trust_domain="example.org", path="/agent"),
                selectors=[pb.Selector(type="unix", value="uid:1000")],
            )
        ]
    )
)
# BatchCreateEntryRequest{entries: Entry{id: b"\xff\xfe"}}: a string that is not UTF-8.
_BAD_UTF8 = b"\x0a\x04\x0a\x02\xff\xfe"
# AttestAgentRequest{params: {data: {type: b"\xff"}}}.
_BAD_UTF8_ATTEST = b"\x0a\x05\x0a\x03\x0a\x01\xff"


@pytest.fixture(scope="module")
def discovery() -> Discovery:
    return Discovery.load()


@pytest.fixture
async def server(tmp_path: Path, discovery: Discovery) -> AsyncIterator[ServerRuntime]:
    runtime, task = await start(tmp_path, discovery)
    try:
        yield runtime
    finally:
        if not task.done():
            await stop(runtime, task)


async def test_admin_socket_answers_malformed_requests_with_invalid_argument(
    server: ServerRuntime, raw_grpc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.listening is not None
    path = str(server.listening.socket_path)
    bodies = raw_grpc.malformed_bodies(_VALID_ENTRY)
    bodies["invalid utf-8"] = raw_grpc.frame(_BAD_UTF8)
    for body in bodies.values():
        await raw_grpc.expect_malformed(caplog, BATCH_CREATE_ENTRY, body, path=path)
    reply = await raw_grpc.call(BATCH_CREATE_ENTRY, raw_grpc.frame(_VALID_ENTRY), path=path)
    assert reply.status == Status.OK


async def test_agent_listener_answers_malformed_requests_with_invalid_argument(
    server: ServerRuntime, raw_grpc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.listening is not None
    bundle = await admin_bundle(server)
    tls = build_client_context([authority.asn1 for authority in bundle.x509_authorities])
    port = server.listening.port
    valid = bytes(pb.BundleMask(x509_authorities=True, refresh_hint=True))
    request = b"\x0a" + bytes([len(valid)]) + valid  # GetBundleRequest{output_mask}
    for body in raw_grpc.malformed_bodies(request).values():
        await raw_grpc.expect_malformed(caplog, GET_BUNDLE, body, port=port, tls=tls)
    await raw_grpc.expect_malformed(
        caplog, ATTEST_AGENT, raw_grpc.frame(_BAD_UTF8_ATTEST), port=port, tls=tls
    )
    reply = await raw_grpc.call(GET_BUNDLE, raw_grpc.frame(request), port=port, tls=tls)
    assert reply.status == Status.OK
