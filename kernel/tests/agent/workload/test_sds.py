"""Envoy's Secret Discovery Service on the Workload API socket, called as Envoy calls it: with
grpcio and the published Envoy protos (xds-protos), over a real unix socket, the caller
attested by its pid."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2  # type: ignore[import-untyped]
from envoy.extensions.transport_sockets.tls.v3 import (  # type: ignore[import-untyped]
    secret_pb2,
    tls_spiffe_validator_config_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2  # type: ignore[import-untyped]
from envoy.service.secret.v3 import sds_pb2_grpc  # type: ignore[import-untyped]
from envoy.type.v3 import semantic_version_pb2  # type: ignore[import-untyped]
from google.protobuf import struct_pb2
from google.rpc import status_pb2  # type: ignore[import-untyped]

from pyspire.agent.workload import (
    SecretDiscoveryService,
    WorkloadApiService,
    WorkloadAttestation,
    WorkloadEndpoint,
)
from pyspire.agent.workload.service import FIRST_ANSWER_WAIT
from pyspire.config.sds import SdsConfig
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.selector import Selector
from pyspire_sdk.testing import FakeClock

from ..sync.conftest import eventually
from .helpers import FOREIGN, FakeIdentitySource, Pki, make_entry
from .test_attestation import FailingAttestor

TIMEOUT = 5.0
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
WORKLOAD = "spiffe://example.org/workload"
OWN_TD = "spiffe://example.org"
FOREIGN_TD = "spiffe://foreign.test"


def envoy_node(major: int = 1, minor: int = 30, **metadata: Any) -> Any:
    """The node an Envoy of this version sends on its first request."""
    version = semantic_version_pb2.SemanticVersion(major_number=major, minor_number=minor)
    node = base_pb2.Node(
        id="sidecar",
        cluster="web",
        user_agent_name="envoy",
        user_agent_build_version=base_pb2.BuildVersion(version=version),
    )
    if metadata:
        node.metadata.CopyFrom(struct_pb2.Struct())
        node.metadata.update(metadata)
    return node


def request(names: Sequence[str] = (), **fields: Any) -> Any:
    fields.setdefault("type_url", SECRET_TYPE)
    return discovery_pb2.DiscoveryRequest(resource_names=list(names), **fields)


def secrets_of(response: Any) -> dict[str, Any]:
    """The secrets of a response by name (every resource must be a Secret)."""
    found = {}
    for resource in response.resources:
        assert resource.type_url == SECRET_TYPE
        secret = secret_pb2.Secret()
        assert resource.Unpack(secret)
        found[secret.name] = secret
    return found


def names_of(response: Any) -> list[str]:
    return list(secrets_of(response))


def spiffe_trust_domains(secret: Any) -> dict[str, bytes]:
    """The SPIFFE validator's trust domains in a validation context: name -> bundle PEM."""
    extension = secret.validation_context.custom_validator_config
    assert extension.name == "envoy.tls.cert_validator.spiffe"
    config = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig()
    assert extension.typed_config.Unpack(config)
    return {item.name: item.trust_bundle.inline_bytes for item in config.trust_domains}


def pem_ders(pem: bytes) -> list[bytes]:
    return [
        certificate.public_bytes(serialization.Encoding.DER)
        for certificate in x509.load_pem_x509_certificates(pem)
    ]


def sds_endpoint(
    source: FakeIdentitySource,
    attestation: WorkloadAttestation,
    clock: FakeClock,
    socket_dir: Path,
    config: SdsConfig | None = None,
) -> WorkloadEndpoint:
    return WorkloadEndpoint(
        socket_dir / "public" / "api.sock",
        WorkloadApiService(source, attestation, clock),
        sds=SecretDiscoveryService(source, attestation, clock, config),
        drain_timeout=2,
    )


