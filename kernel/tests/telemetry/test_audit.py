"""The server's audit log: one line per API call, with the caller, the method, the request's
fields and the status, and never a secret."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpclib.const
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel

from pyspire.catalog import Discovery
from pyspire.proto.gen.codec import spire_api_server_agent_v1 as agent_wire
from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_wire
from pyspire.proto.gen.codec import spire_api_server_svid_v1 as svid_wire
from pyspire.proto.gen.codec import spire_api_types as types_wire
from pyspire.proto.gen.grpc.health import v1 as health_pb
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.debug import v1 as debug_pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.proto.messages import EncodedMessage
from pyspire.server.authorization import POLICY, CallerKind
from pyspire.server.runtime import ServerRuntime
from pyspire.telemetry.audit import AUDIT_EVENT, request_fields
from pyspire.telemetry.logging import REDACTED
from pyspire.transport.tls import build_client_context

from .servers import start_server, stop_server

ADMIN_ID = "spiffe://example.org/ops/admin"
TOKEN = "tok-do-not-log-7f3a9c"
_SERVED = (
    agent_pb.AgentBase,
    bundle_pb.BundleBase,
    entry_pb.EntryBase,
    svid_pb.SvidBase,
    debug_pb.DebugBase,
    health_pb.HealthBase,
)


def admin_methods() -> dict[str, grpclib.const.Cardinality]:
    """Every method the server serves that only administrators (local or admin SVIDs) may call,
    with its cardinality."""
    admin_kinds = {CallerKind.LOCAL, CallerKind.ADMIN}
    found: dict[str, grpclib.const.Cardinality] = {}
    for base in _SERVED:
        for method, handler in base.__mapping__(object.__new__(base)).items():
            if POLICY.get(method) and POLICY[method] <= admin_kinds:
                found[method] = handler.cardinality
    return found


def audit_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in logs if event["event"] == AUDIT_EVENT]


def watched(logs: list[dict[str, Any]]) -> bool:
    return any(line["method"].endswith("/Watch") for line in audit_lines(logs))


def csr_and_key(spiffe_id: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
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
    return request.public_bytes(serialization.Encoding.DER), key


@pytest.fixture(scope="module")
def discovery() -> Discovery:
    return Discovery.load()


@pytest.fixture
async def server(tmp_path: Path, discovery: Discovery) -> AsyncIterator[ServerRuntime]:
    runtime, task = await start_server(
        tmp_path, discovery, audit_log_enabled=True, admin_ids=[ADMIN_ID]
    )
    try:
        yield runtime
    finally:
        await stop_server(runtime, task)


def socket_path(runtime: ServerRuntime) -> str:
    assert runtime.listening is not None
    return str(runtime.listening.socket_path)


# -- request fields ------------------------------------------------------------------------


def test_request_fields_leave_out_unset_fields_and_show_bytes_by_length() -> None:
    request = agent_pb.AttestAgentRequest(
        params=agent_pb.AttestAgentRequestParams(
            data=pb.AttestationData(type="join_token", payload=TOKEN.encode()),
        )
    )
    assert request_fields(request) == {
        "params": {"data": {"type": "join_token", "payload": f"{len(TOKEN)} bytes"}}
    }
    entries = entry_pb.BatchCreateEntryRequest(
        entries=[
            pb.Entry(
                spiffe_id=pb.Spiffeid(trust_domain="example.org", path="/w"),
                selectors=[pb.Selector(type="unix", value="uid:1000")],
                admin=True,
            )
        ]
    )
    assert request_fields(entries) == {
        "entries": [
            {
                "spiffe_id": {"trust_domain": "example.org", "path": "/w"},
                "selectors": [{"type": "unix", "value": "uid:1000"}],
                "admin": True,
            }
        ]
    }


def test_secret_fields_are_redacted() -> None:
    request = agent_pb.CreateJoinTokenRequest(
        ttl=60, token=TOKEN, agent_id=pb.Spiffeid(trust_domain="example.org", path="/node")
    )
    fields = request_fields(request)
    assert fields == {
        "ttl": 60,
        "token": REDACTED,
        "agent_id": {"trust_domain": "example.org", "path": "/node"},
    }
    assert TOKEN not in repr(fields)


def test_members_of_a_oneof_other_than_the_one_set_are_left_out() -> None:
    request = agent_pb.AttestAgentRequest(challenge_response=b"answer")
    assert request_fields(request) == {"challenge_response": "6 bytes"}


def test_codec_requests_are_logged_like_betterproto_ones() -> None:
    request = svid_wire.BatchNewX509SVIDRequest(
        params=[svid_wire.NewX509SVIDParams(entry_id="entry", csr=b"csr")]
    )
    assert request_fields(request) == {"params": [{"entry_id": "entry", "csr": "3 bytes"}]}
    listing = entry_wire.ListEntriesRequest(
        filter=entry_wire.ListEntriesRequest_Filter(
            by_spiffe_id=types_wire.SPIFFEID(trust_domain="example.org", path="/w")
        ),
        page_size=5,
    )
    assert request_fields(listing) == {
        "filter": {"by_spiffe_id": {"trust_domain": "example.org", "path": "/w"}},
        "page_size": 5,
    }
    attestation = agent_wire.AttestAgentRequest(
        params=agent_wire.AttestAgentRequest_Params(
            data=types_wire.AttestationData(type="join_token", payload=TOKEN.encode()),
            params=agent_wire.AgentX509SVIDParams(csr=b"csr"),
        )
    )
    assert request_fields(attestation) == {
        "params": {
            "data": {"type": "join_token", "payload": f"{len(TOKEN)} bytes"},
            "params": {"csr": "3 bytes"},
        }
    }
    assert request_fields(agent_wire.AttestAgentRequest(challenge_response=b"answer")) == {
        "challenge_response": "6 bytes"
    }


def test_a_request_held_as_bytes_has_no_fields() -> None:
    assert request_fields(EncodedMessage(b"\x0a\x00")) == {}


# -- the server ------------------------------------------------------------------------------


async def test_every_admin_method_writes_exactly_one_line(
    server: ServerRuntime, raw_grpc: Any
) -> None:
    methods = admin_methods()
    assert len(methods) > 20  # every admin method the server serves, not a few
    path = socket_path(server)
    with structlog.testing.capture_logs() as logs:
        for method, cardinality in methods.items():
            if cardinality.server_streaming:
                continue
            await raw_grpc.call(method, raw_grpc.frame(b""), path=path)
        channel = Channel(path=path)
        try:
            async with channel.request(
                "/grpc.health.v1.Health/Watch",
                grpclib.const.Cardinality.UNARY_STREAM,
                health_pb.HealthCheckRequest,
                health_pb.HealthCheckResponse,
            ) as watch:
                await watch.send_message(health_pb.HealthCheckRequest(), end=True)
                assert await watch.recv_message() is not None
                await watch.cancel()
        finally:
            channel.close()
        # The Watch ends on the server when the reset reaches it.
        async with asyncio.timeout(5):
            while not watched(logs):  # noqa: ASYNC110 - the server's call has no event
                await asyncio.sleep(0.01)

    lines = audit_lines(logs)
    for method in methods:
        mine = [line for line in lines if line["method"] == method]
        assert len(mine) == 1, (method, mine)
        line = mine[0]
        assert line["type"] == "audit"
        assert line["log_level"] == "info"
        assert line["service"] == method.lstrip("/").split("/")[0]
        assert (line["caller_uid"], line["caller_gid"], line["caller_pid"]) == (
            os.getuid(),
            os.getgid(),
            os.getpid(),
        )
        assert "caller_id" not in line
        assert line["request"] == {}
        assert line["status"] in ("success", "error")
        assert (line["status"] == "success") == (line["status_code"] == "OK"), line
        if line["status"] == "error":
            assert line["status_message"], line
    watch_line = next(line for line in lines if line["method"].endswith("/Watch"))
    assert watch_line["status_code"] == "CANCELLED"


async def test_lines_name_the_request_and_never_a_join_token(
    server: ServerRuntime, raw_grpc: Any
) -> None:
    path = socket_path(server)
    create = bytes(agent_pb.CreateJoinTokenRequest(ttl=600, token=TOKEN))
    attest = bytes(
        agent_pb.AttestAgentRequest(
            params=agent_pb.AttestAgentRequestParams(
                data=pb.AttestationData(type="join_token", payload=TOKEN.encode())
            )
        )
    )
    bad = bytes(entry_pb.GetEntryRequest(id="no-such-entry"))
    with structlog.testing.capture_logs() as logs:
        created = await raw_grpc.call(
            "/spire.api.server.agent.v1.Agent/CreateJoinToken", raw_grpc.frame(create), path=path
        )
        await raw_grpc.call(
            "/spire.api.server.agent.v1.Agent/AttestAgent", raw_grpc.frame(attest), path=path
        )
        missing = await raw_grpc.call(
            "/spire.api.server.entry.v1.Entry/GetEntry", raw_grpc.frame(bad), path=path
        )
    assert created.status == grpclib.const.Status.OK
    assert missing.status == grpclib.const.Status.NOT_FOUND
    lines = audit_lines(logs)
    assert [line["method"].rsplit("/", 1)[1] for line in lines] == [
        "CreateJoinToken",
        "AttestAgent",
        "GetEntry",
    ]
    assert lines[0]["request"] == {"ttl": 600, "token": REDACTED}
    assert lines[0]["status"] == "success"
    assert lines[1]["request"]["params"]["data"] == {
        "type": "join_token",
        "payload": f"{len(TOKEN)} bytes",
    }
    assert lines[2]["request"] == {"id": "no-such-entry"}
    assert (lines[2]["status"], lines[2]["status_code"]) == ("error", "NOT_FOUND")
    assert lines[2]["status_message"] == missing.message
    assert TOKEN not in repr(lines)


async def test_a_remote_admin_is_named_by_its_spiffe_id(server: ServerRuntime) -> None:
    path = socket_path(server)
    csr, key = csr_and_key(ADMIN_ID)
    channel = Channel(path=path)
    try:
        minted = await svid_pb.SvidStub(channel).mint_x509_svid(
            svid_pb.MintX509SvidRequest(csr=csr)
        )
        bundle = await bundle_pb.BundleStub(channel).get_bundle(bundle_pb.GetBundleRequest())
    finally:
        channel.close()
    tls = build_client_context(
        [authority.asn1 for authority in bundle.x509_authorities], minted.svid.cert_chain, key
    )
    assert server.listening is not None
    remote = Channel("127.0.0.1", server.listening.port, ssl=tls)
    try:
        with structlog.testing.capture_logs() as logs:
            await entry_pb.EntryStub(remote).count_entries(entry_pb.CountEntriesRequest())
    finally:
        remote.close()
    (line,) = audit_lines(logs)
    assert line["method"] == "/spire.api.server.entry.v1.Entry/CountEntries"
    assert (line["caller_id"], line["caller_addr"]) == (ADMIN_ID, "127.0.0.1")
    assert "caller_uid" not in line
    assert line["status_code"] == "OK"


async def test_nothing_is_audited_unless_enabled(
    tmp_path: Path, discovery: Discovery, raw_grpc: Any
) -> None:
    runtime, task = await start_server(tmp_path, discovery)
    try:
        with structlog.testing.capture_logs() as logs:
            reply = await raw_grpc.call(
                "/spire.api.server.entry.v1.Entry/CountEntries",
                raw_grpc.frame(b""),
                path=socket_path(runtime),
            )
    finally:
        await stop_server(runtime, task)
    assert reply.status == grpclib.const.Status.OK
    assert audit_lines(logs) == []
