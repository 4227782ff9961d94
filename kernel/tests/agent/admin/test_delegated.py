"""The Delegated Identity API on a real admin socket: the test process is the delegate,
attested by its pid with the unix attestor (its interpreter's path), and subscribes on behalf of
workloads named by selectors or by the pid of a real ``sleep`` process. The identity source is a
fake holding real certificates, keys and signed JWTs; every refusal is checked by its status and
message."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
)
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire_workloadattestor_unix import UnixAttestor, UnixAttestorConfig
from spiffe import JwtBundle, JwtSvid, X509Bundle
from spiffe import TrustDomain as PyTrustDomain

from pyspire.agent.admin import AdminEndpoint, DelegatedIdentityService
from pyspire.agent.identities import Snapshot
from pyspire.agent.workload import WorkloadAttestation
from pyspire.proto.gen.spire.api import types as types_pb
from pyspire.proto.gen.spire.api.agent.delegatedidentity import v1 as pb
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock, make_host_services

from ..workload.helpers import FOREIGN, TD, FakeIdentitySource, Pki, make_entry, opened

WAIT = 5.0
PYTHON = os.readlink("/proc/self/exe")
SLEEP = os.path.realpath(shutil.which("sleep") or "/bin/sleep")

DELEGATE = make_entry("/delegate", [Selector("unix", f"path:{PYTHON}")], entry_id="delegate")
WEB = make_entry("/web", [Selector("k8s", "ns:web")], entry_id="web", created=1, hint="web")
SLEEPER = make_entry("/sleeper", [Selector("unix", f"path:{SLEEP}")], entry_id="sleeper", created=2)
WEB_SELECTORS = [types_pb.Selector(type="k8s", value="ns:web"), types_pb.Selector("k8s", "sa:x")]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def clock() -> FakeClock:
    """Real time at the start: py-spiffe checks JWT expiry against the wall clock."""
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def source(pki: Pki, clock: FakeClock) -> FakeIdentitySource:
    return FakeIdentitySource(
        pki,
        clock,
        Snapshot(
            revision=1,
            identities=tuple(pki.identity(entry) for entry in (DELEGATE, WEB, SLEEPER)),
            bundle=pki.bundle(),
            federated_bundles={},
        ),
    )


@pytest.fixture
async def attestation(tmp_path: Path) -> WorkloadAttestation:
    unix = UnixAttestor()
    await unix.configure(
        UnixAttestorConfig(discover_workload_path=True, workload_size_limit=-1),
        make_host_services(tmp_path, plugin_name="unix"),
    )
    return WorkloadAttestation([("unix", unix)], timeout=5)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory: unix socket paths are limited to 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="pyspire-di-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Admin:
    """Starts the service on an admin socket with a list of authorized delegates."""

    def __init__(
        self,
        source: FakeIdentitySource,
        attestation: WorkloadAttestation,
        clock: FakeClock,
        path: Path,
    ) -> None:
        self.source, self.attestation, self.clock, self.path = source, attestation, clock, path
        self.endpoint: AdminEndpoint | None = None
        self.channel: Channel | None = None

    async def start(self, *authorized: SpiffeId) -> pb.DelegatedIdentityStub:
        service = DelegatedIdentityService(
            self.source, self.attestation, self.clock, authorized_delegates=authorized
        )
        self.endpoint = AdminEndpoint(self.path, [service], drain_timeout=2)
        await self.endpoint.start()
        self.channel = Channel(path=str(self.path))
        return pb.DelegatedIdentityStub(self.channel, timeout=WAIT)

    async def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.endpoint is not None:
            await self.endpoint.close()


@pytest.fixture
async def admin(
    source: FakeIdentitySource, attestation: WorkloadAttestation, clock: FakeClock, socket_dir: Path
) -> AsyncIterator[Admin]:
    found = Admin(source, attestation, clock, socket_dir / "private" / "admin.sock")
    try:
        yield found
    finally:
        await found.close()


@pytest.fixture
async def stub(admin: Admin) -> pb.DelegatedIdentityStub:
    return await admin.start(DELEGATE.spiffe_id)


@pytest.fixture
async def sleeper() -> AsyncIterator[int]:
    """The pid of a real ``sleep`` process."""
    process = await asyncio.create_subprocess_exec(SLEEP, "60")
    try:
        yield process.pid
    finally:
        process.kill()
        await process.wait()


async def first(stream: AsyncIterator[Any]) -> Any:
    async with asyncio.timeout(WAIT):
        return await anext(stream)


async def refusal(call: Any) -> GRPCError:
    """The GRPCError a call (a coroutine or the first message of a stream) ends with."""

    async def answer() -> None:
        async with asyncio.timeout(WAIT):
            if hasattr(call, "__anext__"):
                async with opened(call) as stream:
                    await anext(stream)
            else:
                await call

    with pytest.raises(GRPCError) as caught:
        await answer()
    return caught.value


def svid_ids(response: pb.SubscribeToX509SviDsResponse) -> list[str]:
    return [
        f"spiffe://{item.x509_svid.id.trust_domain}{item.x509_svid.id.path}"
        for item in response.x509_svids
    ]


def check_key_matches(item: pb.X509SvidWithKey) -> x509.Certificate:
    """The leaf of ``item``, after checking its PKCS#8 key is the leaf's."""
    leaf = x509.load_der_x509_certificate(item.x509_svid.cert_chain[0])
    key = load_der_private_key(item.x509_svid_key, None)
    public = PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(Encoding.DER, public) == leaf.public_key().public_bytes(
        Encoding.DER, public
    )
    return leaf


