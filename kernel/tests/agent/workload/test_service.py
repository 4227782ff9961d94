"""Every Workload API RPC over a real unix socket, with grpclib clients."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from pyspire.agent.workload import WorkloadApiService, WorkloadAttestation, WorkloadEndpoint
from pyspire.proto.gen import workload as pb
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.selector import Selector
from pyspire_sdk.testing import FakeClock

from .conftest import HEADER
from .helpers import FOREIGN, TD, FakeIdentitySource, JwtSigner, Pki, make_entry, opened
from .test_attestation import FailingAttestor

T = TypeVar("T")
TIMEOUT = 5.0


async def next_message(stream: AsyncIterator[T]) -> T:
    async with asyncio.timeout(TIMEOUT):
        return await anext(stream)


async def stream_error(stream: AsyncIterator[Any]) -> GRPCError:
    """Read until the stream fails and return the error (a stream never ends with OK)."""

    async def read_all() -> None:
        async with asyncio.timeout(TIMEOUT):
            async for _ in stream:
                pass

    with pytest.raises(GRPCError) as raised:
        await read_all()
    return raised.value


def spiffe_ids(response: pb.X509SvidResponse) -> list[str]:
    return [svid.spiffe_id for svid in response.svids]


# -- the security header ------------------------------------------------------------------------


RPCS: list[tuple[str, Any, Any, Any]] = [
    (
        "/SpiffeWorkloadAPI/FetchX509SVID",
        pb.X509SvidRequest(),
        pb.X509SvidRequest,
        pb.X509SvidResponse,
    ),
    (
        "/SpiffeWorkloadAPI/FetchX509Bundles",
        pb.X509BundlesRequest(),
        pb.X509BundlesRequest,
        pb.X509BundlesResponse,
    ),
    (
        "/SpiffeWorkloadAPI/FetchJWTSVID",
        pb.JwtsvidRequest(audience=["a"]),
        pb.JwtsvidRequest,
        pb.JwtsvidResponse,
    ),
    (
        "/SpiffeWorkloadAPI/FetchJWTBundles",
        pb.JwtBundlesRequest(),
        pb.JwtBundlesRequest,
        pb.JwtBundlesResponse,
    ),
    (
        "/SpiffeWorkloadAPI/ValidateJWTSVID",
        pb.ValidateJwtsvidRequest(audience="a", svid="x"),
        pb.ValidateJwtsvidRequest,
        pb.ValidateJwtsvidResponse,
    ),
]


async def call(
    channel: Channel,
    path: str,
    request: Any,
    request_type: Any,
    reply_type: Any,
    metadata: Sequence[tuple[str, str]] | None,
) -> GRPCError | None:
    async with asyncio.timeout(TIMEOUT):
        try:
            async with channel.request(
                path, Cardinality.UNARY_STREAM, request_type, reply_type, metadata=metadata
            ) as stream:
                await stream.send_message(request, end=True)
                await stream.recv_message()
                await stream.cancel()
        except GRPCError as error:
            return error
    return None


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [("workload.spiffe.io", "false")],
        [("workload.spiffe.io", "True")],
        [("workload.spiffe.io", "true"), ("workload.spiffe.io", "true")],
    ],
    ids=["missing", "false", "wrong-case", "twice"],
)
@pytest.mark.parametrize(
    ("path", "request_message", "request_type", "reply_type"),
    RPCS,
    ids=[rpc[0].rsplit("/", 1)[1] for rpc in RPCS],
)
async def test_every_rpc_needs_the_security_header(
    channel: Channel,
    path: str,
    request_message: Any,
    request_type: Any,
    reply_type: Any,
    metadata: Sequence[tuple[str, str]] | None,
    source: FakeIdentitySource,
) -> None:
    error = await call(channel, path, request_message, request_type, reply_type, metadata)
    assert error is not None
    assert error.status == Status.INVALID_ARGUMENT
    assert error.message == "security header missing from request"
    assert source.jwt_requests == []


# -- FetchX509SVID ------------------------------------------------------------------------------


async def test_fetch_x509_svid_sends_the_callers_svid_key_and_bundle(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    expected = source.snapshot().identities[0].svid
    async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
        response = await next_message(stream)
    assert spiffe_ids(response) == ["spiffe://example.org/workload"]
    svid = response.svids[0]
    assert svid.x509_svid == expected.cert_chain[0]
    assert svid.x509_svid_key == expected.private_key
    assert svid.bundle == pki.ca.der
    assert response.federated_bundles == {}
    certificate = x509.load_der_x509_certificate(svid.x509_svid)
    key = serialization.load_der_private_key(svid.x509_svid_key, None)
    assert key.public_key() == certificate.public_key()


async def test_fetch_x509_svid_streams_a_rotation(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    entry = source.snapshot().identities[0].entry
    async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
        first = await next_message(stream)
        rotated = pki.identity(entry)
        source.publish(identities=(rotated,))
        second = await next_message(stream)
    assert first.svids[0].x509_svid != second.svids[0].x509_svid
    assert second.svids[0].x509_svid == rotated.svid.cert_chain[0]
    assert second.svids[0].x509_svid_key == rotated.svid.private_key


async def test_fetch_x509_svid_skips_changes_the_caller_cannot_see(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    mine = source.snapshot().identities[0]
    other = pki.identity(make_entry("/other", [Selector("unix", "uid:424242")]))
    async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
        await next_message(stream)
        source.publish(identities=(mine, other))
        added = pki.identity(make_entry("/second", created=5))
        source.publish(identities=(mine, other, added))
        response = await next_message(stream)
    assert spiffe_ids(response) == [
        "spiffe://example.org/workload",
        "spiffe://example.org/second",
    ]


async def test_fetch_x509_svid_sends_the_reduced_set_then_ends_with_permission_denied(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    mine = source.snapshot().identities[0]
    second = pki.identity(make_entry("/second", created=5))
    source.publish(identities=(mine, second))
    async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
        assert len((await next_message(stream)).svids) == 2
        source.publish(identities=(second,))
        assert spiffe_ids(await next_message(stream)) == ["spiffe://example.org/second"]
        source.publish(identities=())
        error = await stream_error(stream)
    assert error.status == Status.PERMISSION_DENIED
    assert error.message == "no identity issued"


async def test_fetch_x509_svid_oldest_entry_wins_a_shared_hint(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    older = pki.identity(make_entry("/older", hint="db", created=1))
    newer = pki.identity(make_entry("/newer", hint="db", created=9))
    plain = pki.identity(make_entry("/plain", created=5))
    source.publish(identities=(newer, plain, older))
    async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
        response = await next_message(stream)
    assert spiffe_ids(response) == ["spiffe://example.org/older", "spiffe://example.org/plain"]
    assert response.svids[0].hint == "db"


async def test_fetch_x509_svid_sends_bundles_of_federated_trust_domains(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    federating = pki.identity(make_entry("/federating", federates_with=[FOREIGN]))
    unrelated = TD  # a federated bundle nobody federates with is not sent
    source.publish(
        identities=(federating,),
        federated_bundles={FOREIGN: pki.foreign_bundle(), unrelated: pki.bundle()},
    )
    async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
        response = await next_message(stream)
    assert response.federated_bundles == {"spiffe://foreign.test": pki.foreign_ca.der}
    assert response.svids[0].bundle == pki.ca.der


async def test_no_identity_is_permission_denied_on_every_rpc(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    source.publish(
        identities=(pki.identity(make_entry("/other", [Selector("unix", "uid:424242")])),)
    )
    streams: list[AsyncIterator[Any]] = [
        stub.fetch_x509_svid(pb.X509SvidRequest()),
        stub.fetch_x509_bundles(pb.X509BundlesRequest()),
        stub.fetch_jwt_bundles(pb.JwtBundlesRequest()),
    ]
    for stream in streams:
        error = await stream_error(stream)
        assert (error.status, error.message) == (Status.PERMISSION_DENIED, "no identity issued")
    for unary in (
        stub.fetch_jwtsvid(pb.JwtsvidRequest(audience=["a"])),
        stub.validate_jwtsvid(pb.ValidateJwtsvidRequest(audience="a", svid="x.y.z")),
    ):
        with pytest.raises(GRPCError) as raised:
            await unary
        assert raised.value.status == Status.PERMISSION_DENIED
    assert source.jwt_requests == []


async def test_attestation_failure_is_unavailable(
    source: FakeIdentitySource, clock: FakeClock, socket_dir: Path
) -> None:
    failing = WorkloadAttestation(
        [("broken", FailingAttestor(UnavailableError("runtime did not answer")))]
    )
    service = WorkloadApiService(source, failing, clock)
    async with WorkloadEndpoint(socket_dir / "failing.sock", service) as endpoint:
        channel = Channel(path=str(endpoint.socket_path))
        try:
            stub = pb.SpiffeWorkloadApiStub(channel, metadata=HEADER)
            error = await stream_error(stub.fetch_x509_svid(pb.X509SvidRequest()))
            assert (error.status, error.message) == (
                Status.UNAVAILABLE,
                "workload attestation failed",
            )
            with pytest.raises(GRPCError) as raised:
                await stub.fetch_jwtsvid(pb.JwtsvidRequest(audience=["a"]))
            assert raised.value.status == Status.UNAVAILABLE
        finally:
            channel.close()


async def test_no_bundle_yet_is_unavailable(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource
) -> None:
    source.publish(bundle=None)
    error = await stream_error(stub.fetch_x509_svid(pb.X509SvidRequest()))
    assert error.status == Status.UNAVAILABLE


# -- FetchX509Bundles ---------------------------------------------------------------------------


async def test_fetch_x509_bundles_streams_changes_and_skips_identical_messages(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    async with opened(stub.fetch_x509_bundles(pb.X509BundlesRequest())) as stream:
        first = await next_message(stream)
        assert first.bundles == {"spiffe://example.org": pki.ca.der}
        # a rotated SVID changes nothing a bundle stream shows
        source.publish(identities=(pki.identity(source.snapshot().identities[0].entry),))
        extra = pki.foreign_ca.der
        bundle = pki.bundle()
        source.publish(
            bundle=bundle.with_changes(
                x509_authorities=(*bundle.x509_authorities, *pki.foreign_bundle().x509_authorities)
            )
        )
        second = await next_message(stream)
    assert second.bundles == {"spiffe://example.org": pki.ca.der + extra}


async def test_fetch_x509_bundles_includes_federated_bundles_of_the_callers_entries(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    federating = pki.identity(make_entry("/federating", federates_with=[FOREIGN]))
    source.publish(identities=(federating,), federated_bundles={FOREIGN: pki.foreign_bundle()})
    async with opened(stub.fetch_x509_bundles(pb.X509BundlesRequest())) as stream:
        response = await next_message(stream)
    assert response.bundles == {
        "spiffe://example.org": pki.ca.der,
        "spiffe://foreign.test": pki.foreign_ca.der,
    }


# -- FetchJWTSVID -------------------------------------------------------------------------------


async def test_fetch_jwt_svid_mints_for_every_requested_audience(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    response = await stub.fetch_jwtsvid(pb.JwtsvidRequest(audience=["one", "two"]))
    assert [svid.spiffe_id for svid in response.svids] == ["spiffe://example.org/workload"]
    assert source.jwt_requests == [("entry-1", ("one", "two"))]
    claims = _claims(response.svids[0].svid)
    assert claims["aud"] == ["one", "two"]
    assert claims["sub"] == "spiffe://example.org/workload"


async def test_fetch_jwt_svid_for_one_requested_identity(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    mine = source.snapshot().identities[0]
    second = pki.identity(make_entry("/second", hint="b", created=5))
    source.publish(identities=(mine, second))
    everything = await stub.fetch_jwtsvid(pb.JwtsvidRequest(audience=["a"]))
    assert [svid.spiffe_id for svid in everything.svids] == [
        "spiffe://example.org/workload",
        "spiffe://example.org/second",
    ]
    one = await stub.fetch_jwtsvid(
        pb.JwtsvidRequest(audience=["a"], spiffe_id="spiffe://example.org/second")
    )
    assert [(svid.spiffe_id, svid.hint) for svid in one.svids] == [
        ("spiffe://example.org/second", "b")
    ]


@pytest.mark.parametrize(
    ("request_message", "status", "message"),
    [
        (pb.JwtsvidRequest(), Status.INVALID_ARGUMENT, "audience must be specified"),
        (pb.JwtsvidRequest(audience=[""]), Status.INVALID_ARGUMENT, "audience must be specified"),
        (
            pb.JwtsvidRequest(audience=["a"], spiffe_id="spiffe://Bad"),
            Status.INVALID_ARGUMENT,
            "invalid requested SPIFFE ID",
        ),
        (
            pb.JwtsvidRequest(audience=["a"], spiffe_id="spiffe://example.org/not-mine"),
            Status.PERMISSION_DENIED,
            "no identity issued",
        ),
    ],
    ids=["no-audience", "empty-audience", "malformed-id", "not-the-callers"],
)
async def test_fetch_jwt_svid_refusals(
    stub: pb.SpiffeWorkloadApiStub,
    source: FakeIdentitySource,
    request_message: pb.JwtsvidRequest,
    status: Status,
    message: str,
) -> None:
    with pytest.raises(GRPCError) as raised:
        await stub.fetch_jwtsvid(request_message)
    assert raised.value.status == status
    assert message in (raised.value.message or "")
    assert source.jwt_requests == []


async def test_fetch_jwt_svid_mint_failure_is_unavailable(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource
) -> None:
    source.jwt_error = UnavailableError("server cannot be reached")
    with pytest.raises(GRPCError) as raised:
        await stub.fetch_jwtsvid(pb.JwtsvidRequest(audience=["a"]))
    assert raised.value.status == Status.UNAVAILABLE
    assert "could not fetch JWT-SVID" in (raised.value.message or "")


# -- FetchJWTBundles ----------------------------------------------------------------------------


async def test_fetch_jwt_bundles_sends_plain_jwks_with_kids(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki
) -> None:
    federating = pki.identity(make_entry("/federating", federates_with=[FOREIGN]))
    source.publish(identities=(federating,), federated_bundles={FOREIGN: pki.foreign_bundle()})
    async with opened(stub.fetch_jwt_bundles(pb.JwtBundlesRequest())) as stream:
        response = await next_message(stream)
        assert set(response.bundles) == {"spiffe://example.org", "spiffe://foreign.test"}
        ours = json.loads(response.bundles["spiffe://example.org"])
        assert [key["kid"] for key in ours["keys"]] == [pki.jwt.kid]
        assert all("use" not in key for key in ours["keys"])
        added = JwtSigner(TD)
        bundle = source.snapshot().bundle
        assert bundle is not None
        source.publish(
            bundle=bundle.with_changes(jwt_authorities=(*bundle.jwt_authorities, added.authority))
        )
        changed = await next_message(stream)
    keys = json.loads(changed.bundles["spiffe://example.org"])["keys"]
    assert [key["kid"] for key in keys] == [pki.jwt.kid, added.kid]


# -- ValidateJWTSVID ----------------------------------------------------------------------------


async def test_validate_jwt_svid_accepts_a_token_from_fetch_jwt_svid(
    stub: pb.SpiffeWorkloadApiStub,
) -> None:
    fetched = await stub.fetch_jwtsvid(pb.JwtsvidRequest(audience=["svc"]))
    response = await stub.validate_jwtsvid(
        pb.ValidateJwtsvidRequest(audience="svc", svid=fetched.svids[0].svid)
    )
    assert response.spiffe_id == "spiffe://example.org/workload"
    claims: dict[str, Any] = response.claims.to_dict()
    assert claims["sub"] == {"stringValue": "spiffe://example.org/workload"}
    assert claims["aud"] == {"listValue": {"values": [{"stringValue": "svc"}]}}
    assert "numberValue" in claims["exp"]


async def test_validate_jwt_svid_gives_aud_as_a_list_and_nested_claims(
    stub: pb.SpiffeWorkloadApiStub, pki: Pki, clock: FakeClock
) -> None:
    token = pki.jwt.sign(
        {
            "sub": "spiffe://example.org/caller",
            "aud": "svc",
            "exp": int(clock.now().timestamp()) + 60,
            "extra": {"ok": True, "none": None, "n": [1, "x"]},
        }
    )
    response = await stub.validate_jwtsvid(pb.ValidateJwtsvidRequest(audience="svc", svid=token))
    claims: dict[str, Any] = response.claims.to_dict()
    assert claims["aud"] == {"listValue": {"values": [{"stringValue": "svc"}]}}
    extra = claims["extra"]["structValue"]
    assert extra["ok"] == {"boolValue": True}
    assert extra["n"]["listValue"]["values"] == [{"numberValue": 1.0}, {"stringValue": "x"}]
    assert "nullValue" in extra["none"]


async def test_validate_jwt_svid_filters_claims_of_foreign_tokens(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki, clock: FakeClock
) -> None:
    federating = pki.identity(make_entry("/federating", federates_with=[FOREIGN]))
    source.publish(identities=(federating,), federated_bundles={FOREIGN: pki.foreign_bundle()})
    token = pki.foreign_jwt.sign(
        {
            "sub": "spiffe://foreign.test/peer",
            "aud": ["svc"],
            "exp": int(clock.now().timestamp()) + 60,
            "email": "x@example.org",
        }
    )
    response = await stub.validate_jwtsvid(pb.ValidateJwtsvidRequest(audience="svc", svid=token))
    assert response.spiffe_id == "spiffe://foreign.test/peer"
    assert set(response.claims.fields) == {"sub", "aud", "exp"}


async def test_validate_jwt_svid_needs_a_federated_bundle_for_foreign_tokens(
    stub: pb.SpiffeWorkloadApiStub, source: FakeIdentitySource, pki: Pki, clock: FakeClock
) -> None:
    # the agent has the foreign bundle, but the caller's entries do not federate with it
    source.publish(federated_bundles={FOREIGN: pki.foreign_bundle()})
    token = pki.foreign_jwt.sign(
        {
            "sub": "spiffe://foreign.test/peer",
            "aud": ["svc"],
            "exp": int(clock.now().timestamp()) + 60,
        }
    )
    with pytest.raises(GRPCError) as raised:
        await stub.validate_jwtsvid(pb.ValidateJwtsvidRequest(audience="svc", svid=token))
    assert raised.value.status == Status.INVALID_ARGUMENT
    assert raised.value.message == 'no keys found for trust domain "foreign.test"'


@pytest.mark.parametrize(
    ("audience", "svid", "message"),
    [
        ("", "a.b.c", "audience must be specified"),
        ("svc", "", "svid must be specified"),
        ("svc", "not-a-token", "unable to parse JWT token"),
    ],
)
async def test_validate_jwt_svid_refusals(
    stub: pb.SpiffeWorkloadApiStub, audience: str, svid: str, message: str
) -> None:
    with pytest.raises(GRPCError) as raised:
        await stub.validate_jwtsvid(pb.ValidateJwtsvidRequest(audience=audience, svid=svid))
    assert raised.value.status == Status.INVALID_ARGUMENT
    assert message in (raised.value.message or "")


async def test_validate_jwt_svid_judges_expiry_by_the_agent_clock(
    stub: pb.SpiffeWorkloadApiStub, clock: FakeClock
) -> None:
    fetched = await stub.fetch_jwtsvid(pb.JwtsvidRequest(audience=["svc"]))
    await clock.advance(600)
    with pytest.raises(GRPCError) as raised:
        await stub.validate_jwtsvid(
            pb.ValidateJwtsvidRequest(audience="svc", svid=fetched.svids[0].svid)
        )
    assert (raised.value.status, raised.value.message) == (
        Status.INVALID_ARGUMENT,
        "token has expired",
    )


def _claims(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))
