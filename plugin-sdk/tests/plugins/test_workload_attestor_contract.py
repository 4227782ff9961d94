"""The workload attestor contract suite, proved on a small /proc uid attestor.

The attestor exists only here: it reports the effective uid and gid of a process from
``/proc/<pid>/status`` through :mod:`pyspire_sdk.procfs`. Broken attestors show that the suite
fails a plugin that breaks the contract.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor
from pyspire_sdk.procfs import read_process_info
from pyspire_sdk.testing.workload_attestor_contract import WorkloadAttestorContract, vanished_pid


class ProcUidAttestor:
    async def configure(self, config: Any, host: HostServices) -> None:
        assert isinstance(config, NoConfig)

    async def close(self) -> None:
        return None

    async def attest(self, pid: int) -> Sequence[str]:
        info = await read_process_info(pid)
        return [f"uid:{info.uids.effective}", f"gid:{info.gids.effective}"]


class TestProcUidAttestorPassesTheContract(WorkloadAttestorContract):
    @pytest.fixture
    async def workload_attestor(
        self, host_services: HostServices
    ) -> AsyncIterator[WorkloadAttestor]:
        attestor = ProcUidAttestor()
        await attestor.configure(NoConfig(), host_services)
        yield attestor
        await attestor.close()

    @pytest.fixture
    def workload_attestor_name(self) -> str:
        return "procuid"


class NoOpinionAttestor(ProcUidAttestor):
    """Knows nothing about ordinary processes, like a container attestor outside containers."""

    async def attest(self, pid: int) -> Sequence[str]:
        await read_process_info(pid)
        return []


class TestNoOpinionAttestorPassesTheContract(WorkloadAttestorContract):
    @pytest.fixture
    def workload_attestor(self) -> WorkloadAttestor:
        return NoOpinionAttestor()

    @pytest.fixture
    def workload_attestor_name(self) -> str:
        return "noopinion"

    @pytest.fixture
    def own_process_has_selectors(self) -> bool:
        return False


async def test_own_process_selectors_match_the_process_ids() -> None:
    values = await ProcUidAttestor().attest(os.getpid())
    assert values == [f"uid:{os.geteuid()}", f"gid:{os.getegid()}"]


async def test_vanished_pid_names_no_live_process() -> None:
    pid = await vanished_pid()
    assert not await asyncio.to_thread(Path(f"/proc/{pid}").exists)


class TestTheSuiteCatchesBrokenAttestors:
    async def test_prefixed_values_fail(self) -> None:
        class Prefixed(ProcUidAttestor):
            async def attest(self, pid: int) -> Sequence[str]:
                return [f"procuid:{value}" for value in await super().attest(pid)]

        with pytest.raises(AssertionError, match="carries the type prefix"):
            await WorkloadAttestorContract().test_own_process_yields_plain_selector_values(
                Prefixed(), "procuid", True
            )

    async def test_silence_where_selectors_are_expected_fails(self) -> None:
        with pytest.raises(AssertionError, match="no selector values"):
            await WorkloadAttestorContract().test_own_process_yields_plain_selector_values(
                NoOpinionAttestor(), "procuid", True
            )

    async def test_a_string_result_fails(self) -> None:
        class ReturnsString(ProcUidAttestor):
            async def attest(self, pid: int) -> Sequence[str]:
                return "uid:0"

        with pytest.raises(AssertionError, match="not a sequence"):
            await WorkloadAttestorContract().test_own_process_yields_plain_selector_values(
                ReturnsString(), "procuid", True
            )

    async def test_selectors_for_a_vanished_process_fail(self) -> None:
        class Inventive(ProcUidAttestor):
            async def attest(self, pid: int) -> Sequence[str]:
                return ["uid:0"]

        with pytest.raises(AssertionError, match="a process that is gone"):
            await (
                WorkloadAttestorContract().test_vanished_process_is_unavailable_or_has_no_selectors(
                    Inventive()
                )
            )

    async def test_changing_answers_fail(self) -> None:
        counter = itertools.count()

        class Drifting(ProcUidAttestor):
            async def attest(self, pid: int) -> Sequence[str]:
                return [f"call:{next(counter)}"]

        with pytest.raises(AssertionError):
            await WorkloadAttestorContract().test_results_are_deterministic(Drifting())
        with pytest.raises(AssertionError):
            await WorkloadAttestorContract().test_concurrent_attestations_agree(Drifting())

    async def test_accepting_an_impossible_pid_fails(self) -> None:
        class Lenient(ProcUidAttestor):
            async def attest(self, pid: int) -> Sequence[str]:
                return []

        with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
            await WorkloadAttestorContract().test_impossible_pid_is_an_error(Lenient(), 0)
