"""Debug.GetInfo reports the server's state; Health answers Check and streams Watch."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.ca.manager import CaManager, CaSettings
from pyspire.proto.gen.grpc.health import v1 as health_pb
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.debug import v1 as debug_pb
from pyspire.server.api.debug import DebugService, certificate_info
from pyspire.server.api.entry import EntryService
from pyspire.server.api.health import HealthService
from pyspire.server.context import ServerContext
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.model import AttestedNode
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import AGENT, OTHER_AGENT, create_entries, wire_entry

SERVING = health_pb.HealthCheckResponseServingStatus.SERVING
NOT_SERVING = health_pb.HealthCheckResponseServingStatus.NOT_SERVING
SERVICE_UNKNOWN = health_pb.HealthCheckResponseServingStatus.SERVICE_UNKNOWN


# -- Debug ------------------------------------------------------------------------------------


async def test_get_info_reports_counts_uptime_and_the_svid_chain(
    server_context: ServerContext, fake_clock: FakeClock
) -> None:
    svid = await server_context.issuer.x509(
        server_context.server_id, ec.generate_private_key(ec.SECP256R1()).public_key()
    )
    context = dataclasses.replace(
        server_context, server_svid_chain=(*svid.cert_chain, server_context.ca.x509_ca.der)
    )
    datastore = context.datastore
    for agent in (AGENT, OTHER_AGENT):
        await datastore.create_attested_node(AttestedNode(spiffe_id=agent, attestation_type="x"))
    await datastore.set_bundle(Bundle(trust_domain=TrustDomain("other.org")))
    await create_entries(
        EntryService(context), wire_entry("/a"), wire_entry("/b"), wire_entry("/c")
    )
    await fake_clock.advance(timedelta(minutes=2, seconds=5.7))

    info = await DebugService(context).get_info(debug_pb.GetInfoRequest())
    assert (info.agents_count, info.entries_count, info.federated_bundles_count) == (2, 3, 1)
    assert info.uptime == 125
    leaf, ca = info.svid_chain
    assert leaf.id == pb.Spiffeid(trust_domain="example.org", path="/spire/server")
    assert leaf.expires_at == int(svid.expires_at.timestamp())
    assert (
        leaf.subject == x509.load_der_x509_certificate(svid.cert_chain[0]).subject.rfc4514_string()
    )
    assert "O=SPIRE" in leaf.subject
    assert ca.id == pb.Spiffeid(trust_domain="example.org", path="")
    assert ca.expires_at == int(server_context.ca.x509_ca.not_after.timestamp())


async def test_get_info_without_a_chain_or_federation(server_context: ServerContext) -> None:
    info = await DebugService(server_context).get_info(debug_pb.GetInfoRequest())
    assert info.svid_chain == []
    assert (info.agents_count, info.entries_count, info.federated_bundles_count) == (0, 0, 0)
    assert info.uptime == 0


def test_certificate_info_rejects_garbage() -> None:
    with pytest.raises(InvalidArgumentError, match="svid_chain certificate is not DER"):
        certificate_info(b"not a certificate")


# -- Health -----------------------------------------------------------------------------------


class BrokenDatastore:
    """A datastore whose reads fail (as when the database is down)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.broken = True

    def __getattr__(self, name: str) -> Any:
        if self.broken:

            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise UnavailableError("database is down")

            return fail
        return getattr(self.real, name)


class HangingDatastore:
    def __getattr__(self, name: str) -> Any:
        async def hang(*args: Any, **kwargs: Any) -> Any:
            await asyncio.Event().wait()

        return hang


@pytest.mark.parametrize("service", ["", "spire.server", "pyspire.server"])
async def test_check_serving(server_context: ServerContext, service: str) -> None:
    response = await HealthService(server_context).check(
        health_pb.HealthCheckRequest(service=service)
    )
    assert response.status == SERVING


async def test_check_unknown_service(server_context: ServerContext) -> None:
    with pytest.raises(GRPCError) as raised:
        await HealthService(server_context).check(health_pb.HealthCheckRequest(service="nope"))
    assert raised.value.status is Status.NOT_FOUND


async def test_check_not_serving_when_the_datastore_fails_or_hangs(
    server_context: ServerContext,
) -> None:
    server_context.datastore = BrokenDatastore(server_context.datastore)
    health = HealthService(server_context)
    assert (await health.check(health_pb.HealthCheckRequest())).status == NOT_SERVING
    server_context.datastore = HangingDatastore()
    health = HealthService(server_context, datastore_timeout=0.05)
    assert (await health.check(health_pb.HealthCheckRequest())).status == NOT_SERVING


async def test_check_not_serving_when_the_ca_expired(
    server_context: ServerContext, fake_clock: FakeClock
) -> None:
    # The CA rotation loop is not running here, so the 24 h authority simply runs out.
    await fake_clock.advance(timedelta(hours=25))
    response = await HealthService(server_context).check(health_pb.HealthCheckRequest())
    assert response.status == NOT_SERVING


async def test_check_not_serving_without_an_active_ca(server_context: ServerContext) -> None:
    idle = CaManager(
        CaSettings(trust_domain=server_context.trust_domain, ca_ttl=timedelta(hours=24)),
        key_manager=None,  # type: ignore[arg-type]
        store=server_context.datastore,
        clock=server_context.clock,
    )
    server_context.ca = idle
    response = await HealthService(server_context).check(health_pb.HealthCheckRequest())
    assert response.status == NOT_SERVING


async def _collect(stream: Any, into: asyncio.Queue[Any]) -> None:
    async for message in stream:
        into.put_nowait(message.status)


async def _tick(clock: FakeClock, seconds: float) -> None:
    """Advance once the watcher sleeps on the clock (its datastore read takes real time)."""
    for _ in range(5000):
        if clock.sleepers:
            break
        await asyncio.sleep(0.001)
    assert clock.sleepers == 1
    await clock.advance(seconds)


async def test_watch_sends_changes_only(
    server_context: ServerContext, fake_clock: FakeClock
) -> None:
    broken = BrokenDatastore(server_context.datastore)
    broken.broken = False
    server_context.datastore = broken
    health = HealthService(server_context, poll_interval=5)
    received: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(_collect(health.watch(health_pb.HealthCheckRequest()), received))
    try:
        assert await asyncio.wait_for(received.get(), 5) == SERVING
        await _tick(fake_clock, 5)
        await _tick(fake_clock, 5)
        await _tick(fake_clock, 5)
        assert received.empty()
        broken.broken = True
        await _tick(fake_clock, 5)
        assert await asyncio.wait_for(received.get(), 5) == NOT_SERVING
        await _tick(fake_clock, 5)
        await _tick(fake_clock, 5)
        assert received.empty()
        broken.broken = False
        await _tick(fake_clock, 5)
        assert await asyncio.wait_for(received.get(), 5) == SERVING
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_of_an_unknown_service_stays_open(server_context: ServerContext) -> None:
    received: asyncio.Queue[Any] = asyncio.Queue()
    stream = HealthService(server_context).watch(health_pb.HealthCheckRequest(service="nope"))
    task = asyncio.create_task(_collect(stream, received))
    try:
        assert await asyncio.wait_for(received.get(), 5) == SERVICE_UNKNOWN
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_health_settings_are_checked(server_context: ServerContext) -> None:
    with pytest.raises(InvalidArgumentError, match="poll_interval 0"):
        HealthService(server_context, poll_interval=0)
    with pytest.raises(InvalidArgumentError, match="datastore_timeout -1"):
        HealthService(server_context, datastore_timeout=-1)
