"""The Workload API as the real py-spiffe client (grpcio, synchronous, run in a thread) sees it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]
import pytest
import spiffe
from cryptography.hazmat.primitives import serialization
from spiffe import SpiffeId as PySpiffeId
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient
from spiffe._proto import workload_pb2
from spiffe.errors import PySpiffeError

from pyspire.agent.workload import WorkloadEndpoint
from pyspire_sdk.selector import Selector
from pyspire_sdk.testing import FakeClock

from .helpers import FOREIGN, FakeIdentitySource, Pki, make_entry

T = TypeVar("T")
TIMEOUT = 5.0


@pytest.fixture
def client(endpoint: WorkloadEndpoint) -> Iterator[WorkloadApiClient]:
    client = WorkloadApiClient(
        socket_path=f"unix://{endpoint.socket_path}", default_timeout=TIMEOUT
    )
    yield client
    client.close()


async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(function, *args, **kwargs)


async def test_fetch_x509_svid(
    client: WorkloadApiClient, source: FakeIdentitySource, pki: Pki
) -> None:
    svid = await in_thread(client.fetch_x509_svid)
    expected = source.snapshot().identities[0].svid
    assert str(svid.spiffe_id) == "spiffe://example.org/workload"
    assert svid.leaf.public_bytes(serialization.Encoding.DER) == expected.cert_chain[0]
    assert (
        svid.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        == expected.private_key
    )


async def test_fetch_x509_context_with_federated_bundles(
    client: WorkloadApiClient, source: FakeIdentitySource, pki: Pki
) -> None:
    mine = source.snapshot().identities[0]
    federating = pki.identity(make_entry("/federating", federates_with=[FOREIGN], created=5))
    source.publish(identities=(mine, federating), federated_bundles={FOREIGN: pki.foreign_bundle()})
    context = await in_thread(client.fetch_x509_context)
    assert [str(svid.spiffe_id) for svid in context.x509_svids] == [
        "spiffe://example.org/workload",
        "spiffe://example.org/federating",
    ]
    foreign = context.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain("foreign.test"))
    assert foreign is not None
    assert [
        authority.public_bytes(serialization.Encoding.DER) for authority in foreign.x509_authorities
    ] == [pki.foreign_ca.der]


async def test_fetch_x509_bundles(client: WorkloadApiClient, pki: Pki) -> None:
    bundles = await in_thread(client.fetch_x509_bundles)
    ours = bundles.get_bundle_for_trust_domain(PyTrustDomain("example.org"))
    assert ours is not None
    assert [
        authority.public_bytes(serialization.Encoding.DER) for authority in ours.x509_authorities
    ] == [pki.ca.der]


async def test_fetch_jwt_svid_and_validate_it(
    client: WorkloadApiClient, source: FakeIdentitySource
) -> None:
    svid = await in_thread(client.fetch_jwt_svid, {"one", "two"})
    assert str(svid.spiffe_id) == "spiffe://example.org/workload"
    assert set(svid.audience) == {"one", "two"}
    assert sorted(source.jwt_requests[0][1]) == ["one", "two"]
    validated = await in_thread(client.validate_jwt_svid, svid.token, "one")
    assert str(validated.spiffe_id) == "spiffe://example.org/workload"


async def test_fetch_jwt_svid_for_a_subject(
    client: WorkloadApiClient, source: FakeIdentitySource, pki: Pki
) -> None:
    mine = source.snapshot().identities[0]
    second = pki.identity(make_entry("/second", created=5))
    source.publish(identities=(mine, second))
    svid = await in_thread(
        client.fetch_jwt_svid, {"svc"}, PySpiffeId("spiffe://example.org/second")
    )
    assert str(svid.spiffe_id) == "spiffe://example.org/second"


async def test_fetch_jwt_bundles_verify_a_fetched_token_locally(
    client: WorkloadApiClient,
) -> None:
    bundles = await in_thread(client.fetch_jwt_bundles)
    ours = bundles.get_bundle_for_trust_domain(PyTrustDomain("example.org"))
    assert ours is not None
    token = (await in_thread(client.fetch_jwt_svid, {"svc"})).token
    parsed = spiffe.JwtSvid.parse_and_validate(token, ours, {"svc"})
    assert str(parsed.spiffe_id) == "spiffe://example.org/workload"


async def test_validate_rejects_a_token_signed_by_an_unknown_key(
    client: WorkloadApiClient, pki: Pki, clock: FakeClock
) -> None:
    token = pki.foreign_jwt.sign(
        {
            "sub": "spiffe://example.org/workload",
            "aud": ["svc"],
            "exp": int(clock.now().timestamp()) + 60,
        }
    )
    with pytest.raises(PySpiffeError, match="not found in trust domain"):
        await in_thread(client.validate_jwt_svid, token, "svc")


async def test_no_identity_is_permission_denied(
    client: WorkloadApiClient, source: FakeIdentitySource, pki: Pki
) -> None:
    source.publish(
        identities=(pki.identity(make_entry("/other", [Selector("unix", "uid:424242")])),)
    )
    with pytest.raises(PySpiffeError, match=r"PERMISSION_DENIED|no identity issued"):
        await in_thread(client.fetch_x509_svid)
    with pytest.raises(PySpiffeError, match=r"PERMISSION_DENIED|no identity issued"):
        await in_thread(client.fetch_jwt_svid, {"svc"})


async def test_a_py_spiffe_stream_sees_a_rotation(
    client: WorkloadApiClient, source: FakeIdentitySource, pki: Pki
) -> None:
    received: list[Any] = []
    errors: list[Exception] = []
    arrived = threading.Condition()

    def on_success(context: Any) -> None:
        with arrived:
            received.append(context)
            arrived.notify_all()

    def on_error(error: Exception) -> None:
        errors.append(error)

    def wait_for(count: int) -> bool:
        with arrived:
            return arrived.wait_for(lambda: len(received) >= count, TIMEOUT)

    handler = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
    try:
        assert await in_thread(wait_for, 1)
        rotated = pki.identity(source.snapshot().identities[0].entry)
        source.publish(identities=(rotated,))
        assert await in_thread(wait_for, 2)
    finally:
        handler.cancel()
    assert errors == []
    leaf = received[1].default_svid.leaf.public_bytes(serialization.Encoding.DER)
    assert leaf == rotated.svid.cert_chain[0]
    assert received[0].default_svid.leaf != received[1].default_svid.leaf


def _raw_call(path: str, socket: str, metadata: list[tuple[str, str]] | None) -> grpc.RpcError:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        call = channel.unary_stream(
            path,
            request_serializer=workload_pb2.X509SVIDRequest.SerializeToString,
            response_deserializer=workload_pb2.X509SVIDResponse.FromString,
        )
        try:
            for _ in call(workload_pb2.X509SVIDRequest(), metadata=metadata, timeout=TIMEOUT):
                break
        except grpc.RpcError as error:
            return error
    raise AssertionError("the call did not fail")


async def test_grpcio_without_the_header_gets_invalid_argument(
    endpoint: WorkloadEndpoint,
) -> None:
    error: Any = await in_thread(
        _raw_call, "/SpiffeWorkloadAPI/FetchX509SVID", str(endpoint.socket_path), None
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "security header missing from request"


async def test_wit_rpcs_are_unimplemented(endpoint: WorkloadEndpoint) -> None:
    for rpc in ("FetchWITSVID", "FetchWITBundles"):
        error: Any = await in_thread(
            _raw_call,
            f"/SpiffeWorkloadAPI/{rpc}",
            str(endpoint.socket_path),
            [("workload.spiffe.io", "true")],
        )
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