# -- SubscribeToX509SVIDs -------------------------------------------------------------------


async def test_x509_svids_by_selectors_stream_rotation_and_entry_changes(
    stub: pb.DelegatedIdentityStub, source: FakeIdentitySource, pki: Pki
) -> None:
    request = pb.SubscribeToX509SviDsRequest(selectors=WEB_SELECTORS)
    async with opened(stub.subscribe_to_x509_svi_ds(request)) as stream:
        answer = await first(stream)
        assert svid_ids(answer) == [str(WEB.spiffe_id)]
        [item] = answer.x509_svids
        leaf = check_key_matches(item)
        assert item.x509_svid.hint == "web"
        assert item.x509_svid.expires_at == int(leaf.not_valid_after_utc.timestamp())
        assert answer.federates_with == []
        assert frozenset({Selector("k8s", "ns:web"), Selector("k8s", "sa:x")}) in source.demands

        rotated = pki.identity(WEB)
        others = [i for i in source.snapshot().identities if i.entry.id != WEB.id]
        source.publish(identities=(*others, rotated))
        answer = await first(stream)
        assert check_key_matches(answer.x509_svids[0]).serial_number == int(
            x509.load_der_x509_certificate(rotated.svid.cert_chain[0]).serial_number
        )
        assert answer.x509_svids[0].x509_svid.cert_chain[0] != item.x509_svid.cert_chain[0]

        source.publish(identities=tuple(others))  # the entry was deleted
        assert (await first(stream)).x509_svids == []

        late = make_entry("/late", [Selector("k8s", "sa:x")], entry_id="late", created=3)
        source.publish(identities=(*others, pki.identity(late)))
        assert svid_ids(await first(stream)) == [str(late.spiffe_id)]


async def test_x509_svids_by_pid_are_those_the_agent_attests_for_the_process(
    stub: pb.DelegatedIdentityStub, sleeper: int
) -> None:
    request = pb.SubscribeToX509SviDsRequest(pid=sleeper)
    async with opened(stub.subscribe_to_x509_svi_ds(request)) as stream:
        answer = await first(stream)
    assert svid_ids(answer) == [str(SLEEPER.spiffe_id)]
    check_key_matches(answer.x509_svids[0])


