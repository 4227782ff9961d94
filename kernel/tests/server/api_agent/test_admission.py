"""Admission control for AttestAgent: a storm larger than the limit ends with every agent
attested and no join token burnt."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.server.api.admission import MIN_TIME_LEFT, AttestationAdmission
from pyspire.server.api.agent import AgentService
from pyspire.server.authorization import CallerKind
from pyspire.server.context import ServerContext
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugins.node_attestor import Challenger, ServerNodeAttestor
from pyspire_sdk.testing import FakeClock

from .conftest import Requests, attest, attest_stream, caller, make_csr, params
from .test_agent import new_token


class Watching:
    """A node attestor that passes calls on and records how many ran at once."""

    def __init__(self, inner: ServerNodeAttestor) -> None:
        self.inner = inner
        self.running = 0
        self.peak = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0)  # let the rest of the storm arrive while this one runs
            return await self.inner.attest(payload, challenge)
        finally:
            self.running -= 1


async def test_a_storm_larger_than_the_limit_ends_with_every_agent_attested(
    context: ServerContext,
) -> None:
    watching = Watching(context.node_attestors["join_token"])
    context = dataclasses.replace(
        context, node_attestors={**context.node_attestors, "join_token": watching}
    )
    service = AgentService(
        context, attestation_rate_limit=False, admission=AttestationAdmission(limit=3, queue=5)
    )
    count = 30
    for index in range(count):
        await new_token(service, f"storm-{index}")
    refused = 0

    async def agent(index: int) -> bytes:
        nonlocal refused
        request = params("join_token", f"storm-{index}".encode(), make_csr())
        backoff = Backoff(BackoffPolicy(0.002, 0.02))
        while True:
            try:
                [response] = await attest(service, request)
            except UnavailableError:
                refused += 1
                await asyncio.sleep(backoff.failed())
            else:
                return response.result.svid.cert_chain[0]

    caller(CallerKind.ANY, address="10.0.0.1")
    certificates = await asyncio.gather(*(agent(index) for index in range(count)))
    assert len(set(certificates)) == count
    assert refused > 0
    assert watching.peak == 3
    assert await context.datastore.list_join_tokens() == []
    assert await context.datastore.count_attested_nodes() == count


async def test_a_busy_refusal_leaves_the_address_its_rate_allowance(
    context: ServerContext,
) -> None:
    service = AgentService(context, admission=AttestationAdmission(limit=1, queue=0))
    await new_token(service)
    caller(CallerKind.ANY, address="10.0.0.9")
    held = Requests()
    holding = attest_stream(service, held)
    held.put(params("challenge", b"node-1", make_csr()))
    assert (await anext(holding)).challenge == b"reverse:node-1"  # the one slot is taken

    caller(CallerKind.ANY, address="10.0.0.1")
    join = params("join_token", b"tok-1", make_csr())
    with pytest.raises(UnavailableError, match="server busy"):
        await attest(service, join)
    assert await context.datastore.fetch_join_token("tok-1") is not None

    held.put(agent_pb.AttestAgentRequest(challenge_response=b"1-edon"))
    assert (await anext(holding)).result.svid.cert_chain
    await holding.aclose()
    # The same address again within the same second of the clock: not rate limited.
    [response] = await attest(service, join)
    assert response.result.svid.cert_chain


async def test_a_full_queue_refuses_at_once_and_a_cancelled_waiter_leaves_it() -> None:
    admission = AttestationAdmission(limit=1, queue=1)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.admitted():
            held.set()
            await release.wait()

    async def wait_turn() -> None:
        async with admission.admitted():
            pass

    holder = asyncio.create_task(hold())
    await held.wait()
    waiter = asyncio.create_task(wait_turn())
    await asyncio.sleep(0)
    assert admission.waiting == 1
    with pytest.raises(UnavailableError, match="server busy: 1 agent attestations running"):
        async with admission.admitted():
            pass
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.waiting == 0
    second = asyncio.create_task(wait_turn())
    await asyncio.sleep(0)
    assert admission.waiting == 1
    release.set()
    await holder
    await second
    assert admission.waiting == 0


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid limit: 0 must be at least 1"):
        AttestationAdmission(limit=0)
    with pytest.raises(InvalidArgumentError, match="invalid queue: -1 must not be negative"):
        AttestationAdmission(queue=-1)


def test_a_call_with_too_little_of_its_deadline_left_is_refused() -> None:
    AttestationAdmission.check_time_left(None)
    AttestationAdmission.check_time_left(MIN_TIME_LEFT)
    left = f"{MIN_TIME_LEFT - 0.1:.1f}".replace(".", r"\.")
    with pytest.raises(UnavailableError, match=rf"the call has {left} s of its deadline left"):
        AttestationAdmission.check_time_left(MIN_TIME_LEFT - 0.1)


async def test_quiet_since_is_when_the_last_attestation_ended_or_left_the_queue() -> None:
    clock = FakeClock()
    made = clock.now()
    admission = AttestationAdmission(limit=1, queue=1, clock=clock)
    assert admission.quiet_since() == made
    assert admission.admitted_total == 0
    release = asyncio.Event()
    held = asyncio.Event()

    async def hold() -> None:
        async with admission.admitted():
            held.set()
            await release.wait()

    async def wait_turn() -> None:
        async with admission.admitted():
            pass

    holder = asyncio.create_task(hold())
    await held.wait()
    assert admission.quiet_since() is None, "an attestation runs"
    waiter = asyncio.create_task(wait_turn())
    await asyncio.sleep(0)
    await clock.advance(3)
    release.set()
    await holder
    await waiter
    assert admission.quiet_since() == made + timedelta(seconds=3)
    assert admission.admitted_total == 2
    # A waiter that gives up makes the admission quiet too, without being admitted.
    release.clear()
    held.clear()
    holder = asyncio.create_task(hold())
    await held.wait()
    waiter = asyncio.create_task(wait_turn())
    await asyncio.sleep(0)
    await clock.advance(2)
    release.set()
    waiter.cancel()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.quiet_since() == made + timedelta(seconds=5)
    assert admission.admitted_total == 3
