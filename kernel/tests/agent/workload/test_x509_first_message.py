"""FetchX509SVID's first message: sent without waiting for the source's watch, encoded once
per snapshot revision and identity set, and never stale after a change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from grpclib.client import Channel

from pyspire.agent.identities import Identity, Snapshot
from pyspire.agent.workload import WorkloadApiService, WorkloadAttestation, WorkloadEndpoint
from pyspire.proto.gen import workload as pb
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import HEADER
from .helpers import FOREIGN, FakeIdentitySource, Pki, make_entry, opened

TIMEOUT = 5.0


async def next_message(stream: AsyncIterator[pb.X509SvidResponse]) -> pb.X509SvidResponse:
    async with asyncio.timeout(TIMEOUT):
        return await anext(stream)


class HeldWatchSource(FakeIdentitySource):
    """A source whose watch yields nothing until :attr:`release` is set, as a cache whose
    watch is slow to start."""

    def __init__(self, pki: Pki, clock: Clock, snapshot: Snapshot) -> None:
        super().__init__(pki, clock, snapshot)
        self.release = asyncio.Event()

    async def watch(self) -> AsyncIterator[Snapshot]:
        await self.release.wait()
        async for snapshot in super().watch():
            yield snapshot


class CountingService(WorkloadApiService):
    """Counts the X509SVIDResponses actually built (not taken from the encoded cache)."""

    builds = 0

    def _build_x509_svid_response(
        self,
        identities: Sequence[Identity],
        bundle: Bundle,
        federated: Any,
    ) -> bytes:
        self.builds += 1
        return super()._build_x509_svid_response(identities, bundle, federated)


async def test_first_message_does_not_wait_for_the_watch(
    pki: Pki,
    source: FakeIdentitySource,
    attestation: WorkloadAttestation,
    clock: FakeClock,
    socket_dir: Path,
) -> None:
    held = HeldWatchSource(pki, clock, source.snapshot())
    service = WorkloadApiService(held, attestation, clock)
    async with WorkloadEndpoint(socket_dir / "held.sock", service) as endpoint:
        channel = Channel(path=str(endpoint.socket_path))
        try:
            stub = pb.SpiffeWorkloadApiStub(channel, metadata=HEADER)
            async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
                first = await next_message(stream)
                held.release.set()
                rotated = pki.identity(held.snapshot().identities[0].entry)
                held.publish(identities=(rotated,))
                second = await next_message(stream)
        finally:
            channel.close()

    assert first.svids[0].x509_svid == source.snapshot().identities[0].svid.cert_chain[0]
    assert second.svids[0].x509_svid == rotated.svid.cert_chain[0]


async def test_a_change_before_the_watch_starts_is_not_missed(
    pki: Pki,
    source: FakeIdentitySource,
    attestation: WorkloadAttestation,
    clock: FakeClock,
    socket_dir: Path,
) -> None:
    held = HeldWatchSource(pki, clock, source.snapshot())
    service = WorkloadApiService(held, attestation, clock)
    async with WorkloadEndpoint(socket_dir / "held.sock", service) as endpoint:
        channel = Channel(path=str(endpoint.socket_path))
        try:
            stub = pb.SpiffeWorkloadApiStub(channel, metadata=HEADER)
            async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
                await next_message(stream)
                rotated = pki.identity(held.snapshot().identities[0].entry)
                held.publish(identities=(rotated,))
                held.release.set()
                second = await next_message(stream)
        finally:
            channel.close()

    assert second.svids[0].x509_svid == rotated.svid.cert_chain[0]


async def test_callers_of_one_revision_share_one_encoding_and_a_new_revision_rebuilds(
    pki: Pki,
    source: FakeIdentitySource,
    attestation: WorkloadAttestation,
    clock: FakeClock,
    socket_dir: Path,
) -> None:
    service = CountingService(source, attestation, clock)
    async with WorkloadEndpoint(socket_dir / "count.sock", service) as endpoint:
        channel = Channel(path=str(endpoint.socket_path))
        try:
            stub = pb.SpiffeWorkloadApiStub(channel, metadata=HEADER)
            firsts = []
            for _ in range(3):
                async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
                    firsts.append(await next_message(stream))
            builds_before_rotation = service.builds

            rotated = pki.identity(source.snapshot().identities[0].entry)
            source.publish(identities=(rotated,))
            async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
                after = await next_message(stream)
        finally:
            channel.close()

    assert builds_before_rotation == 1
    assert service.builds == 2
    assert firsts[0] == firsts[1] == firsts[2]
    assert after.svids[0].x509_svid == rotated.svid.cert_chain[0]
    assert after.svids[0].x509_svid_key == rotated.svid.private_key


async def test_the_encoded_response_is_read_back_as_betterproto_reads_it(
    pki: Pki, source: FakeIdentitySource, attestation: WorkloadAttestation, clock: FakeClock
) -> None:
    service = WorkloadApiService(source, attestation, clock)
    federating = pki.identity(make_entry("/federating", federates_with=[FOREIGN], hint="h"))
    mine = source.snapshot().identities[0]
    federated: dict[TrustDomain, Bundle] = {FOREIGN: pki.foreign_bundle()}
    identities = (mine, federating)

    built = service._build_x509_svid_response(identities, pki.bundle(), federated)
    encoded = service._x509_svid_response(7, identities, pki.bundle(), federated)

    assert encoded.SerializeToString() == built
    betterproto = pb.X509SvidResponse().parse(built)
    assert [svid.spiffe_id for svid in betterproto.svids] == [
        str(identity.svid.spiffe_id) for identity in identities
    ]
    assert [svid.hint for svid in betterproto.svids] == [i.entry.hint for i in identities]
    assert set(betterproto.federated_bundles) == {f"spiffe://{FOREIGN.name}"}
    assert encoded.decode().svids[1].hint == "h"
    assert service._x509_svid_response(7, identities, pki.bundle(), federated) is encoded