@pytest.fixture
async def envoy(
    source: FakeIdentitySource,
    attestation: WorkloadAttestation,
    clock: FakeClock,
    socket_dir: Path,
) -> AsyncIterator[Any]:
    """A client of the agent's socket as Envoy has one: grpcio and the published stubs."""
    async with (
        sds_endpoint(source, attestation, clock, socket_dir) as endpoint,
        grpc.aio.insecure_channel(f"unix:{endpoint.socket_path}") as channel,
    ):
        yield sds_pb2_grpc.SecretDiscoveryServiceStub(channel)


async def read(call: Any) -> Any:
    async with asyncio.timeout(TIMEOUT):
        response = await call.read()
    assert response is not grpc.aio.EOF
    return response


async def failure(call: Any) -> grpc.aio.AioRpcError:
    """The error a call ends with."""

    async def read_all() -> None:
        async with asyncio.timeout(TIMEOUT):
            while (await call.read()) is not grpc.aio.EOF:
                pass

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read_all()
    return raised.value


async def refused(method: Any, first: Any) -> tuple[grpc.StatusCode, str]:
    """The status a stream ends with after its first request (the server may end it before
    the request is read), its requests given as an iterator so grpcio writes them."""

    async def requests() -> AsyncIterator[Any]:
        yield first
        await asyncio.Event().wait()  # the side stays open until the call ends

    call = method(requests())
    async with asyncio.timeout(TIMEOUT):
        return await call.code(), await call.details()


# -- StreamSecrets ------------------------------------------------------------------------------


async def test_no_names_stream_everything_the_caller_may_have(
    envoy: Any, source: FakeIdentitySource, pki: Pki
) -> None:
    call = envoy.StreamSecrets()
    await call.write(request(node=envoy_node()))
    response = await read(call)
    call.cancel()
    assert response.version_info == "1"
    assert response.nonce
    assert response.type_url == SECRET_TYPE
    secrets = secrets_of(response)
    assert list(secrets) == [OWN_TD, WORKLOAD]
    assert spiffe_trust_domains(secrets[OWN_TD]) == {
        "example.org": pki.ca.bundle().to_pem().encode()
    }
    certificate = secrets[WORKLOAD].tls_certificate
    svid = source.snapshot().identities[0].svid
    assert pem_ders(certificate.certificate_chain.inline_bytes) == list(svid.cert_chain)
    key = serialization.load_pem_private_key(certificate.private_key.inline_bytes, None)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert der == svid.private_key


async def test_ack_then_rotation_is_pushed_with_the_next_version(
    envoy: Any, source: FakeIdentitySource, pki: Pki
) -> None:
    entry = source.snapshot().identities[0].entry
    call = envoy.StreamSecrets()
    await call.write(request([WORKLOAD], node=envoy_node()))
    first = await read(call)
    await call.write(
        request([WORKLOAD], version_info=first.version_info, response_nonce=first.nonce)
    )
    rotated = pki.identity(entry)
    source.publish(identities=(rotated,))
    second = await read(call)
    call.cancel()
    assert (first.version_info, second.version_info) == ("1", "2")
    assert second.nonce != first.nonce
    chain = secrets_of(second)[WORKLOAD].tls_certificate.certificate_chain.inline_bytes
    assert pem_ders(chain) == list(rotated.svid.cert_chain)


async def test_a_nack_is_not_answered_with_the_same_version(
    envoy: Any, source: FakeIdentitySource
) -> None:
    call = envoy.StreamSecrets()
    await call.write(request([WORKLOAD], node=envoy_node()))
    first = await read(call)
    # Envoy could not apply version 1: it reports the error with the version it still runs.
    await call.write(
        request(
            [WORKLOAD],
            version_info="",
            response_nonce=first.nonce,
            error_detail=status_pb2.Status(code=3, message="bad certificate"),
        )
    )
    # The next answer is to the next request, not a resend of what was rejected.
    await call.write(request(["ROOTCA"], version_info="", response_nonce=first.nonce))
    second = await read(call)
    call.cancel()
    assert names_of(second) == ["ROOTCA"]
    assert second.version_info == "1"