async def test_x509_svids_leave_out_admin_and_downstream_entries_and_name_federations(
    stub: pb.DelegatedIdentityStub, source: FakeIdentitySource, pki: Pki
) -> None:
    federated = replace(WEB, federates_with=(FOREIGN,))
    admin = make_entry("/admin", [Selector("k8s", "ns:web")], entry_id="admin", created=4)
    downstream = make_entry("/down", [Selector("k8s", "ns:web")], entry_id="down", created=5)
    entries = [federated, replace(admin, admin=True), replace(downstream, downstream=True)]
    source.publish(
        identities=(pki.identity(DELEGATE), *(pki.identity(entry) for entry in entries)),
        federated_bundles={FOREIGN: pki.foreign_bundle()},
    )
    request = pb.SubscribeToX509SviDsRequest(selectors=WEB_SELECTORS)
    async with opened(stub.subscribe_to_x509_svi_ds(request)) as stream:
        answer = await first(stream)
    assert svid_ids(answer) == [str(WEB.spiffe_id)]
    assert answer.federates_with == [f"spiffe://{FOREIGN.name}"]


# -- bundles --------------------------------------------------------------------------------


async def test_x509_bundles_are_ours_and_every_federated_one_as_concatenated_der(
    stub: pb.DelegatedIdentityStub, source: FakeIdentitySource, pki: Pki
) -> None:
    extra = pki.foreign_ca.bundle().x509_authorities[0]
    async with opened(stub.subscribe_to_x509_bundles(pb.SubscribeToX509BundlesRequest())) as stream:
        answer = await first(stream)
        assert answer.ca_certificates == {
            f"spiffe://{TD.name}": b"".join(a.der for a in pki.bundle().x509_authorities)
        }
        source.publish(bundle=pki.bundle(extra), federated_bundles={FOREIGN: pki.foreign_bundle()})
        answer = await first(stream)
    ours = answer.ca_certificates[f"spiffe://{TD.name}"]
    assert ours == pki.bundle().x509_authorities[0].der + extra.der
    parsed = X509Bundle.parse_raw(PyTrustDomain(TD.name), ours)
    assert len(parsed.x509_authorities) == 2
    assert answer.ca_certificates[f"spiffe://{FOREIGN.name}"] == (
        pki.foreign_bundle().x509_authorities_der()
    )


async def test_jwt_svids_by_selectors_and_pid_validate_against_the_jwt_bundles(
    stub: pb.DelegatedIdentityStub, source: FakeIdentitySource, sleeper: int
) -> None:
    by_selectors = await stub.fetch_jwtsvi_ds(
        pb.FetchJwtsviDsRequest(audience=["db", "api"], selectors=WEB_SELECTORS)
    )
    by_pid = await stub.fetch_jwtsvi_ds(pb.FetchJwtsviDsRequest(audience=["db"], pid=sleeper))
    assert source.jwt_requests == [("web", ("db", "api")), ("sleeper", ("db",))]
    [web] = by_selectors.svids
    [sleeping] = by_pid.svids
    assert (web.id.path, web.hint, sleeping.id.path) == ("/web", "web", "/sleeper")
    assert web.expires_at > web.issued_at > 0

    request = pb.SubscribeToJwtBundlesRequest()
    async with opened(stub.subscribe_to_jwt_bundles(request)) as stream:
        bundles = (await first(stream)).bundles
    assert list(bundles) == [f"spiffe://{TD.name}"]
    bundle = JwtBundle.parse(PyTrustDomain(TD.name), bundles[f"spiffe://{TD.name}"])
    validated = JwtSvid.parse_and_validate(web.token, bundle, {"api"})
    assert str(validated.spiffe_id) == str(WEB.spiffe_id)
    assert str(JwtSvid.parse_and_validate(sleeping.token, bundle, {"db"}).spiffe_id) == str(
        SLEEPER.spiffe_id
    )


