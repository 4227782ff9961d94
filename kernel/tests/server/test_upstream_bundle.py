"""The server follows its upstream authority's bundle updates: each one is appended to our
bundle; a failed subscription is taken again after the backoff; an upstream with no updates
ends the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyspire.ca.tainting import subject_key_id, taint_x509_ca
from pyspire.server.upstream_bundle import UpstreamBundleFollower
from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
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


async def refuse_taints(roots: Sequence[bytes]) -> None:
    raise AssertionError(f"no taint expected here, got {len(roots)}")


def root_der(name: str) -> bytes:
    """A self-signed CA certificate (tainting and revoking name roots by subject key ID)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


class TaintRecorder:
    """Stands for the CA: records each call and marks the roots tainted, as the CA does after
    replacing its CA; fails the first ``failures`` calls."""

    def __init__(self, store: MemoryDataStore, failures: int = 0) -> None:
        self.store = store
        self.failures = failures
        self.calls: list[list[bytes]] = []

    async def __call__(self, roots: Sequence[bytes]) -> None:
        self.calls.append(list(roots))
        if self.failures:
            self.failures -= 1
            raise UnavailableError("upstream unreachable while minting")
        for der in roots:
            await self.store.update_bundle(TD, taint_x509_ca(subject_key_id(der)))


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
    follower = UpstreamBundleFollower(upstream, store, TD, clock, on_tainted=refuse_taints)
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
    follower = UpstreamBundleFollower(upstream, store, TD, FakeClock(), on_tainted=refuse_taints)
    await asyncio.wait_for(follower.run(), 5)
    assert await store.get_bundle(TD) is None


async def test_a_root_tainted_upstream_is_acted_on_once_then_marked_here(tmp_path: Path) -> None:
    store = await memory_store(tmp_path)
    old, new, lacking = root_der("old"), root_der("new"), root_der("lacking")
    await store.append_bundle(Bundle(TD, x509_authorities=(X509Authority(der=old),)))
    clock = FakeClock()
    upstream = ScriptedUpstream(
        (
            [
                UpstreamBundle(x509_roots=(old, new)),
                UpstreamBundle(x509_roots=(old, new, lacking), tainted_x509_roots=(old, lacking)),
                UpstreamBundle(x509_roots=(old, new, lacking), tainted_x509_roots=(old, lacking)),
            ],
            "wait",
        ),
    )
    ca = TaintRecorder(store)
    task = asyncio.create_task(UpstreamBundleFollower(upstream, store, TD, clock, ca).run())
    await settle()

    assert ca.calls == [[old]]  # a root we lack arrives marked; nothing of ours chains to it
    bundle = await store.get_bundle(TD)
    assert bundle is not None
    assert {a.der: a.tainted for a in bundle.x509_authorities} == {
        old: True,
        new: False,
        lacking: True,
    }
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_failure_to_act_on_a_taint_is_retried_by_subscribing_again(
    tmp_path: Path,
) -> None:
    store = await memory_store(tmp_path)
    old, new = root_der("old"), root_der("new")
    await store.append_bundle(Bundle(TD, x509_authorities=(X509Authority(der=old),)))
    tainted = UpstreamBundle(x509_roots=(old, new), tainted_x509_roots=(old,))
    clock = FakeClock()
    upstream = ScriptedUpstream(([tainted], "wait"), ([tainted], "wait"))
    ca = TaintRecorder(store, failures=1)
    task = asyncio.create_task(UpstreamBundleFollower(upstream, store, TD, clock, ca).run())
    await settle()
    assert ca.calls == [[old]] and upstream.subscriptions == 1
    bundle = await store.get_bundle(TD)
    assert bundle is not None and not any(a.tainted for a in bundle.x509_authorities)

    await clock.advance(timedelta(seconds=1))
    await settle()
    assert ca.calls == [[old], [old]] and upstream.subscriptions == 2
    bundle = await store.get_bundle(TD)
    assert bundle is not None
    assert [a.der for a in bundle.x509_authorities if a.tainted] == [old]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_tainted_root_revoked_upstream_is_revoked_here(tmp_path: Path) -> None:
    store = await memory_store(tmp_path)
    old, new = root_der("old"), root_der("new")
    await store.append_bundle(
        Bundle(TD, x509_authorities=(X509Authority(der=old, tainted=True), X509Authority(new)))
    )
    upstream = ScriptedUpstream(([UpstreamBundle(x509_roots=(new,))], "wait"))
    follower = UpstreamBundleFollower(upstream, store, TD, FakeClock(), on_tainted=refuse_taints)
    task = asyncio.create_task(follower.run())
    await settle()
    bundle = await store.get_bundle(TD)
    assert bundle is not None
    assert [a.der for a in bundle.x509_authorities] == [new]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_tainted_roots_must_be_roots_of_the_update() -> None:
    with pytest.raises(InvalidArgumentError, match=r"tainted_x509_roots\[0\]"):
        UpstreamBundle(x509_roots=(b"root-1",), tainted_x509_roots=(b"root-2",))