async def test_a_request_with_a_stale_nonce_is_ignored(envoy: Any) -> None:
    call = envoy.StreamSecrets()
    await call.write(request([WORKLOAD], node=envoy_node()))
    first = await read(call)
    await call.write(request([OWN_TD], version_info="1", response_nonce="not-the-last-nonce"))
    await call.write(request(["default"], version_info="1", response_nonce=first.nonce))
    second = await read(call)
    call.cancel()
    assert names_of(second) == ["default"]


async def test_a_bundle_change_is_pushed_on_an_open_stream(
    envoy: Any, source: FakeIdentitySource, pki: Pki
) -> None:
    call = envoy.StreamSecrets()
    await call.write(request(["ROOTCA"], node=envoy_node()))
    first = await read(call)
    await call.write(request(["ROOTCA"], version_info="1", response_nonce=first.nonce))
    extra = pki.foreign_ca.bundle().x509_authorities[0]
    source.publish(bundle=pki.bundle(extra))
    second = await read(call)
    call.cancel()
    assert second.version_info == "2"
    bundle = spiffe_trust_domains(secrets_of(second)["ROOTCA"])["example.org"]
    assert pem_ders(bundle) == [pki.ca.der, extra.der]


async def test_changes_the_caller_cannot_see_are_not_pushed(
    envoy: Any, source: FakeIdentitySource, pki: Pki
) -> None:
    mine = source.snapshot().identities[0]
    other = pki.identity(make_entry("/other", [Selector("unix", "uid:424242")]))
    call = envoy.StreamSecrets()
    await call.write(request(node=envoy_node()))
    await read(call)
    source.publish(identities=(mine, other))
    added = pki.identity(make_entry("/second", created=5))
    source.publish(identities=(mine, other, added))
    second = await read(call)
    call.cancel()
    assert second.version_info == "2"
    assert names_of(second) == [OWN_TD, WORKLOAD, "spiffe://example.org/second"]


async def test_default_names_and_federated_trust_domains(
    envoy: Any, source: FakeIdentitySource, pki: Pki
) -> None:
    federating = pki.identity(make_entry("/federating", federates_with=[FOREIGN], created=5))
    source.publish(
        identities=(source.snapshot().identities[0], federating),
        federated_bundles={FOREIGN: pki.foreign_bundle()},
    )
    response = await envoy.FetchSecrets(
        request(["default", "ROOTCA", "ALL", FOREIGN_TD], node=envoy_node()), timeout=TIMEOUT
    )
    secrets = secrets_of(response)
    assert sorted(secrets) == sorted(["default", "ROOTCA", "ALL", FOREIGN_TD])
    default_chain = secrets["default"].tls_certificate.certificate_chain.inline_bytes
    assert pem_ders(default_chain)[0] == source.snapshot().identities[0].svid.cert_chain[0]
    assert list(spiffe_trust_domains(secrets["ALL"])) == ["example.org", "foreign.test"]
    assert pem_ders(spiffe_trust_domains(secrets[FOREIGN_TD])["foreign.test"]) == [
        pki.foreign_ca.der
    ]
    assert list(spiffe_trust_domains(secrets["ROOTCA"])) == ["example.org"]
    everything = await envoy.FetchSecrets(request(node=envoy_node()), timeout=TIMEOUT)
    assert names_of(everything) == [
        OWN_TD,
        FOREIGN_TD,
        WORKLOAD,
        "spiffe://example.org/federating",
    ]


async def test_fetch_secrets_has_no_version_or_nonce(envoy: Any) -> None:
    response = await envoy.FetchSecrets(request([WORKLOAD]), timeout=TIMEOUT)
    assert (response.version_info, response.nonce) == ("", "")
    assert names_of(response) == [WORKLOAD]


