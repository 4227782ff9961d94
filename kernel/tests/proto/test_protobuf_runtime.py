"""betterproto and Google's protobuf runtime read each other's bytes, and grpcio talks to our
grpclib services.

The Google-side classes are built at test time from descriptors compiled from our .proto
files, which is how any other client (go-spiffe, py-spiffe, SPIRE's own tools) sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import betterproto
import betterproto.lib.google.protobuf as wkt
import pytest

from pyspire.proto.gen import workload
from pyspire.proto.gen.grpc.health import v1 as health
from pyspire.proto.gen.spire.api import types
from pyspire.proto.gen.spire.api.server.agent import v1 as agent

protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is not installed")
descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
descriptor_pool = pytest.importorskip("google.protobuf.descriptor_pool")
message_factory = pytest.importorskip("google.protobuf.message_factory")
json_format = pytest.importorskip("google.protobuf.json_format")

SOURCE_DIR = Path(__file__).resolve().parents[2] / "src" / "pyspire" / "proto" / "src"

MessageClass = Any


@pytest.fixture(scope="module")
def google(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], MessageClass]:
    """Compile our .proto files with protoc and return full-name -> protobuf message class."""
    out = tmp_path_factory.mktemp("descriptors") / "set.binpb"
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    sources = sorted(p.relative_to(SOURCE_DIR).as_posix() for p in SOURCE_DIR.rglob("*.proto"))
    code = protoc.main(
        [
            "protoc",
            f"-I{SOURCE_DIR}",
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *sources,
        ]
    )
    assert code == 0
    pool = descriptor_pool.DescriptorPool()
    for file_proto in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(file_proto)

    def lookup(full_name: str) -> MessageClass:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))

    return lookup


def full_entry() -> types.Entry:
    return types.Entry(
        id="e1",
        spiffe_id=types.Spiffeid(trust_domain="example.org", path="/w"),
        parent_id=types.Spiffeid(trust_domain="example.org", path="/spire/agent/a"),
        selectors=[types.Selector(type="unix", value="uid:0"), types.Selector(type="k", value="v")],
        x509_svid_ttl=60,
        federates_with=["b.org", "c.org"],
        admin=True,
        downstream=True,
        expires_at=-5,
        dns_names=["x"],
        revision_number=2**40,
        store_svid=True,
        jwt_svid_ttl=30,
        hint="h",
        created_at=17,
        additional_attributes=types.AdditionalAttributes(disable_x509_svid_prefetch=True),
    )


def test_entry_round_trips_byte_for_byte(google: Callable[[str], MessageClass]) -> None:
    ours = full_entry()
    theirs = google("spire.api.types.Entry").FromString(bytes(ours))
    assert theirs.spiffe_id.path == "/w"
    assert [s.value for s in theirs.selectors] == ["uid:0", "v"]
    assert theirs.expires_at == -5
    assert theirs.revision_number == 2**40
    assert theirs.additional_attributes.disable_x509_svid_prefetch is True
    assert not theirs.additional_attributes.jwt_svid_include_jti
    encoded = theirs.SerializeToString(deterministic=True)
    assert encoded == bytes(ours)
    assert types.Entry().parse(encoded) == ours


def test_google_field_numbers_match_for_core_messages(
    google: Callable[[str], MessageClass],
) -> None:
    descriptor = google("spire.api.types.Entry").DESCRIPTOR
    numbers = {f.name: f.number for f in descriptor.fields}
    assert numbers["hint"] == 14
    assert numbers["created_at"] == 15
    assert numbers["additional_attributes"] == 16
    workload_svid = google("X509SVID").DESCRIPTOR
    assert workload_svid.full_name == "X509SVID"
    assert {f.name: f.number for f in workload_svid.fields} == {
        "spiffe_id": 1,
        "x509_svid": 2,
        "x509_svid_key": 3,
        "bundle": 4,
        "hint": 5,
    }


def test_attest_agent_oneof_across_runtimes(google: Callable[[str], MessageClass]) -> None:
    request_cls = google("spire.api.server.agent.v1.AttestAgentRequest")
    theirs = request_cls()
    theirs.params.data.type = "x509pop"
    theirs.params.data.payload = b'{"certificates":[]}'
    theirs.params.params.csr = b"csr"
    ours = agent.AttestAgentRequest().parse(theirs.SerializeToString())
    name, value = betterproto.which_one_of(ours, "step")
    assert name == "params"
    assert isinstance(value, agent.AttestAgentRequestParams)
    assert value.data.type == "x509pop"
    assert value.params.csr == b"csr"

    back = request_cls.FromString(bytes(agent.AttestAgentRequest(challenge_response=b"")))
    assert back.WhichOneof("step") == "challenge_response"
    assert back.challenge_response == b""


def test_x509_svid_response_maps_across_runtimes(google: Callable[[str], MessageClass]) -> None:
    ours = workload.X509SvidResponse(
        svids=[workload.X509Svid(spiffe_id="spiffe://td/w", x509_svid=b"c", bundle=b"b")],
        federated_bundles={"spiffe://a.org": b"1", "spiffe://b.org": b"2"},
    )
    theirs = google("X509SVIDResponse").FromString(bytes(ours))
    assert dict(theirs.federated_bundles) == {"spiffe://a.org": b"1", "spiffe://b.org": b"2"}
    assert theirs.svids[0].bundle == b"b"
    assert workload.X509SvidResponse().parse(theirs.SerializeToString()) == ours


def hand_built_claims() -> wkt.Struct:
    return wkt.Struct(
        fields={
            "sub": wkt.Value(string_value="spiffe://td/w"),
            "aud": wkt.Value(list_value=wkt.ListValue(values=[wkt.Value(string_value="x")])),
            "exp": wkt.Value(number_value=1700000000),
            "nested": wkt.Value(
                struct_value=wkt.Struct(fields={"flag": wkt.Value(bool_value=True)})
            ),
        }
    )


def test_claims_struct_reads_as_json_in_google_runtime(
    google: Callable[[str], MessageClass],
) -> None:
    ours = workload.ValidateJwtsvidResponse(spiffe_id="spiffe://td/w", claims=hand_built_claims())
    theirs = google("ValidateJWTSVIDResponse").FromString(bytes(ours))
    assert json_format.MessageToDict(theirs.claims) == {
        "sub": "spiffe://td/w",
        "aud": ["x"],
        "exp": 1700000000.0,
        "nested": {"flag": True},
    }


class WorkloadApi(workload.SpiffeWorkloadApiBase):
    async def fetch_jwtsvid(
        self, jwtsvid_request: workload.JwtsvidRequest
    ) -> workload.JwtsvidResponse:
        token = "token-for-" + ",".join(jwtsvid_request.audience)
        return workload.JwtsvidResponse(
            svids=[workload.Jwtsvid(spiffe_id=jwtsvid_request.spiffe_id, svid=token)]
        )

    async def fetch_x509_svid(
        self, x509_svid_request: workload.X509SvidRequest
    ) -> AsyncIterator[workload.X509SvidResponse]:
        yield workload.X509SvidResponse(
            svids=[workload.X509Svid(spiffe_id="spiffe://td/w", x509_svid=b"leaf", bundle=b"ca")],
            federated_bundles={"spiffe://other.org": b"fed"},
        )

    async def validate_jwtsvid(
        self, validate_jwtsvid_request: workload.ValidateJwtsvidRequest
    ) -> workload.ValidateJwtsvidResponse:
        return workload.ValidateJwtsvidResponse(
            spiffe_id="spiffe://td/w", claims=hand_built_claims()
        )


class Health(health.HealthBase):
    async def check(
        self, health_check_request: health.HealthCheckRequest
    ) -> health.HealthCheckResponse:
        return health.HealthCheckResponse(
            status=health.HealthCheckResponseServingStatus.from_string("SERVING")
        )


class Agent(agent.AgentBase):
    """Challenges once with a fixed nonce and accepts its reversal."""

    async def attest_agent(
        self, attest_agent_request_iterator: AsyncIterator[agent.AttestAgentRequest]
    ) -> AsyncIterator[agent.AttestAgentResponse]:
        requests = attest_agent_request_iterator.__aiter__()
        first = await requests.__anext__()
        if betterproto.which_one_of(first, "step")[0] != "params":
            return
        yield agent.AttestAgentResponse(challenge=b"nonce")
        answer = await requests.__anext__()
        reattestable = answer.challenge_response == b"ecnon"
        yield agent.AttestAgentResponse(
            result=agent.AttestAgentResponseResult(
                svid=types.X509Svid(cert_chain=[b"agent-leaf"]), reattestable=reattestable
            )
        )


@contextlib.asynccontextmanager
async def serving(socket_path: Path) -> AsyncIterator[None]:
    from grpclib.server import Server

    server = Server([WorkloadApi(), Health(), Agent()])
    await server.start(path=str(socket_path))
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "api.sock"


async def test_grpcio_client_calls_grpclib_workload_api(
    google: Callable[[str], MessageClass], socket_path: Path
) -> None:
    grpc = pytest.importorskip("grpc")
    metadata = (("workload.spiffe.io", "true"),)

    def call() -> tuple[Any, list[Any], Any, Any]:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            fetch_jwt = channel.unary_unary(
                "/SpiffeWorkloadAPI/FetchJWTSVID",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=google("JWTSVIDResponse").FromString,
            )
            request = google("JWTSVIDRequest")(audience=["a", "b"], spiffe_id="spiffe://td/w")
            jwt = fetch_jwt(request, metadata=metadata, timeout=10)

            fetch_x509 = channel.unary_stream(
                "/SpiffeWorkloadAPI/FetchX509SVID",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=google("X509SVIDResponse").FromString,
            )
            x509 = list(fetch_x509(google("X509SVIDRequest")(), metadata=metadata, timeout=10))

            validate = channel.unary_unary(
                "/SpiffeWorkloadAPI/ValidateJWTSVID",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=google("ValidateJWTSVIDResponse").FromString,
            )
            validated = validate(
                google("ValidateJWTSVIDRequest")(audience="a", svid="t"),
                metadata=metadata,
                timeout=10,
            )

            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=google("grpc.health.v1.HealthCheckResponse").FromString,
            )
            healthy = check(google("grpc.health.v1.HealthCheckRequest")(), timeout=10)
            return jwt, x509, validated, healthy

    async with serving(socket_path):
        jwt, x509, validated, healthy = await asyncio.to_thread(call)

    assert [(s.spiffe_id, s.svid) for s in jwt.svids] == [("spiffe://td/w", "token-for-a,b")]
    assert len(x509) == 1
    assert x509[0].svids[0].x509_svid == b"leaf"
    assert dict(x509[0].federated_bundles) == {"spiffe://other.org": b"fed"}
    assert json_format.MessageToDict(validated.claims)["sub"] == "spiffe://td/w"
    assert healthy.status == 1


async def test_grpcio_client_sees_unimplemented_for_unknown_workload_method(
    google: Callable[[str], MessageClass], socket_path: Path
) -> None:
    grpc = pytest.importorskip("grpc")

    def call() -> Any:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            method = channel.unary_stream(
                "/SpiffeWorkloadAPI/FetchWITSVID",
                request_serializer=lambda m: m,
                response_deserializer=lambda b: b,
            )
            with pytest.raises(grpc.RpcError) as info:
                list(method(b"", timeout=10))
            return info.value.code()

    async with serving(socket_path):
        code = await asyncio.to_thread(call)
    assert code.name == "UNIMPLEMENTED"


async def test_grpcio_bidi_attest_agent_against_grpclib(
    google: Callable[[str], MessageClass], socket_path: Path
) -> None:
    grpc = pytest.importorskip("grpc")
    request_cls = google("spire.api.server.agent.v1.AttestAgentRequest")

    def call() -> list[Any]:
        outgoing: queue.Queue[Any] = queue.Queue()
        first = request_cls()
        first.params.data.type = "test"
        first.params.params.csr = b"csr"
        outgoing.put(first)

        def requests() -> Iterator[Any]:
            while (item := outgoing.get(timeout=10)) is not None:
                yield item

        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            attest = channel.stream_stream(
                "/spire.api.server.agent.v1.Agent/AttestAgent",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=google(
                    "spire.api.server.agent.v1.AttestAgentResponse"
                ).FromString,
            )
            received = []
            for response in attest(requests(), timeout=10):
                received.append(response)
                if response.WhichOneof("step") == "challenge":
                    outgoing.put(request_cls(challenge_response=response.challenge[::-1]))
                else:
                    outgoing.put(None)
            return received

    async with serving(socket_path):
        received = await asyncio.to_thread(call)

    assert [r.WhichOneof("step") for r in received] == ["challenge", "result"]
    assert received[1].result.reattestable is True
    assert list(received[1].result.svid.cert_chain) == [b"agent-leaf"]


async def test_betterproto_stub_calls_grpclib_service(socket_path: Path) -> None:
    from grpclib.client import Channel

    async with serving(socket_path):
        channel = Channel(path=str(socket_path))
        try:
            stub = workload.SpiffeWorkloadApiStub(channel, metadata={"workload.spiffe.io": "true"})
            jwt = await stub.fetch_jwtsvid(workload.JwtsvidRequest(audience=["z"]))
            first = None
            async for message in stub.fetch_x509_svid(workload.X509SvidRequest()):
                first = message
                break
            status = await health.HealthStub(channel).check(health.HealthCheckRequest())
        finally:
            channel.close()

    assert jwt.svids[0].svid == "token-for-z"
    assert first is not None
    assert first.svids[0].spiffe_id == "spiffe://td/w"
    assert status.status is health.HealthCheckResponseServingStatus.SERVING