async def test_jwt_bundles_stream_again_when_a_bundle_changes(
    stub: pb.DelegatedIdentityStub, source: FakeIdentitySource, pki: Pki
) -> None:
    async with opened(stub.subscribe_to_jwt_bundles(pb.SubscribeToJwtBundlesRequest())) as stream:
        assert list((await first(stream)).bundles) == [f"spiffe://{TD.name}"]
        source.publish(federated_bundles={FOREIGN: pki.foreign_bundle()})
        bundles = (await first(stream)).bundles
    assert sorted(bundles) == [f"spiffe://{TD.name}", f"spiffe://{FOREIGN.name}"]
    assert bundles[f"spiffe://{FOREIGN.name}"] == pki.foreign_bundle().jwt_bundle_jwks()


# -- refusals -------------------------------------------------------------------------------


def every_call(stub: pb.DelegatedIdentityStub) -> dict[str, Any]:
    return {
        "x509_svids": stub.subscribe_to_x509_svi_ds(
            pb.SubscribeToX509SviDsRequest(selectors=WEB_SELECTORS)
        ),
        "x509_bundles": stub.subscribe_to_x509_bundles(pb.SubscribeToX509BundlesRequest()),
        "jwt_svids": stub.fetch_jwtsvi_ds(
            pb.FetchJwtsviDsRequest(audience=["db"], selectors=WEB_SELECTORS)
        ),
        "jwt_bundles": stub.subscribe_to_jwt_bundles(pb.SubscribeToJwtBundlesRequest()),
    }


async def test_a_caller_not_listed_is_refused_by_every_method_saying_why(admin: Admin) -> None:
    stub = await admin.start(SpiffeId.parse("spiffe://example.org/someone-else"))
    for name, call in every_call(stub).items():
        error = await refusal(call)
        assert error.status is Status.PERMISSION_DENIED, name
        assert error.message == (
            "caller not configured as an authorized delegate: none of its identities "
            f"({DELEGATE.spiffe_id}) is listed in authorized_delegates"
        ), name


async def test_no_delegates_configured_refuses_everyone(admin: Admin) -> None:
    stub = await admin.start()
    error = await refusal(every_call(stub)["x509_bundles"])
    assert error.status is Status.PERMISSION_DENIED
    assert "not configured as an authorized delegate" in (error.message or "")


async def test_a_caller_without_an_entry_is_refused(
    admin: Admin, source: FakeIdentitySource, pki: Pki
) -> None:
    source.publish(identities=(pki.identity(WEB),))
    stub = await admin.start(DELEGATE.spiffe_id)
    for name, call in every_call(stub).items():
        error = await refusal(call)
        assert error.status is Status.PERMISSION_DENIED, name
        assert (error.message or "").startswith("no identity issued: the caller matches no"), name


async def test_before_the_first_sync_calls_are_unavailable(
    admin: Admin, source: FakeIdentitySource
) -> None:
    source.publish(synced=False)
    stub = await admin.start(DELEGATE.spiffe_id)
    error = await refusal(every_call(stub)["jwt_svids"])
    assert (error.status, error.message) == (
        Status.UNAVAILABLE,
        "agent has not synced its entries yet",
    )


@pytest.mark.parametrize(
    ("selectors", "pid"),
    [([], 0), (WEB_SELECTORS, 42)],
    ids=["neither", "both"],
)
async def test_selectors_and_pid_exclude_each_other(
    stub: pb.DelegatedIdentityStub, selectors: list[types_pb.Selector], pid: int
) -> None:
    calls = [
        stub.subscribe_to_x509_svi_ds(pb.SubscribeToX509SviDsRequest(selectors=selectors, pid=pid)),
        stub.fetch_jwtsvi_ds(
            pb.FetchJwtsviDsRequest(audience=["db"], selectors=selectors, pid=pid)
        ),
    ]
    for call in calls:
        error = await refusal(call)
        assert (error.status, error.message) == (
            Status.INVALID_ARGUMENT,
            "must provide either selectors or non-zero PID, but not both",
        )


