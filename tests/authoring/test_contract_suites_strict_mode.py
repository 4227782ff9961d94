"""The SDK's pytest plugin and contract suites work in a plugin's own project as its author sets
it up: pytest-asyncio in its default strict mode (no ``asyncio_mode`` setting anywhere).

Each case writes a small project into a temporary directory and runs pytest on it in a
subprocess, because the workspace's own configuration turns auto mode on.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from plugin_projects import PytestRun, environment, run_pytest

from pyspire_sdk.testing import workload_attestor_contract

ATTESTOR = """
from collections.abc import Sequence
from typing import Any

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.procfs import read_process_info


class UidAttestor:
    async def configure(self, config: Any, host: HostServices) -> None:
        self.host = host

    async def close(self) -> None:
        return None

    async def attest(self, pid: int) -> Sequence[str]:
        info = await read_process_info(pid)
        return [f"uid:{info.uids.effective}"]
"""

COMPLETE = """
import pytest
import pytest_asyncio

from attestor import UidAttestor
from pyspire_sdk.plugin import NoConfig
from pyspire_sdk.testing.workload_attestor_contract import WorkloadAttestorContract


class TestComplete(WorkloadAttestorContract):
    @pytest_asyncio.fixture
    async def workload_attestor(self, host_services):
        attestor = UidAttestor()
        await attestor.configure(NoConfig(), host_services)
        yield attestor
        await attestor.close()

    @pytest.fixture
    def workload_attestor_name(self):
        return "procuid"
"""

WITHOUT_NAME = """
import pytest_asyncio

from attestor import UidAttestor
from pyspire_sdk.testing.workload_attestor_contract import WorkloadAttestorContract


class TestWithoutName(WorkloadAttestorContract):
    @pytest_asyncio.fixture
    async def workload_attestor(self):
        return UidAttestor()
"""

PLAIN_ASYNC_FIXTURE = """
import pytest

from attestor import UidAttestor
from pyspire_sdk.testing.workload_attestor_contract import WorkloadAttestorContract


class TestPlainFixture(WorkloadAttestorContract):
    @pytest.fixture
    async def workload_attestor(self):
        return UidAttestor()

    @pytest.fixture
    def workload_attestor_name(self):
        return "procuid"
"""


@pytest.fixture(scope="module")
def strict_run(tmp_path_factory: pytest.TempPathFactory) -> PytestRun:
    project = tmp_path_factory.mktemp("strict-project")
    (project / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    tests = project / "tests"
    tests.mkdir()
    for name, text in {
        "attestor.py": ATTESTOR,
        "test_complete.py": COMPLETE,
        "test_without_name.py": WITHOUT_NAME,
        "test_plain_async_fixture.py": PLAIN_ASYNC_FIXTURE,
    }.items():
        (tests / name).write_text(textwrap.dedent(text).lstrip())
    return run_pytest([tests], cwd=project, env=environment(project))


COMPLETE_CLASS = "tests.test_complete.TestComplete."
CONTRACT_TESTS = sorted(
    name
    for name in vars(workload_attestor_contract.WorkloadAttestorContract)
    if name[:5] == "test_"
)


def test_the_contract_suite_passes_in_strict_mode(strict_run: PytestRun) -> None:
    complete = strict_run.under(COMPLETE_CLASS)
    ran = {outcome.test.rsplit(".", 1)[1].split("[")[0] for outcome in complete}
    assert ran == set(CONTRACT_TESTS)
    assert [outcome for outcome in complete if outcome.result != "passed"] == []


def test_a_missing_workload_attestor_name_names_the_fixture(strict_run: PytestRun) -> None:
    without = strict_run.under("tests.test_without_name.TestWithoutName.")
    assert len(without) == len(strict_run.under(COMPLETE_CLASS))
    for outcome in without:
        assert outcome.result == "error", outcome
        assert "must provide the 'workload_attestor_name' fixture" in outcome.message


def test_a_plain_async_fixture_gets_told_to_use_pytest_asyncio(strict_run: PytestRun) -> None:
    plain = strict_run.under("tests.test_plain_async_fixture.TestPlainFixture.")
    assert plain
    assert all(outcome.result == "error" for outcome in plain), plain
    # pytest reports the first test that needs the fixture; the later ones of the class fail on
    # an assertion inside pytest itself, with or without this plugin.
    assert "fixture 'workload_attestor' is an async function" in plain[0].message
    assert "@pytest_asyncio.fixture" in plain[0].message


def test_every_async_test_of_every_suite_carries_the_asyncio_mark() -> None:
    from pyspire_sdk.testing import (
        datastore_contract,
        key_manager_contract,
        node_attestor_contract,
        upstream_authority_contract,
    )

    suites = (
        datastore_contract.DataStoreContract,
        key_manager_contract.KeyManagerContract,
        node_attestor_contract.NodeAttestorContract,
        workload_attestor_contract.WorkloadAttestorContract,
        upstream_authority_contract.UpstreamAuthorityContract,
    )
    unmarked = [
        f"{suite.__name__}.{name}"
        for suite in suites
        for name, function in vars(suite).items()
        if name.startswith("test_")
        and not any(mark.name == "asyncio" for mark in getattr(function, "pytestmark", []))
    ]
    assert unmarked == []


def test_the_example_plugin_tests_pass_outside_the_workspace(tmp_path: Path) -> None:
    """``examples/workloadattestor-environ`` is what authors copy: its tests, copied out of the
    workspace (the example itself installed), pass in strict mode."""
    example = Path(__file__).resolve().parents[2] / "examples" / "workloadattestor-environ"
    project = tmp_path / "environ"
    shutil.copytree(example / "tests", project / "tests")
    shutil.copy(example / "README.md", project / "README.md")
    (project / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    run = run_pytest([project / "tests"], cwd=project, env=environment(project))
    assert len(run.outcomes) > 10, run.output
    assert run.not_passed() == [], run.output
