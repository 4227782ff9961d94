"""The server follows its upstream authority's bundle updates: each one is appended to our
bundle; a failed subscription is taken again after the backoff; an upstream with no updates
ends the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from pyspire.server.upstream_bundle import UpstreamBundleFollower
from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.memory_datastore import MemoryDataStore
from pyspire_sdk.plugin import NoConfig
from pyspire_sdk.plugins.upstream_authority import UpstreamBundle, UpstreamX509CA
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock, make_host_services

TD = TrustDomain("example.org")


class ScriptedUpstream:
    """Each subscription plays the next script: bundles to yield, then ``"fail"`` (raise
    unavailable), ``"end"`` (stop) or ``"wait"`` (stay open)."""

    def __init__(self, *scripts: tuple[list[UpstreamBundle], str]) -> None:
        self.scripts = list(scripts)
        self.subscriptions = 0
        self.closed = 0

    async def configure(self, config: object, host: object) -> None:
        return None

    async def close(self) -> None:
        return None

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        raise AssertionError("not minting here")

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        return []

    async def subscribe_to_bundle_updates(self) -> AsyncIterator[UpstreamBundle]:
        self.subscriptions += 1
        bundles, then = self.scripts.pop(0)
        try:
            for bundle in bundles:
                yield bundle
            if then == "fail":
                raise UnavailableError("upstream went away")
            if then == "wait":
                await asyncio.Event().wait()
        finally:
            self.closed += 1


async def memory_store(tmp_path: Path) -> MemoryDataStore:
    store = MemoryDataStore()
    await store.configure(NoConfig(), make_host_services(tmp_path))
    return store


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_updates_are_appended_and_a_failed_subscription_is_taken_again(
    tmp_path: Path,
) -> None:
    store = await memory_store(tmp_path)
    await store.append_bundle(Bundle(TD, x509_authorities=(X509Authority(der=b"own-root"),)))
    clock = FakeClock()
    jwt = JwtAuthority(key_id="downstream", public_key=b"spki")
    upstream = ScriptedUpstream(
        ([UpstreamBundle(x509_roots=(b"root-1",))], "fail"),
        ([UpstreamBundle(x509_roots=(b"root-1", b"root-2"), jwt_authorities=(jwt,))], "wait"),
    )
    follower = UpstreamBundleFollower(upstream, store, TD, clock)
    task = asyncio.create_task(follower.run())
    await settle()
    bundle = await store.get_bundle(TD)
    assert bundle is not None
    assert [a.der for a in bundle.x509_authorities] == [b"own-root", b"root-1"]
    assert upstream.subscriptions == 1

    await clock.advance(timedelta(seconds=1))
    await settle()
    bundle = await store.get_bundle(TD)
    assert bundle is not None
    assert [a.der for a in bundle.x509_authorities] == [b"own-root", b"root-1", b"root-2"]
    assert bundle.jwt_authorities == (jwt,)
    assert upstream.subscriptions == 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert upstream.closed == 2


async def test_an_upstream_without_updates_ends_the_service(tmp_path: Path) -> None:
    store = await memory_store(tmp_path)
    upstream = ScriptedUpstream(([], "end"))
    await asyncio.wait_for(UpstreamBundleFollower(upstream, store, TD, FakeClock()).run(), 5)
    assert await store.get_bundle(TD) is None