async def test_malformed_selectors_a_negative_pid_and_no_audience_are_invalid(
    stub: pb.DelegatedIdentityStub,
) -> None:
    bad = [types_pb.Selector(type="k8s", value="")]
    error = await refusal(
        stub.subscribe_to_x509_svi_ds(pb.SubscribeToX509SviDsRequest(selectors=bad))
    )
    assert error.status is Status.INVALID_ARGUMENT
    assert (error.message or "").startswith(
        "could not parse provided selectors: invalid selectors[0]"
    )
    error = await refusal(stub.fetch_jwtsvi_ds(pb.FetchJwtsviDsRequest(audience=["db"], pid=-3)))
    assert (error.status, error.message) == (
        Status.INVALID_ARGUMENT,
        "pid must be positive, got -3",
    )
    for audience in ([], ["db", ""]):
        request = pb.FetchJwtsviDsRequest(audience=audience, selectors=WEB_SELECTORS)
        error = await refusal(stub.fetch_jwtsvi_ds(request))
        assert (error.status, error.message) == (
            Status.INVALID_ARGUMENT,
            "audience must be specified",
        )


async def test_a_pid_that_cannot_be_attested_is_unavailable(
    stub: pb.DelegatedIdentityStub,
) -> None:
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    error = await refusal(
        stub.subscribe_to_x509_svi_ds(pb.SubscribeToX509SviDsRequest(pid=gone.pid))
    )
    assert error.status is Status.UNAVAILABLE
    assert (error.message or "").startswith(f"workload attestation failed for pid {gone.pid}: ")


async def test_jwt_svids_for_a_workload_without_entries_are_denied(
    stub: pb.DelegatedIdentityStub,
) -> None:
    request = pb.FetchJwtsviDsRequest(
        audience=["db"], selectors=[types_pb.Selector(type="k8s", value="ns:nothing")]
    )
    error = await refusal(stub.fetch_jwtsvi_ds(request))
    assert (error.status, error.message) == (Status.PERMISSION_DENIED, "no identity issued")


async def test_a_jwt_svid_that_cannot_be_minted_is_unavailable(
    stub: pb.DelegatedIdentityStub, source: FakeIdentitySource
) -> None:
    source.jwt_error = RuntimeError("server away")
    request = pb.FetchJwtsviDsRequest(audience=["db"], selectors=WEB_SELECTORS)
    error = await refusal(stub.fetch_jwtsvi_ds(request))
    assert (error.status, error.message) == (
        Status.UNAVAILABLE,
        "could not fetch JWT-SVID: server away",
    )


async def test_a_delegate_whose_entry_goes_loses_its_open_streams(
    stub: pb.DelegatedIdentityStub, source: FakeIdentitySource, pki: Pki
) -> None:
    request = pb.SubscribeToX509SviDsRequest(selectors=WEB_SELECTORS)
    async with opened(stub.subscribe_to_x509_svi_ds(request)) as stream:
        await first(stream)
        source.publish(identities=(pki.identity(WEB),))
        with pytest.raises(GRPCError) as caught:
            await first(stream)
    assert caught.value.status is Status.PERMISSION_DENIED


async def test_closing_the_endpoint_ends_open_streams_with_unavailable(
    admin: Admin, stub: pb.DelegatedIdentityStub
) -> None:
    async with opened(stub.subscribe_to_jwt_bundles(pb.SubscribeToJwtBundlesRequest())) as stream:
        await first(stream)
        assert admin.endpoint is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        closing = asyncio.ensure_future(admin.endpoint.close())
        with pytest.raises(GRPCError) as caught:
            await first(stream)
        await closing
    assert caught.value.status is Status.UNAVAILABLE
    assert caught.value.message == "delegated identity api is shutting down"
    assert loop.time() - started < 2, "the endpoint waited for the stream to end on its own"
