"""The server composition root: starts from TOML and installed plugins, serves both listeners
with the right file modes, stops cleanly, and restarts with the same CA."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.catalog import Discovery
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.proto.gen.grpc.health import v1 as health
from pyspire.proto.gen.spire.api import types as types_pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.localauthority import v1 as localauthority_pb
from pyspire.server.runtime import ServerRuntime, change_watch
from pyspire.transport.tls import build_client_context
from pyspire_sdk.plugins.datastore import ChangeSignal


def server_document(tmp_path: Path) -> dict[str, object]:
    data = tmp_path / "data"
    return {
        "server": {
            "trust_domain": "example.org",
            "data_dir": str(data),
            "bind_address": "127.0.0.1",
            "bind_port": 0,
            "socket_path": str(tmp_path / "admin" / "api.sock"),
            "plugins": {
                "datastore": {"sqlite": {}},
                "key_manager": {"disk": {}},
                "node_attestor": {"join_token": {}},
            },
        }
    }


@pytest.fixture(scope="module")
def discovery() -> Discovery:
    return Discovery.load()


async def start(tmp_path: Path, discovery: Discovery) -> tuple[ServerRuntime, asyncio.Task[None]]:
    loaded = load_document(SERVER_SCHEMA, server_document(tmp_path))
    runtime = ServerRuntime(loaded, discovery)
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "the server did not become ready"
    return runtime, task


async def stop(runtime: ServerRuntime, task: asyncio.Task[None]) -> None:
    runtime.stop()
    await asyncio.wait_for(task, timeout=30)


@pytest.fixture
async def server(tmp_path: Path, discovery: Discovery) -> AsyncIterator[ServerRuntime]:
    runtime, task = await start(tmp_path, discovery)
    try:
        yield runtime
    finally:
        if not task.done():
            await stop(runtime, task)


async def admin_bundle(runtime: ServerRuntime) -> types_pb.Bundle:
    assert runtime.listening is not None
    channel = Channel(path=str(runtime.listening.socket_path))
    try:
        return await bundle_pb.BundleStub(channel).get_bundle(bundle_pb.GetBundleRequest())
    finally:
        channel.close()


async def test_admin_socket_serves_health_and_has_private_modes(server: ServerRuntime) -> None:
    assert server.listening is not None
    path = server.listening.socket_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o770
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(server.settings.data_dir.stat().st_mode) == 0o700
    channel = Channel(path=str(path))
    try:
        response = await health.HealthStub(channel).check(health.HealthCheckRequest())
    finally:
        channel.close()
    assert response.status == health.HealthCheckResponseServingStatus.SERVING


async def test_tcp_listener_speaks_mtls_and_applies_the_policy(server: ServerRuntime) -> None:
    assert server.listening is not None
    bundle = await admin_bundle(server)
    authorities = [a.asn1 for a in bundle.x509_authorities]
    context = build_client_context(authorities)
    channel = Channel("127.0.0.1", server.listening.port, ssl=context)
    try:
        # Anyone may fetch the bundle ...
        fetched = await bundle_pb.BundleStub(channel).get_bundle(bundle_pb.GetBundleRequest())
        assert [a.asn1 for a in fetched.x509_authorities] == authorities
        # ... but an anonymous caller may not administer the trust domain over TCP.
        with pytest.raises(GRPCError) as caught:
            await agent_pb.AgentStub(channel).create_join_token(
                agent_pb.CreateJoinTokenRequest(ttl=60)
            )
        assert caught.value.status == Status.PERMISSION_DENIED
    finally:
        channel.close()


async def test_a_ca_change_reaches_agents_bundle_at_once(server: ServerRuntime) -> None:
    """GetBundle's kept answer gives way as soon as the CA prepares a new authority (the CA
    listener advances the trust epoch), not a read interval later."""
    assert server.listening is not None
    authorities = [a.asn1 for a in (await admin_bundle(server)).x509_authorities]
    channel = Channel("127.0.0.1", server.listening.port, ssl=build_client_context(authorities))
    admin = Channel(path=str(server.listening.socket_path))
    try:
        stub = bundle_pb.BundleStub(channel)
        before = await stub.get_bundle(bundle_pb.GetBundleRequest())
        await localauthority_pb.LocalAuthorityStub(admin).prepare_x509_authority(
            localauthority_pb.PrepareX509AuthorityRequest()
        )
        after = await stub.get_bundle(bundle_pb.GetBundleRequest())
    finally:
        channel.close()
        admin.close()
    assert len(after.x509_authorities) == len(before.x509_authorities) + 1


async def test_restart_keeps_the_ca_and_removes_the_socket(
    tmp_path: Path, discovery: Discovery
) -> None:
    runtime, task = await start(tmp_path, discovery)
    first = await admin_bundle(runtime)
    await stop(runtime, task)
    assert not (tmp_path / "admin" / "api.sock").exists()
    runtime, task = await start(tmp_path, discovery)
    try:
        second = await admin_bundle(runtime)
    finally:
        await stop(runtime, task)
    assert [a.asn1 for a in second.x509_authorities] == [a.asn1 for a in first.x509_authorities]
    assert second.sequence_number == first.sequence_number
    keys = tmp_path / "data" / "keys.json"
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600


async def test_a_bad_plugin_table_fails_start_with_its_key_path(
    tmp_path: Path, discovery: Discovery
) -> None:
    document = server_document(tmp_path)
    document["server"]["plugins"]["key_manager"] = {"disk": {"keys_path": 5}}  # type: ignore[index]
    runtime = ServerRuntime(load_document(SERVER_SCHEMA, document), discovery)
    from pyspire_sdk.errors import ConfigError

    with pytest.raises(ConfigError, match=r"server\.plugins\.key_manager\.disk\.keys_path"):
        await runtime.run()


async def test_broken_handshakes_do_not_disturb_other_callers(server: ServerRuntime) -> None:
    """Garbage instead of a ClientHello, a handshake cut off half way, and a client that
    trusts nothing: each fails alone, and the server goes on answering."""
    assert server.listening is not None
    port = server.listening.port
    for payload in (b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    import ssl

    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    untrusting.check_hostname = False
    untrusting.set_alpn_protocols(["h2"])
    with pytest.raises(ssl.SSLError):
        await asyncio.open_connection("127.0.0.1", port, ssl=untrusting)
    bundle = await admin_bundle(server)
    channel = Channel(
        "127.0.0.1", port, ssl=build_client_context([a.asn1 for a in bundle.x509_authorities])
    )
    try:
        fetched = await bundle_pb.BundleStub(channel).get_bundle(bundle_pb.GetBundleRequest())
    finally:
        channel.close()
    assert fetched.trust_domain == "example.org"


class _SignallingDataStore:
    """Just enough of a watchable datastore: its watch signals twice, then waits."""

    async def watch_changes(self, listener: Callable[[ChangeSignal], None]) -> None:
        listener(ChangeSignal.CHANGED)
        listener(ChangeSignal.RESYNC)
        await asyncio.Event().wait()


class _HearingCache:
    def __init__(self) -> None:
        self.heard: list[ChangeSignal] = []

    def hear(self, signal: ChangeSignal) -> None:
        self.heard.append(signal)


class _WokenFeed:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


async def test_a_watchable_datastore_signals_the_registry_cache_and_the_bundle_feed() -> None:
    cache, feed = _HearingCache(), _WokenFeed()
    services = change_watch(_SignallingDataStore(), cache, feed)  # type: ignore[arg-type]
    assert list(services) == ["registry-watch"]
    task = asyncio.create_task(services["registry-watch"]())
    try:
        await asyncio.sleep(0)
        assert cache.heard == [ChangeSignal.CHANGED, ChangeSignal.RESYNC]
        assert feed.woken == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_datastore_without_signals_gets_no_watch() -> None:
    assert change_watch(object(), _HearingCache(), _WokenFeed()) == {}  # type: ignore[arg-type]
