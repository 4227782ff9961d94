"""The contract every workload attestor keeps, as tests a plugin's test module inherits.

Subclass :class:`WorkloadAttestorContract` and provide two fixtures: ``workload_attestor``, a
configured instance closed after the test, and ``workload_attestor_name``, the name the plugin
is registered under (both are required)::

    class TestUnixAttestor(WorkloadAttestorContract):
        @pytest_asyncio.fixture
        async def workload_attestor(self, host_services):
            attestor = UnixAttestor()
            await attestor.configure(UnixConfig(), host_services)
            yield attestor
            await attestor.close()

        @pytest.fixture
        def workload_attestor_name(self):
            return "unix"

The tests attest the test process itself and a process that has just exited. An attestor that
has no opinion about an ordinary process (a container attestor run outside a container)
overrides ``own_process_has_selectors`` to return ``False``.
"""

from __future__ import annotations

__all__ = ["WorkloadAttestorContract", "vanished_pid"]

import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

import pytest

from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor, workload_selectors


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def vanished_pid() -> int:
    """The pid of a child process that has exited and been reaped, not reused yet."""
    for _ in range(10):
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await process.wait()
        if not _pid_exists(process.pid):
            return process.pid
    pytest.skip("could not find a pid that stays free")


class WorkloadAttestorContract:
    """Tests every workload attestor must pass. The subclass provides ``workload_attestor``."""

    @pytest.fixture
    def workload_attestor(self) -> WorkloadAttestor:
        """A configured workload attestor; the subclass must override this."""
        pytest.fail(
            "a WorkloadAttestorContract subclass must provide the 'workload_attestor' fixture"
        )

    @pytest.fixture
    def workload_attestor_name(self) -> str:
        """The plugin's registered name, its selector type; the subclass must override this.

        Without the real name the suite could not tell a value that wrongly carries the type
        prefix (``session:sid:7`` from the ``session`` attestor) from a plain one.
        """
        pytest.fail(
            "a WorkloadAttestorContract subclass must provide the 'workload_attestor_name' "
            "fixture: the name the plugin is registered under (its selector type)"
        )

    @pytest.fixture(autouse=True)
    def _requires_workload_attestor_name(self, workload_attestor_name: str) -> None:
        """Every test of the suite needs the name, so a subclass without it fails at once."""

    @pytest.fixture
    def own_process_has_selectors(self) -> bool:
        """Whether attesting the test process must yield at least one selector value."""
        return True

    @pytest.mark.asyncio
    async def test_own_process_yields_plain_selector_values(
        self,
        workload_attestor: WorkloadAttestor,
        workload_attestor_name: str,
        own_process_has_selectors: bool,
    ) -> None:
        values = await workload_attestor.attest(os.getpid())

        assert isinstance(values, Sequence)
        assert not isinstance(values, (str, bytes)), "attest returned a string, not a sequence"
        for value in values:
            assert isinstance(value, str), f"selector value {value!r} is not a string"
            assert value, "a selector value is empty"
            assert not value.startswith(f"{workload_attestor_name}:"), (
                f"selector value {value!r} carries the type prefix; the host adds it"
            )
        if own_process_has_selectors:
            assert values, "no selector values for the test process"
        selectors = workload_selectors(workload_attestor_name, values)
        assert all(selector.type == workload_attestor_name for selector in selectors)

    @pytest.mark.asyncio
    async def test_vanished_process_is_unavailable_or_has_no_selectors(
        self, workload_attestor: WorkloadAttestor
    ) -> None:
        pid = await vanished_pid()
        try:
            values = await workload_attestor.attest(pid)
        except UnavailableError:
            return
        assert list(values) == [], f"selector values {list(values)!r} for a process that is gone"

    @pytest.mark.parametrize("pid", [0, -1])
    @pytest.mark.asyncio
    async def test_impossible_pid_is_an_error(
        self, workload_attestor: WorkloadAttestor, pid: int
    ) -> None:
        with pytest.raises((InvalidArgumentError, UnavailableError)):
            await workload_attestor.attest(pid)

    @pytest.mark.asyncio
    async def test_concurrent_attestations_agree(self, workload_attestor: WorkloadAttestor) -> None:
        pid = os.getpid()
        results = await asyncio.gather(*(workload_attestor.attest(pid) for _ in range(16)))
        first = sorted(results[0])
        for result in results[1:]:
            assert sorted(result) == first

    @pytest.mark.asyncio
    async def test_results_are_deterministic(self, workload_attestor: WorkloadAttestor) -> None:
        pid = os.getpid()
        first = sorted(await workload_attestor.attest(pid))
        second = sorted(await workload_attestor.attest(pid))
        assert first == second

    @pytest.mark.asyncio
    async def test_parent_process_is_attested_independently(
        self, workload_attestor: WorkloadAttestor
    ) -> None:
        # Attesting another pid in between must not change the answer for this one: an
        # attestor must not keep per-call state that leaks across pids.
        pid = os.getpid()
        before = sorted(await workload_attestor.attest(pid))
        with contextlib.suppress(UnavailableError):
            await workload_attestor.attest(os.getppid())
        after = sorted(await workload_attestor.attest(pid))
        assert before == after
