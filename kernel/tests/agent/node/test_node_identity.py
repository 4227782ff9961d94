"""The node identity against a real server: attest, resume, rotate at half-life, revoke on a
ban, back off while the server is away."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
import structlog
from cryptography import x509

from pyspire.agent.bootstrap import BootstrapTrust
from pyspire.agent.client import ServerClient
from pyspire.agent.node_identity import (
    AGENT_KEY_IDS,
    START_RETRY_INITIAL,
    START_RETRY_JITTER,
    NodeIdentity,
    _make_csr_on_loop,
    rotation_threshold,
)
from pyspire.agent.storage import STATE_FILE_NAME, AgentState, AgentStateStore
from pyspire.catalog import Discovery
from pyspire.server.api.gate import serial_hex
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    PluginError,
    UnavailableError,
)
from pyspire_sdk.keys import public_key_der
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugins.key_manager import KeyType
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import (
    TD,
    Agent,
    AgentReverseAttestor,
    RunningServer,
    ServerReverseAttestor,
    make_ca,
    until,
    workload_entry,
)

START_RETRY_EVENT = "agent attestation did not go through; retrying"

T = TypeVar("T")


def leaf(identity: NodeIdentity) -> x509.Certificate:
    return x509.load_der_x509_certificate(identity.chain[0])


async def test_attestation_issues_an_agent_svid_and_persists_it(agent: Agent) -> None:
    identity, client = await agent.build()
    seen: list[int] = []

    async def listener(changed: NodeIdentity) -> None:
        seen.append(changed.generation)

    identity.add_listener(listener)
    await identity.start()

    assert identity.spiffe_id.path == f"/spire/agent/join_token/{agent.token}"
    assert identity.reattestable is False
    assert identity.credentials.key_id == AGENT_KEY_IDS[0]
    assert seen == [1]
    assert identity.bundle == await agent.server.bundle()
    certificate = leaf(identity)
    assert public_key_der(certificate.public_key()) == public_key_der(identity.private_key)  # type: ignore[arg-type]
    node = await agent.server.agent(identity.spiffe_id)
    assert node.x509_svid_serial_number == serial_hex(certificate)

    state_path = agent.directory / STATE_FILE_NAME
    assert stat.S_IMODE(os.stat(state_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(agent.directory).st_mode) == 0o700
    stored = await AgentStateStore(agent.directory, TD).read()
    assert stored is not None
    assert stored.svid.cert_chain == identity.chain
    assert stored.key_id == AGENT_KEY_IDS[0]
    assert stored.bundle == identity.bundle
    assert client.has_identity


async def test_an_ec_agent_key_is_certified_without_a_thread_hop(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One ECDSA signature costs less than a hop to a worker thread: the agent's CSR is made
    on the loop, and the server accepts it."""
    hops: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(function: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        hops.append(getattr(function, "__name__", repr(function)))
        return await to_thread(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    identity, _ = await agent.build()
    await identity.start()

    assert identity.spiffe_id.path == f"/spire/agent/join_token/{agent.token}"
    assert "agent_csr" not in hops
    assert "_make_csr" not in hops
    assert "write_atomically" in hops  # the state is still written off the loop


def test_only_p256_requests_are_signed_on_the_loop() -> None:
    """Signatures that take longer than a hop holds the loop go to a worker thread."""
    assert _make_csr_on_loop(KeyType.EC_P256)
    assert not any(
        _make_csr_on_loop(key_type)
        for key_type in (KeyType.EC_P384, KeyType.RSA_2048, KeyType.RSA_4096)
    )


async def test_a_restarted_agent_resumes_without_attesting_again(agent: Agent) -> None:
    identity, _ = await agent.build()
    await identity.start()
    first_chain = identity.chain
    await agent.close()

    # The token is consumed: a second attestation would be refused, so success proves resume.
    restarted, restarted_client = await agent.build()
    await restarted.start()
    assert restarted.chain == first_chain
    assert restarted.credentials.key_id == AGENT_KEY_IDS[0]
    await agent.server.create_entries(workload_entry("/web", restarted.spiffe_id))
    await until_entries(restarted_client, 1)


async def until_entries(client: ServerClient, count: int) -> list[RegistrationEntry]:
    entries: list[RegistrationEntry] = []
    for _ in range(200):
        entries = await client.fetch_authorized_entries()
        if len(entries) >= count:
            return entries
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} entries, found {len(entries)}")


async def test_a_consumed_token_without_state_is_refused(agent: Agent) -> None:
    identity, _ = await agent.build()
    await identity.start()
    await agent.close()
    (agent.directory / STATE_FILE_NAME).unlink()

    again, _ = await agent.build()
    with pytest.raises(PermissionDeniedError, match=r"already been used"):
        await again.start()
    # A refusal is definitive: the start gave up at once instead of waiting to retry.
    assert agent.clock.sleepers == 0


async def test_a_second_token_is_reported_unused_when_the_agent_resumes(agent: Agent) -> None:
    first_token = agent.token
    identity, _ = await agent.build()
    await identity.start()
    assert not identity.resumed
    assert not identity.ignores_join_token(first_token)
    await agent.close()

    agent.token = await agent.server.join_token()
    restarted, _ = await agent.build()
    await restarted.start()
    assert restarted.resumed
    assert restarted.spiffe_id == identity.spiffe_id
    assert restarted.ignores_join_token(agent.token)
    # The same token again (a restart with an unchanged command line) is no news.
    assert not restarted.ignores_join_token(first_token)


async def test_resume_needs_the_key_in_the_key_manager(agent: Agent) -> None:
    identity, _ = await agent.build()
    await identity.start()
    first = identity.spiffe_id
    await agent.close()
    (agent.directory / "keys.json").unlink()

    # Without its key the stored SVID is useless: the agent attests with a new token.
    agent.token = await agent.server.join_token()
    restarted, _ = await agent.build()
    await restarted.start()
    assert restarted.spiffe_id != first
    assert restarted.spiffe_id.path.endswith(agent.token)


async def test_an_expired_stored_svid_makes_the_agent_attest_again(agent: Agent) -> None:
    identity, _ = await agent.build()
    await identity.start()
    expires_at = identity.svid.expires_at
    await agent.close()

    await agent.clock.set(expires_at + timedelta(seconds=1))
    agent.token = await agent.server.join_token()
    restarted, _ = await agent.build()
    await restarted.start()
    assert restarted.spiffe_id.path.endswith(agent.token)
    # The new key went to the other slot: the stored SVID's key was kept until replaced.
    assert restarted.credentials.key_id == AGENT_KEY_IDS[1]


async def test_insecure_bootstrap_pins_the_servers_bundle(agent: Agent) -> None:
    agent.bootstrap = BootstrapTrust(bundle=None, source="insecure_bootstrap")
    identity, client = await agent.build()
    await identity.start()
    assert identity.bundle == await agent.server.bundle()
    assert client.bundle == identity.bundle


async def test_start_without_a_token_fails_with_the_attestors_error(agent: Agent) -> None:
    agent.token = ""
    identity, _ = await agent.build()
    with pytest.raises(PluginError, match=r"no join token configured"):
        await identity.start()
    assert not (agent.directory / STATE_FILE_NAME).exists()


# -- rotation ---------------------------------------------------------------------------------


async def test_rotation_renews_at_half_life_with_jitter(agent: Agent) -> None:
    agent.jitter = 0.1
    identity, client = await agent.build()
    await identity.start()
    certificate = leaf(identity)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    expected = certificate.not_valid_after_utc - (lifetime / 2) * 1.1
    assert identity.rotate_at == expected == rotation_threshold(certificate, 0.1)

    runner = asyncio.create_task(identity.run())
    await until(lambda: agent.clock.sleepers > 0)
    try:
        generation = identity.generation
        # Just before the threshold nothing happens.
        await agent.clock.set(expected - timedelta(seconds=6))
        await asyncio.sleep(0.05)
        assert identity.generation == generation
        await agent.clock.set(expected + timedelta(seconds=5))
        await asyncio.wait_for(identity.wait_updated(generation), timeout=10)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    renewed = leaf(identity)
    assert renewed.serial_number != certificate.serial_number
    assert identity.spiffe_id.path == f"/spire/agent/join_token/{agent.token}"
    assert identity.credentials.key_id == AGENT_KEY_IDS[1]
    stored = await AgentStateStore(agent.directory, TD).read()
    assert stored is not None and stored.key_id == AGENT_KEY_IDS[1]
    assert stored.svid.cert_chain == identity.chain
    # The server makes the renewed SVID current on its first use.
    await client.fetch_authorized_entries()
    node = await agent.server.agent(identity.spiffe_id)
    assert node.x509_svid_serial_number == serial_hex(renewed)
    # The next rotation goes back to the first key slot.
    await identity.rotate()
    assert identity.credentials.key_id == AGENT_KEY_IDS[0]


async def test_a_banned_agent_is_revoked_on_renewal(agent: Agent) -> None:
    identity, client = await agent.build()
    revoked_seen: list[bool] = []

    async def listener(changed: NodeIdentity) -> None:
        revoked_seen.append(changed.revoked)

    identity.add_listener(listener)
    await identity.start()
    await agent.server.ban(identity.spiffe_id)

    runner = asyncio.create_task(identity.run())
    await until(lambda: agent.clock.sleepers > 0)
    rotate_at = identity.rotate_at
    assert rotate_at is not None
    await agent.clock.set(rotate_at + timedelta(seconds=5))
    await asyncio.wait_for(runner, timeout=10)

    assert identity.revoked
    assert "banned" in identity.revocation_reason
    assert revoked_seen == [False, True]
    assert not client.has_identity
    assert not (agent.directory / STATE_FILE_NAME).exists()
    with pytest.raises(PermissionDeniedError, match=r"revoked"):
        await identity.rotate()


async def test_rotation_backs_off_while_the_server_is_away(
    agent: Agent, server: RunningServer
) -> None:
    identity, client = await agent.build()
    await identity.start()
    chain = identity.chain
    await server.stop()

    with pytest.raises(UnavailableError, match=r"cannot reach the server at 127\.0\.0\.1"):
        await client.fetch_bundle()

    runner = asyncio.create_task(identity.run())
    await until(lambda: agent.clock.sleepers > 0)
    try:
        rotate_at = identity.rotate_at
        assert rotate_at is not None
        await agent.clock.set(rotate_at + timedelta(seconds=5))
        await until(lambda: identity.consecutive_failures == 1)
        first_failure = agent.clock.now()
        assert identity.retry_at == first_failure + timedelta(seconds=5)

        await agent.clock.advance(5)
        await until(lambda: identity.consecutive_failures == 2)
        assert identity.retry_at == agent.clock.now() + timedelta(seconds=10)

        # Not yet due: a tick inside the backoff window tries nothing.
        await agent.clock.advance(5)
        await asyncio.sleep(0.05)
        assert identity.consecutive_failures == 2
        await agent.clock.advance(5)
        await until(lambda: identity.consecutive_failures == 3)
        assert identity.retry_at == agent.clock.now() + timedelta(seconds=20)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert identity.chain == chain
    assert not identity.revoked


async def test_update_bundle_persists_and_notifies(agent: Agent) -> None:
    identity, client = await agent.build()
    await identity.start()
    generation = identity.generation
    bundle = identity.bundle.with_changes(refresh_hint=300)
    await identity.update_bundle(bundle)
    assert identity.generation == generation + 1
    assert client.bundle == bundle
    stored = await AgentStateStore(agent.directory, TD).read()
    assert stored is not None and stored.bundle == bundle
    await identity.update_bundle(bundle)
    assert identity.generation == generation + 1
    document = json.loads((agent.directory / STATE_FILE_NAME).read_text())
    assert document["bundle"]["spiffe_refresh_hint"] == 300


async def test_an_expired_svid_that_cannot_reattest_revokes_the_identity(agent: Agent) -> None:
    identity, _ = await agent.build()
    await identity.start()
    await agent.clock.set(identity.svid.expires_at + timedelta(seconds=1))
    with pytest.raises(PermissionDeniedError, match=r"already been used"):
        await identity.rotate()
    assert identity.revoked
    assert "already been used" in identity.revocation_reason


# -- reattestable agents ----------------------------------------------------------------------


@pytest.fixture
async def reverse_server(
    tmp_path: Path, discovery: Discovery
) -> AsyncIterator[tuple[RunningServer, ServerReverseAttestor]]:
    attestor = ServerReverseAttestor()
    running = RunningServer(
        tmp_path / "reverse-server", discovery, node_attestors={"reverse": attestor}
    )
    await running.start()
    try:
        yield running, attestor
    finally:
        await running.stop()


async def test_a_reattestable_agent_attests_again_to_rotate(
    tmp_path: Path, reverse_server: tuple[RunningServer, ServerReverseAttestor]
) -> None:
    server, server_attestor = reverse_server
    agent_attestor = AgentReverseAttestor("node-1")
    agent = Agent(
        directory=tmp_path / "agent",
        server=server,
        clock=FakeClock(start=datetime.now(UTC)),
        attestor=("reverse", agent_attestor),
    )
    try:
        identity, client = await agent.build()
        await identity.start()
        assert identity.reattestable
        assert identity.spiffe_id.path == "/spire/agent/reverse/node-1"
        assert agent_attestor.challenges == [b"reverse:node-1"]
        first = leaf(identity)

        runner = asyncio.create_task(identity.run())
        await until(lambda: agent.clock.sleepers > 0)
        generation = identity.generation
        rotate_at = identity.rotate_at
        assert rotate_at is not None
        await agent.clock.set(rotate_at + timedelta(seconds=5))
        await asyncio.wait_for(identity.wait_updated(generation), timeout=10)
        assert server_attestor.calls == 2
        assert leaf(identity).serial_number != first.serial_number
        assert identity.spiffe_id.path == "/spire/agent/reverse/node-1"
        assert identity.credentials.key_id == AGENT_KEY_IDS[1]
        node = await server.agent(identity.spiffe_id)
        assert node.x509_svid_serial_number == serial_hex(leaf(identity))
        assert node.selectors[0].value == "node:node-1"

        # A banned node may not attest again: the identity is revoked.
        await server.ban(identity.spiffe_id)
        rotate_at = identity.rotate_at
        assert rotate_at is not None
        await until(lambda: agent.clock.sleepers > 0)
        await agent.clock.set(max(rotate_at, agent.clock.now()) + timedelta(seconds=10))
        await asyncio.wait_for(runner, timeout=10)
        assert identity.revoked
        assert "banned" in identity.revocation_reason
        assert not client.has_identity
    finally:
        await agent.close()


async def test_start_retries_a_busy_server_with_backoff_and_jitter(
    tmp_path: Path, reverse_server: tuple[RunningServer, ServerReverseAttestor]
) -> None:
    server, server_attestor = reverse_server
    server_attestor.busy = 2
    agent = Agent(
        directory=tmp_path / "agent",
        server=server,
        clock=FakeClock(start=datetime.now(UTC)),
        attestor=("reverse", AgentReverseAttestor("node-2")),
        jitter=0.25,
    )
    try:
        identity, _ = await agent.build()
        with structlog.testing.capture_logs() as logs:
            starting = asyncio.create_task(identity.start())
            await until(lambda: agent.clock.sleepers > 0)
            assert server_attestor.calls == 1
            # The SDK's policy: doubling from START_RETRY_INITIAL, each delay shortened by
            # START_RETRY_JITTER times the random draw (0.25 here).
            shortened = 1 - START_RETRY_JITTER * 0.25
            await agent.clock.advance(START_RETRY_INITIAL * shortened)
            await until(lambda: server_attestor.calls == 2 and agent.clock.sleepers > 0)
            await agent.clock.advance(START_RETRY_INITIAL * 2 * shortened)
            await asyncio.wait_for(starting, timeout=10)
        assert server_attestor.calls == 3
        assert identity.spiffe_id.path == "/spire/agent/reverse/node-2"
        retries = [log for log in logs if log["event"] == START_RETRY_EVENT]
        assert [log["retry_in_seconds"] for log in retries] == [
            START_RETRY_INITIAL * shortened,
            START_RETRY_INITIAL * 2 * shortened,
        ]
        assert [log["attempts"] for log in retries] == [1, 2]
        for log in retries:
            assert log["log_level"] == "warning"
            assert "over the limit of 1 per second" in log["error"]
            assert log["error_type"] == "UnavailableError"
    finally:
        await agent.close()


async def test_listeners_may_call_back_into_the_identity(agent: Agent) -> None:
    identity, _ = await agent.build()
    hinted: list[int] = []

    async def listener(changed: NodeIdentity) -> None:
        if changed.bundle.refresh_hint != 42:
            await changed.update_bundle(changed.bundle.with_changes(refresh_hint=42))
        hinted.append(changed.bundle.refresh_hint)

    identity.add_listener(listener)
    await asyncio.wait_for(identity.start(), timeout=10)
    assert identity.bundle.refresh_hint == 42
    assert hinted[-1] == 42


async def test_a_stored_svid_the_stored_bundle_does_not_trust_is_not_resumed(
    agent: Agent,
) -> None:
    identity, _ = await agent.build()
    await identity.start()
    await agent.close()
    store = AgentStateStore(agent.directory, TD)
    state = await store.read()
    assert state is not None
    # A bundle whose only authority did not issue the SVID (nor the server's).
    wrong = state.bundle.with_changes(x509_authorities=(X509Authority(make_ca()[1]),))
    await store.save(AgentState(state.svid, state.key_id, state.reattestable, wrong))

    restarted, _ = await agent.build()
    with structlog.testing.capture_logs() as logs:
        # Not resumed; and the stored bundle is what the server is now checked with: the
        # server cannot be verified, which may change (the address may point at the right
        # server again), so the start waits and tries again rather than giving up.
        starting = asyncio.create_task(restarted.start())
        try:
            await until(lambda: agent.clock.sleepers > 0)
        finally:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
    assert any(
        log["event"] == "stored agent SVID is not trusted by the stored bundle" for log in logs
    )
    [retry] = [log for log in logs if log["event"] == START_RETRY_EVENT]
    assert "cannot verify the server" in retry["error"]
    assert retry["error_type"] == "UnavailableError"
    assert not restarted.revoked


async def test_update_bundle_refuses_a_bundle_that_cannot_verify_the_server(
    agent: Agent,
) -> None:
    identity, _ = await agent.build()
    await identity.start()
    with pytest.raises(InvalidArgumentError, match=r"no X\.509 authority"):
        await identity.update_bundle(identity.bundle.with_changes(x509_authorities=()))
    with pytest.raises(InvalidArgumentError, match=r"trust domain 'other.org'"):
        await identity.update_bundle(
            Bundle(TrustDomain("other.org"), identity.bundle.x509_authorities)
        )
    stored = await AgentStateStore(agent.directory, TD).read()
    assert stored is not None and stored.bundle == identity.bundle


async def test_a_tainted_issuer_brings_the_rotation_forward(agent: Agent) -> None:
    identity, _ = await agent.build()
    await identity.start()
    assert not identity.due()
    untouched = identity.bundle.with_changes(refresh_hint=301)
    await identity.update_bundle(untouched)
    assert not identity.due()
    tainted = identity.bundle.with_changes(
        x509_authorities=tuple(
            dataclasses.replace(authority, tainted=True)
            for authority in identity.bundle.x509_authorities
        )
    )
    await identity.update_bundle(tainted)
    assert identity.rotate_at == agent.clock.now()
    assert identity.due()
