"""The workload attestor chain: merged, typed selectors, or a failure naming the attestor."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from pyspire_workloadattestor_unix import UnixAttestor, UnixAttestorConfig

from pyspire.agent.workload.attestation import WorkloadAttestation, WorkloadAttestationError
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.selector import Selector
from pyspire_sdk.testing import make_host_services


class StaticAttestor:
    """Answers with fixed values and remembers the pids it was asked about."""

    def __init__(self, *values: str) -> None:
        self.values = list(values)
        self.pids: list[int] = []

    async def configure(self, config: object, host: HostServices) -> None:
        """Nothing to configure."""

    async def close(self) -> None:
        """Nothing to release."""

    async def attest(self, pid: int) -> Sequence[str]:
        self.pids.append(pid)
        return self.values


class FailingAttestor(StaticAttestor):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    async def attest(self, pid: int) -> Sequence[str]:
        raise self.error


class HangingAttestor(StaticAttestor):
    def __init__(self) -> None:
        super().__init__()
        self.cancelled = False

    async def attest(self, pid: int) -> Sequence[str]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return []


async def unix_attestor(tmp_path: Path) -> UnixAttestor:
    attestor = UnixAttestor()
    await attestor.configure(UnixAttestorConfig(), make_host_services(tmp_path, plugin_name="unix"))
    return attestor


async def test_selectors_are_typed_by_plugin_name_and_merged(tmp_path: Path) -> None:
    docker = StaticAttestor("image_id:abc", "label:x")
    chain = WorkloadAttestation([("unix", await unix_attestor(tmp_path)), ("docker", docker)])
    selectors = await chain.attest(os.getpid())
    assert Selector("unix", f"uid:{os.getuid()}") in selectors
    assert Selector("unix", f"gid:{os.getgid()}") in selectors
    assert {Selector("docker", "image_id:abc"), Selector("docker", "label:x")} <= selectors
    assert docker.pids == [os.getpid()]
    assert chain.names == ("unix", "docker")


async def test_no_opinion_adds_nothing() -> None:
    chain = WorkloadAttestation([("a", StaticAttestor("x")), ("k8s", StaticAttestor())])
    assert await chain.attest(1) == frozenset({Selector("a", "x")})


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (UnavailableError("process 7 is gone"), "process 7 is gone"),
        (InvalidArgumentError("pid must be a positive integer"), "pid must be a positive"),
        (RuntimeError("boom"), "unexpected RuntimeError"),
    ],
    ids=["unavailable", "invalid-argument", "unexpected"],
)
async def test_any_failing_attestor_fails_the_attestation(error: Exception, reason: str) -> None:
    chain = WorkloadAttestation([("good", StaticAttestor("x")), ("bad", FailingAttestor(error))])
    with pytest.raises(WorkloadAttestationError) as raised:
        await chain.attest(7)
    assert raised.value.attestor == "bad"
    assert reason in raised.value.reason
    assert isinstance(raised.value, UnavailableError)


async def test_an_empty_value_fails_the_attestation() -> None:
    chain = WorkloadAttestation([("odd", StaticAttestor("ok", ""))])
    with pytest.raises(WorkloadAttestationError, match="'odd' failed"):
        await chain.attest(7)


async def test_a_slow_attestor_times_out_and_is_cancelled() -> None:
    hanging = HangingAttestor()
    chain = WorkloadAttestation([("slow", hanging), ("fast", StaticAttestor("x"))], timeout=0.05)
    with pytest.raises(WorkloadAttestationError) as raised:
        await chain.attest(7)
    assert raised.value.attestor == "slow"
    assert "no answer within 0.05s" in raised.value.reason
    assert hanging.cancelled


async def test_a_failure_cancels_the_attestors_still_running() -> None:
    hanging = HangingAttestor()
    chain = WorkloadAttestation(
        [("slow", hanging), ("bad", FailingAttestor(UnavailableError("down")))], timeout=30
    )
    with pytest.raises(WorkloadAttestationError) as raised:
        await chain.attest(7)
    assert raised.value.attestor == "bad"
    assert hanging.cancelled


async def test_the_unix_attestor_fails_for_a_process_that_is_gone(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec("true")
    await process.wait()
    chain = WorkloadAttestation([("unix", await unix_attestor(tmp_path))])
    with pytest.raises(WorkloadAttestationError, match="'unix' failed"):
        await chain.attest(process.pid)


def test_the_chain_is_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="at least one"):
        WorkloadAttestation([])
    with pytest.raises(InvalidArgumentError, match="repeated: a"):
        WorkloadAttestation([("a", StaticAttestor()), ("a", StaticAttestor())])
    with pytest.raises(InvalidArgumentError, match="timeout must be positive"):
        WorkloadAttestation([("a", StaticAttestor())], timeout=0)
