"""The environ attestor against real processes: the SDK contract, then its own rules."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pyspire_workloadattestor_environ import EnvironAttestor, EnvironConfig
from pyspire_workloadattestor_environ.plugin import pyspire_workload_attestors
from structlog.testing import capture_logs

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor
from pyspire_sdk.testing import make_host_services
from pyspire_sdk.testing.readme import assert_readme_documents
from pyspire_sdk.testing.workload_attestor_contract import WorkloadAttestorContract

README = Path(__file__).resolve().parents[1] / "README.md"

CHILD_ENVIRONMENT = {
    "APP": "billing",
    "TIER": "gold",
    "EMPTY": "",
    "EXACT": "e" * 256,
    "LONG": "l" * 257,
    "SPACED": "a b=c:d",
}


def own_variable_names() -> tuple[str, ...]:
    """Up to three variables of the environment this test process started with."""
    data = Path(f"/proc/{os.getpid()}/environ").read_bytes()
    names = [record.partition(b"=")[0] for record in data.split(b"\0") if b"=" in record]
    usable = [name.decode() for name in names if name and b":" not in name]
    return tuple(dict.fromkeys(usable))[:3]


@pytest_asyncio.fixture
async def child() -> AsyncIterator[int]:
    """A real process started with :data:`CHILD_ENVIRONMENT` plus a non-UTF-8 value."""
    environment: dict[bytes, bytes] = {
        name.encode(): value.encode() for name, value in CHILD_ENVIRONMENT.items()
    }
    environment[b"BINARY"] = b"\xff\xfe"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; sys.stdin.read()",
        stdin=asyncio.subprocess.PIPE,
        env=environment,  # bytes names and values are fine on POSIX
    )
    try:
        yield process.pid
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await process.wait()


async def configured(host: HostServices, **settings: object) -> EnvironAttestor:
    attestor = EnvironAttestor()
    await attestor.configure(load_config(EnvironConfig, settings, path="environ"), host)
    return attestor


class TestEnvironContract(WorkloadAttestorContract):
    @pytest_asyncio.fixture
    async def workload_attestor(
        self, host_services: HostServices
    ) -> AsyncIterator[WorkloadAttestor]:
        attestor = await configured(
            host_services, names=list(own_variable_names()), max_value_bytes=1 << 20
        )
        yield attestor
        await attestor.close()

    @pytest.fixture
    def workload_attestor_name(self) -> str:
        return "environ"

    @pytest.fixture
    def own_process_has_selectors(self) -> bool:
        return bool(own_variable_names())


@pytest.mark.asyncio
async def test_configured_names_in_order(host_services: HostServices, child: int) -> None:
    attestor = await configured(
        host_services,
        names=["TIER", "APP", "EMPTY", "SPACED", "EXACT", "LONG", "BINARY", "MISSING"],
    )
    assert await attestor.attest(child) == [
        "TIER:gold",
        "APP:billing",
        "EMPTY:",
        "SPACED:a b=c:d",
        "EXACT:" + "e" * 256,
    ]


@pytest.mark.asyncio
async def test_size_limit_is_configurable(host_services: HostServices, child: int) -> None:
    attestor = await configured(host_services, names=["APP", "TIER"], max_value_bytes=5)
    assert await attestor.attest(child) == ["TIER:gold"]


@pytest.mark.asyncio
async def test_skipped_values_are_logged_by_name_only(tmp_path: Path, child: int) -> None:
    with capture_logs() as logs:
        host = make_host_services(tmp_path, plugin_name="environ")
        attestor = await configured(host, names=["LONG", "BINARY"])
        assert await attestor.attest(child) == []
    assert [(log["variable"], log["reason"]) for log in logs] == [
        ("LONG", "value is longer than 256 bytes"),
        ("BINARY", "value is not valid utf-8"),
    ]
    assert "l" * 257 not in repr(logs)


@pytest.mark.asyncio
async def test_exited_process_is_unavailable(host_services: HostServices) -> None:
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await process.wait()
    attestor = await configured(host_services, names=["APP"])
    with pytest.raises(UnavailableError, match=rf"^process {process.pid} does not exist$"):
        await attestor.attest(process.pid)


def write_process(proc_root: Path, pid: int, environ: bytes | None) -> None:
    directory = proc_root / str(pid)
    directory.mkdir(parents=True)
    fields = " ".join(["S"] + ["0"] * 18 + ["4242"] + ["0"] * 10)
    (directory / "stat").write_text(f"{pid} (worker) {fields}\n")
    if environ is None:
        (directory / "environ").mkdir()
    else:
        (directory / "environ").write_bytes(environ)


@pytest.mark.asyncio
async def test_first_occurrence_wins_and_odd_records_are_ignored(
    host_services: HostServices, tmp_path: Path
) -> None:
    write_process(tmp_path, 77, b"NOEQUALS\0APP=first\0=orphan\0APP=second\0TIER=x\0")
    attestor = EnvironAttestor(proc_root=tmp_path)
    await attestor.configure(EnvironConfig(names=("APP", "TIER", "NOEQUALS")), host_services)
    assert await attestor.attest(77) == ["APP:first", "TIER:x"]


@pytest.mark.asyncio
async def test_unreadable_environment_is_unavailable(
    host_services: HostServices, tmp_path: Path
) -> None:
    write_process(tmp_path, 78, None)
    attestor = EnvironAttestor(proc_root=tmp_path)
    await attestor.configure(EnvironConfig(names=("APP",)), host_services)
    with pytest.raises(UnavailableError, match=r"^process 78: reading environ failed: "):
        await attestor.attest(78)


@pytest.mark.asyncio
async def test_attest_before_configure_is_an_error() -> None:
    with pytest.raises(PluginError, match=r"^environ workload attestor is not configured"):
        await EnvironAttestor().attest(os.getpid())


@pytest.mark.asyncio
async def test_attest_after_close_is_an_error(host_services: HostServices) -> None:
    attestor = await configured(host_services, names=["APP"])
    await attestor.close()
    with pytest.raises(PluginError, match=r"^environ workload attestor is not configured"):
        await attestor.attest(os.getpid())


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, ["environ.names: required key is missing (expected an array of strings)"]),
        ({"names": []}, ["environ.names: at least one variable name is required"]),
        (
            {"names": ["A", "", "B=C", "X:Y", "A"], "max_value_bytes": 0},
            [
                "environ.names[1]: a variable name must not be empty",
                "environ.names[2]: invalid variable name 'B=C': it must not contain '=', ':' "
                "or NUL",
                "environ.names[3]: invalid variable name 'X:Y': it must not contain '=', ':' "
                "or NUL",
                "environ.names[4]: variable name 'A' is listed twice",
                "environ.max_value_bytes: must be at least 1, found 0",
            ],
        ),
        (
            {"names": "APP"},
            ["environ.names: expected an array of strings, found string 'APP'"],
        ),
    ],
)
def test_configuration_errors(settings: dict[str, object], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EnvironConfig, settings, path="environ")
    assert [str(issue) for issue in caught.value.issues] == expected


def test_defaults() -> None:
    config = load_config(EnvironConfig, {"names": ["APP"]})
    assert config == EnvironConfig(names=("APP",), max_value_bytes=256)


def test_hook_registers_the_attestor() -> None:
    (registration,) = pyspire_workload_attestors()
    assert registration.name == "environ"
    assert registration.config_type is EnvironConfig
    assert isinstance(registration.factory(), EnvironAttestor)
    assert isinstance(registration.factory(), WorkloadAttestor)


def test_readme_settings_table_matches_the_declaration() -> None:
    assert_readme_documents(README, EnvironConfig)