@pytest.mark.parametrize(
    ("node", "config", "spiffe"),
    [
        (envoy_node(1, 18), SdsConfig(), True),
        (envoy_node(1, 17), SdsConfig(), False),
        (None, SdsConfig(), True),
        (envoy_node(), SdsConfig(disable_spiffe_cert_validation=True), False),
        (envoy_node(disable_spiffe_cert_validation="true"), SdsConfig(), False),
        (envoy_node(disable_spiffe_cert_validation=True), SdsConfig(), False),
        (
            envoy_node(disable_spiffe_cert_validation=False),
            SdsConfig(disable_spiffe_cert_validation=True),
            True,
        ),
        (
            envoy_node(disable_spiffe_cert_validation="maybe"),
            SdsConfig(disable_spiffe_cert_validation=True),
            False,
        ),
    ],
    ids=[
        "envoy-1.18",
        "envoy-1.17",
        "no-node",
        "disabled-by-agent",
        "disabled-by-node-string",
        "disabled-by-node-bool",
        "enabled-by-node",
        "unreadable-node-value",
    ],
)
async def test_validator_choice(
    node: Any,
    config: SdsConfig,
    spiffe: bool,
    source: FakeIdentitySource,
    attestation: WorkloadAttestation,
    clock: FakeClock,
    socket_dir: Path,
    pki: Pki,
) -> None:
    async with (
        sds_endpoint(source, attestation, clock, socket_dir, config) as endpoint,
        grpc.aio.insecure_channel(f"unix:{endpoint.socket_path}") as channel,
    ):
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
        fields = {"node": node} if node is not None else {}
        response = await stub.FetchSecrets(request([OWN_TD], **fields), timeout=TIMEOUT)
        context = secrets_of(response)[OWN_TD].validation_context
        if spiffe:
            assert list(spiffe_trust_domains(secrets_of(response)[OWN_TD])) == ["example.org"]
            assert not context.HasField("trusted_ca")
        else:
            assert not context.HasField("custom_validator_config")
            assert pem_ders(context.trusted_ca.inline_bytes) == [pki.ca.der]
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.FetchSecrets(request(["ALL"], **fields), timeout=TIMEOUT)
            assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_configured_default_names(
    source: FakeIdentitySource,
    attestation: WorkloadAttestation,
    clock: FakeClock,
    socket_dir: Path,
) -> None:
    config = SdsConfig(
        default_svid_name="mine", default_bundle_name="ca", default_all_bundles_name="ca"
    )
    async with (
        sds_endpoint(source, attestation, clock, socket_dir, config) as endpoint,
        grpc.aio.insecure_channel(f"unix:{endpoint.socket_path}") as channel,
    ):
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
        response = await stub.FetchSecrets(request(["mine", "ca"]), timeout=TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.FetchSecrets(request(["default"]), timeout=TIMEOUT)
    secrets = secrets_of(response)
    assert secrets["mine"].HasField("tls_certificate")
    # Equal bundle names: the agent's own trust domain wins, as in SPIRE.
    assert list(spiffe_trust_domains(secrets["ca"])) == ["example.org"]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_unknown_name_ends_the_stream_with_invalid_argument(envoy: Any) -> None:
    status = await refused(
        envoy.StreamSecrets, request(["spiffe://example.org/WHATEVER"], node=envoy_node())
    )
    assert status == (
        grpc.StatusCode.INVALID_ARGUMENT,
        'workload is not authorized for the requested identities ["spiffe://example.org/WHATEVER"]',
    )


async def test_another_type_url_is_refused(envoy: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await envoy.FetchSecrets(
            request(type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster"),
            timeout=TIMEOUT,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("type_url: expected ")


async def test_the_first_answer_waits_for_the_callers_svid(
    envoy: Any, source: FakeIdentitySource, clock: FakeClock
) -> None:
    mine = source.snapshot().identities[0]
    source.publish(identities=(), entries=(mine.entry,))
    call = envoy.StreamSecrets()
    await call.write(request([WORKLOAD], node=envoy_node()))
    await eventually(lambda: clock.sleepers >= 1)  # waiting for the SVID, on the agent's clock
    assert source.open_demands == 1
    source.publish(identities=(mine,), entries=None)
    response = await read(call)
    call.cancel()
    assert names_of(response) == [WORKLOAD]


async def test_the_first_answer_waits_no_longer_than_first_answer_wait(
    envoy: Any, source: FakeIdentitySource, clock: FakeClock
) -> None:
    mine = source.snapshot().identities[0]
    source.publish(identities=(), entries=(mine.entry,))
    call = envoy.StreamSecrets()
    await call.write(request([WORKLOAD], node=envoy_node()))
    await eventually(lambda: clock.sleepers >= 1)
    await clock.advance(FIRST_ANSWER_WAIT)
    error = await failure(call)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "no valid x509 svid for the caller yet",
    )


async def test_a_stream_ends_when_the_callers_last_entry_goes(
    envoy: Any, source: FakeIdentitySource, pki: Pki
) -> None:
    call = envoy.StreamSecrets()
    await call.write(request(node=envoy_node()))
    await read(call)
    other = pki.identity(make_entry("/other", [Selector("unix", "uid:424242")]))
    source.publish(identities=(other,))
    error = await failure(call)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "no identity issued",
    )


async def test_closing_the_endpoint_ends_streams_with_unavailable(
    source: FakeIdentitySource,
    attestation: WorkloadAttestation,
    clock: FakeClock,
    socket_dir: Path,
) -> None:
    endpoint = sds_endpoint(source, attestation, clock, socket_dir)
    await endpoint.start()
    try:
        async with grpc.aio.insecure_channel(f"unix:{endpoint.socket_path}") as channel:
            call = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets()
            await call.write(request(node=envoy_node()))
            await read(call)
            closing = asyncio.create_task(endpoint.close())
            error = await failure(call)
            await closing
    finally:
        await endpoint.close()
    assert error.code() == grpc.StatusCode.UNAVAILABLE


# -- who gets nothing ---------------------------------------------------------------------------


async def test_a_caller_without_an_entry_gets_no_secret(
    envoy: Any, source: FakeIdentitySource, pki: Pki
) -> None:
    source.publish(
        identities=(pki.identity(make_entry("/other", [Selector("unix", "uid:424242")])),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await envoy.FetchSecrets(request(), timeout=TIMEOUT)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "no identity issued",
    )
    denied = (grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
    assert await refused(envoy.StreamSecrets, request(node=envoy_node())) == denied
    assert await refused(envoy.DeltaSecrets, delta()) == denied


async def test_an_unattested_caller_gets_no_secret(
    source: FakeIdentitySource, clock: FakeClock, socket_dir: Path
) -> None:
    failing = WorkloadAttestation(
        [("broken", FailingAttestor(UnavailableError("runtime did not answer")))]
    )
    async with (
        sds_endpoint(source, failing, clock, socket_dir) as endpoint,
        grpc.aio.insecure_channel(f"unix:{endpoint.socket_path}") as channel,
    ):
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.FetchSecrets(request(), timeout=TIMEOUT)
        # The caller is attested before its first request is read.
        stream = stub.StreamSecrets()
        async with asyncio.timeout(TIMEOUT):
            stream_error = (await stream.code(), await stream.details())
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "workload attestation failed",
    )
    assert stream_error == (grpc.StatusCode.UNAVAILABLE, "workload attestation failed")
    assert source.open_demands == 0


# -- DeltaSecrets -------------------------------------------------------------------------------


def delta(subscribe: Sequence[str] = (), unsubscribe: Sequence[str] = (), **fields: Any) -> Any:
    return discovery_pb2.DeltaDiscoveryRequest(
        type_url=SECRET_TYPE,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        **fields,
    )


def delta_names(response: Any) -> list[str]:
    names = []
    for resource in response.resources:
        secret = secret_pb2.Secret()
        assert resource.resource.Unpack(secret)
        assert secret.name == resource.name
        assert resource.version
        names.append(resource.name)
    return names


async def test_delta_wildcard_subscribe_unsubscribe_and_rotation(
    envoy: Any, source: FakeIdentitySource, pki: Pki
) -> None:
    entry = source.snapshot().identities[0].entry
    call = envoy.DeltaSecrets()
    await call.write(delta(node=envoy_node()))
    first = await read(call)
    assert delta_names(first) == [OWN_TD, WORKLOAD]
    assert first.nonce
    await call.write(delta(["default"], response_nonce=first.nonce))
    second = await read(call)
    assert delta_names(second) == ["default"]
    assert list(second.removed_resources) == []
    await call.write(delta(unsubscribe=["default"], response_nonce=second.nonce))
    source.publish(identities=(pki.identity(entry),))
    third = await read(call)
    call.cancel()
    # Only the rotated certificate: the bundle did not change, "default" is unsubscribed.
    assert delta_names(third) == [WORKLOAD]
    assert third.resources[0].version != first.resources[1].version


async def test_delta_explicit_names_missing_ones_and_a_nack(
    envoy: Any, source: FakeIdentitySource, pki: Pki
) -> None:
    call = envoy.DeltaSecrets()
    await call.write(delta(["ROOTCA", "spiffe://example.org/nobody"], node=envoy_node()))
    first = await read(call)
    assert delta_names(first) == ["ROOTCA"]
    assert list(first.removed_resources) == ["spiffe://example.org/nobody"]
    await call.write(
        delta(
            response_nonce=first.nonce,
            error_detail=status_pb2.Status(code=3, message="cannot load"),
        )
    )
    # Nothing is resent for the NACK: the next answer is for the next subscription.
    await call.write(delta([WORKLOAD], response_nonce=first.nonce))
    second = await read(call)
    call.cancel()
    assert delta_names(second) == [WORKLOAD]
    assert list(second.removed_resources) == []


async def test_delta_initial_versions_spare_what_the_client_holds(
    envoy: Any, source: FakeIdentitySource
) -> None:
    call = envoy.DeltaSecrets()
    await call.write(delta(node=envoy_node()))
    first = await read(call)
    call.cancel()
    held = {resource.name: resource.version for resource in first.resources}
    again = envoy.DeltaSecrets()
    await again.write(
        delta([OWN_TD, WORKLOAD, "default"], node=envoy_node(), initial_resource_versions=held)
    )
    response = await read(again)
    again.cancel()
    assert delta_names(response) == ["default"]


async def test_delta_wildcard_reports_a_certificate_that_is_gone(
    envoy: Any, source: FakeIdentitySource, pki: Pki
) -> None:
    mine = source.snapshot().identities[0]
    second = pki.identity(make_entry("/second", created=5))
    source.publish(identities=(mine, second))
    call = envoy.DeltaSecrets()
    await call.write(delta(node=envoy_node()))
    first = await read(call)
    assert delta_names(first) == [OWN_TD, WORKLOAD, "spiffe://example.org/second"]
    source.publish(identities=(mine,))
    update = await read(call)
    call.cancel()
    assert delta_names(update) == []
    assert list(update.removed_resources) == ["spiffe://example.org/second"]


# -- malformed requests -------------------------------------------------------------------------

# DiscoveryRequest{resource_names: [b"\xff\xfe"]}: a name that is not UTF-8.
_BAD_UTF8 = b"\x1a\x02\xff\xfe"


async def test_malformed_requests_get_invalid_argument(
    source: FakeIdentitySource,
    attestation: WorkloadAttestation,
    clock: FakeClock,
    socket_dir: Path,
    raw_grpc: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fetch = "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets"
    stream = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
    valid = request([WORKLOAD], node=envoy_node()).SerializeToString()
    async with sds_endpoint(source, attestation, clock, socket_dir) as endpoint:
        path = str(endpoint.socket_path)
        bodies = raw_grpc.malformed_bodies(valid)
        bodies["invalid utf-8"] = raw_grpc.frame(_BAD_UTF8)
        for body in bodies.values():
            await raw_grpc.expect_malformed(caplog, fetch, body, path=path)
        for name in ("invalid utf-8", "random bytes", "truncated message"):
            await raw_grpc.expect_malformed(caplog, stream, bodies[name], path=path)
        reply = await raw_grpc.call(fetch, raw_grpc.frame(valid), path=path)
    assert reply.status.name == "OK"
