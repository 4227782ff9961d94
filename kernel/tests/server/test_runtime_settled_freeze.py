"""A server built to freeze once a storm is over (as ``pyspire-server run`` builds it) does so
on its own clock after an agent attested, as the next collection ends, and a server built
otherwise never freezes."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire_nodeattestor_join_token import AgentJoinTokenAttestor, AgentJoinTokenConfig

from pyspire.agent.client import ServerClient
from pyspire.catalog import Discovery
from pyspire.collector import SETTLED_AFTER
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.server.runtime import ServerRuntime
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.host import make_host_services

from .test_runtime import admin_bundle, server_document
from .test_runtime_signing_processes import TD, admin_setup, csr_of


@pytest.fixture(autouse=True)
def nothing_frozen() -> Iterator[None]:
    """The test process's heap: nothing frozen before, nothing left frozen after."""
    gc.unfreeze()
    yield
    gc.unfreeze()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110 - the freeze has no event to wait on
            await asyncio.sleep(0.01)


async def attest_one_agent(runtime: ServerRuntime, tmp_path: Path) -> None:
    token, _ = await admin_setup(runtime)
    bundle = await admin_bundle(runtime)
    assert runtime.listening is not None
    client = ServerClient(
        trust_domain=TD,
        address="127.0.0.1",
        port=runtime.listening.port,
        bundle=Bundle(TD, tuple(X509Authority(a.asn1) for a in bundle.x509_authorities)),
    )
    attestor = AgentJoinTokenAttestor()
    await attestor.configure(AgentJoinTokenConfig(token=token), make_host_services(tmp_path))
    try:
        await client.attest("join_token", attestor, csr_of(ec.generate_private_key(ec.SECP256R1())))
    finally:
        await client.close()


@pytest.mark.parametrize("asked", [True, False])
async def test_the_heap_is_frozen_once_attestations_have_been_quiet(
    tmp_path: Path, asked: bool
) -> None:
    fake_clock = FakeClock(datetime.now(UTC))  # TLS checks certificates against the real time
    runtime = ServerRuntime(
        load_document(SERVER_SCHEMA, server_document(tmp_path)),
        Discovery.load(),
        clock=fake_clock,
        freeze_when_settled=asked,
    )
    task = asyncio.create_task(runtime.run())
    try:
        await until(lambda: runtime.ready.is_set() or task.done())
        await attest_one_agent(runtime, tmp_path)
        assert runtime.admission.admitted_total == 1
        await fake_clock.advance(SETTLED_AFTER - 1)
        assert gc.get_freeze_count() == 0, "not quiet for long enough yet"
        for _ in range(2):
            await fake_clock.advance(1)
        gc.collect(0)  # the freeze is made as the next collection ends
        if asked:
            await until(lambda: gc.get_freeze_count() > 0)
        else:
            await asyncio.sleep(0.1)
            gc.collect(0)
            assert gc.get_freeze_count() == 0
    finally:
        runtime.stop()
        await asyncio.wait_for(task, timeout=30)
