"""The ``unix`` attestor against real processes and the real ``/proc``: the SDK contract, the
test process's own selectors, a ``sleep`` child's binary, the size limit and exited processes."""

from __future__ import annotations

import asyncio
import grp
import hashlib
import importlib.metadata
import os
import pwd
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pyspire_workloadattestor_unix import UnixAttestor, UnixAttestorConfig
from pyspire_workloadattestor_unix.plugin import pyspire_workload_attestors

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, UnavailableError
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, HostServices
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor, workload_selectors
from pyspire_sdk.testing.readme import assert_readme_documents
from pyspire_sdk.testing.workload_attestor_contract import (
    WorkloadAttestorContract,
    vanished_pid,
)

README = Path(__file__).resolve().parents[1] / "README.md"
SLEEP = shutil.which("sleep")


async def configured(host: HostServices, **settings: Any) -> UnixAttestor:
    attestor = UnixAttestor()
    await attestor.configure(load_config(UnixAttestorConfig, settings, path="unix"), host)
    return attestor


def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def expected_identity(uid: int, gid: int, groups: list[int]) -> set[str]:
    values = {f"uid:{uid}", f"gid:{gid}"}
    if (user := user_name(uid)) is not None:
        values.add(f"user:{user}")
    if (group := group_name(gid)) is not None:
        values.add(f"group:{group}")
    for supplementary in groups:
        values.add(f"supplementary_gid:{supplementary}")
        if (name := group_name(supplementary)) is not None:
            values.add(f"supplementary_group:{name}")
    return values


@pytest.fixture
async def sleeper() -> AsyncIterator[asyncio.subprocess.Process]:
    """A real ``sleep`` child, killed and reaped after the test."""
    if SLEEP is None:
        pytest.skip("no sleep binary on PATH")
    process = await asyncio.create_subprocess_exec(SLEEP, "600")
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def own_binary() -> Path:
    return Path(f"/proc/{os.getpid()}/exe").resolve()


def sleep_binary() -> Path:
    assert SLEEP is not None
    return Path(os.path.realpath(SLEEP))


class TestUnixContract(WorkloadAttestorContract):
    @pytest.fixture(params=[False, True], ids=["ids-only", "discover-path"])
    async def workload_attestor(
        self, host_services: HostServices, request: pytest.FixtureRequest
    ) -> AsyncIterator[WorkloadAttestor]:
        attestor = await configured(host_services, discover_workload_path=request.param)
        yield attestor
        await attestor.close()

    @pytest.fixture
    def workload_attestor_name(self) -> str:
        return "unix"


# -- the test process -----------------------------------------------------------------------------


async def test_own_process_has_its_user_and_groups(host_services: HostServices) -> None:
    attestor = await configured(host_services)

    values = await attestor.attest(os.getpid())

    assert os.getuid() == os.geteuid(), "the tests expect an ordinary, non-setuid process"
    assert set(values) == expected_identity(os.geteuid(), os.getegid(), os.getgroups())
    assert len(values) == len(set(values))
    assert f"uid:{os.getuid()}" in values
    assert f"gid:{os.getgid()}" in values
    selectors = workload_selectors("unix", values)
    assert {str(selector) for selector in selectors} >= {f"unix:uid:{os.getuid()}"}


async def test_own_process_path_is_the_running_interpreter(host_services: HostServices) -> None:
    attestor = await configured(host_services, discover_workload_path=True)

    values = await attestor.attest(os.getpid())

    interpreter = own_binary()
    assert f"path:{interpreter}" in values
    assert f"sha256:{sha256_of(interpreter)}" in values


# -- a child process ------------------------------------------------------------------------------


async def test_child_gives_path_and_digest_of_its_binary(
    host_services: HostServices, sleeper: asyncio.subprocess.Process
) -> None:
    attestor = await configured(host_services, discover_workload_path=True)

    values = await attestor.attest(sleeper.pid)

    binary = sleep_binary()
    assert f"path:{binary}" in values
    assert f"sha256:{sha256_of(binary)}" in values
    assert set(values) - {v for v in values if v.startswith(("path:", "sha256:"))} == (
        expected_identity(os.geteuid(), os.getegid(), os.getgroups())
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another user needs root")
async def test_child_running_as_another_user_has_its_own_ids(
    host_services: HostServices,
) -> None:
    if SLEEP is None:
        pytest.skip("no sleep binary on PATH")
    nobody = pwd.getpwnam("nobody")
    extra = sorted({0, nobody.pw_gid, 1, 2})
    process = await asyncio.create_subprocess_exec(
        SLEEP,
        "600",
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=extra,
    )
    try:
        attestor = await configured(host_services)
        values = await attestor.attest(process.pid)
    finally:
        process.kill()
        await process.wait()

    assert set(values) == expected_identity(nobody.pw_uid, nobody.pw_gid, extra)
    assert f"user:{nobody.pw_name}" in values
    assert "supplementary_gid:0" in values


# -- the size limit -------------------------------------------------------------------------------


async def test_binary_exactly_at_the_limit_is_hashed(
    host_services: HostServices, sleeper: asyncio.subprocess.Process
) -> None:
    size = sleep_binary().stat().st_size
    attestor = await configured(
        host_services, discover_workload_path=True, workload_size_limit=size
    )

    values = await attestor.attest(sleeper.pid)

    assert any(value.startswith("sha256:") for value in values)


async def test_binary_over_the_limit_fails_attestation(
    host_services: HostServices, sleeper: asyncio.subprocess.Process
) -> None:
    size = sleep_binary().stat().st_size
    attestor = await configured(
        host_services, discover_workload_path=True, workload_size_limit=size - 1
    )

    with pytest.raises(UnavailableError, match="workload_size_limit") as raised:
        await attestor.attest(sleeper.pid)

    assert f"{size} bytes" in str(raised.value)


async def test_negative_limit_never_hashes(
    host_services: HostServices, sleeper: asyncio.subprocess.Process
) -> None:
    attestor = await configured(host_services, discover_workload_path=True, workload_size_limit=-1)

    values = await attestor.attest(sleeper.pid)

    assert f"path:{sleep_binary()}" in values
    assert not [value for value in values if value.startswith("sha256:")]


async def test_zero_limit_hashes_any_size(
    host_services: HostServices, sleeper: asyncio.subprocess.Process
) -> None:
    attestor = await configured(host_services, discover_workload_path=True, workload_size_limit=0)

    values = await attestor.attest(sleeper.pid)

    digest = sha256_of(sleep_binary())
    assert f"sha256:{digest}" in values


# -- processes that are gone ----------------------------------------------------------------------


@pytest.mark.parametrize("discover", [False, True])
async def test_exited_process_is_unavailable(host_services: HostServices, discover: bool) -> None:
    attestor = await configured(host_services, discover_workload_path=discover)
    pid = await vanished_pid()

    with pytest.raises(UnavailableError, match=str(pid)):
        await attestor.attest(pid)


async def test_killed_child_is_unavailable_once_reaped(
    host_services: HostServices, sleeper: asyncio.subprocess.Process
) -> None:
    attestor = await configured(host_services, discover_workload_path=True)
    assert await attestor.attest(sleeper.pid)

    sleeper.kill()
    await sleeper.wait()

    with pytest.raises(UnavailableError):
        await attestor.attest(sleeper.pid)


# -- configuration, documentation and registration ------------------------------------------------


def test_defaults_match_spire() -> None:
    config = load_config(UnixAttestorConfig, {}, path="unix")

    assert config == UnixAttestorConfig(discover_workload_path=False, workload_size_limit=0)
    assert not config.hashes_binary


def test_bad_settings_are_reported_with_their_key_paths() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(
            UnixAttestorConfig,
            {"discover_workload_path": "yes", "workload_size_limit": "1MB", "hash": True},
            path="agent.plugins.workload_attestor.unix",
        )

    paths = {issue.path for issue in raised.value.issues}
    assert paths == {
        "agent.plugins.workload_attestor.unix.discover_workload_path",
        "agent.plugins.workload_attestor.unix.workload_size_limit",
        "agent.plugins.workload_attestor.unix.hash",
    }


def test_readme_documents_every_setting() -> None:
    assert_readme_documents(README, UnixAttestorConfig)
    text = README.read_text()
    for kind in ("uid", "user", "gid", "group", "supplementary_gid", "supplementary_group"):
        assert f"`unix:{kind}:" in text
    assert "`unix:path:" in text
    assert "`unix:sha256:" in text


def test_registration() -> None:
    (registration,) = pyspire_workload_attestors()

    assert registration.name == "unix"
    assert registration.config_type is UnixAttestorConfig
    assert isinstance(registration.factory(), WorkloadAttestor)


def test_entry_point_is_installed() -> None:
    found = {
        entry_point.name: entry_point.value
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if entry_point.dist is not None
        and entry_point.dist.metadata["Name"] == "pyspire-workloadattestor-unix"
    }
    assert found == {"unix": "pyspire_workloadattestor_unix.plugin"}
