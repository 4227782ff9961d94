"""The ``systemd`` attestor against a fake systemd on a private D-Bus daemon: selectors exactly
as SPIRE makes them, failures, the bus address, reconnection, lazy loading of dbus-fast."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import pytest
import pytest_asyncio
from dbus_fast import PropertyAccess
from dbus_fast.annotations import DBusSignature, DBusStr
from dbus_fast.service import ServiceInterface, dbus_property
from pyspire_workloadattestor_systemd import SystemdAttestor, system_bus_address
from pyspire_workloadattestor_systemd.bus import (
    DEFAULT_SYSTEM_BUS_ADDRESS,
    SYSTEM_BUS_ADDRESS_VARIABLE,
    UNIT_INTERFACE,
)
from pyspire_workloadattestor_systemd.plugin import pyspire_workload_attestors
from pyspire_workloadattestor_systemd.testing import (
    NO_UNIT_FOR_PID,
    FakeSystemd,
    PrivateBus,
    unit_object_path,
)

from pyspire_sdk.errors import InvalidArgumentError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.readme import assert_readme_documents
from pyspire_sdk.testing.workload_attestor_contract import WorkloadAttestorContract

README = Path(__file__).resolve().parents[1] / "README.md"
PID = 4242


async def configured(host: HostServices, address: str | None) -> SystemdAttestor:
    attestor = SystemdAttestor(bus_address=address)
    await attestor.configure(NoConfig(), host)
    return attestor


@pytest_asyncio.fixture
async def attestor(
    fake_systemd: FakeSystemd, host_services: HostServices
) -> AsyncIterator[SystemdAttestor]:
    attestor = await configured(host_services, fake_systemd.address)
    yield attestor
    await attestor.close()


class TestSystemdAttestorContract(WorkloadAttestorContract):
    @pytest_asyncio.fixture
    async def workload_attestor(
        self, fake_systemd: FakeSystemd, host_services: HostServices
    ) -> AsyncIterator[WorkloadAttestor]:
        fake_systemd.add_unit(
            "pyspire-tests.service", "/etc/systemd/system/pyspire-tests.service", [os.getpid()]
        )
        attestor = await configured(host_services, fake_systemd.address)
        yield attestor
        await attestor.close()

    @pytest.fixture
    def workload_attestor_name(self) -> str:
        return "systemd"


async def test_selectors_are_spires(fake_systemd: FakeSystemd, attestor: SystemdAttestor) -> None:
    fake_systemd.add_unit("nginx.service", "/lib/systemd/system/nginx.service", [PID])
    assert await attestor.attest(PID) == [
        "id:nginx.service",
        "fragment_path:/lib/systemd/system/nginx.service",
    ]
    assert fake_systemd.calls == 1


async def test_a_transient_unit_has_no_fragment_path(
    fake_systemd: FakeSystemd, attestor: SystemdAttestor
) -> None:
    fake_systemd.add_unit("session-2.scope", "", [PID])
    assert await attestor.attest(PID) == ["id:session-2.scope"]


@pytest.mark.parametrize(
    ("unit_id", "label"),
    [
        ("nginx.service", "nginx_2eservice"),
        ("getty@tty1.service", "getty_40tty1_2eservice"),
        ("-.mount", "_2d_2emount"),
        ("my_app-2.service", "my_5fapp_2d2_2eservice"),
        ("1abc.service", "_31abc_2eservice"),
    ],
)
def test_unit_object_paths_are_systemds(unit_id: str, label: str) -> None:
    assert unit_object_path(unit_id) == f"/org/freedesktop/systemd1/unit/{label}"


async def test_units_are_read_at_the_path_systemd_answers(
    fake_systemd: FakeSystemd, attestor: SystemdAttestor
) -> None:
    fake_systemd.add_unit("getty@tty1.service", "/lib/systemd/system/getty@.service", [PID])
    fake_systemd.add_unit("-.mount", "/proc/self/mountinfo", [PID + 1])
    assert await attestor.attest(PID) == [
        "id:getty@tty1.service",
        "fragment_path:/lib/systemd/system/getty@.service",
    ]
    assert await attestor.attest(PID + 1) == ["id:-.mount", "fragment_path:/proc/self/mountinfo"]


async def test_a_process_in_no_unit_fails_the_attestation(
    fake_systemd: FakeSystemd, attestor: SystemdAttestor
) -> None:
    with pytest.raises(UnavailableError) as raised:
        await attestor.attest(PID)
    assert f"cannot get the unit of pid {PID}: {NO_UNIT_FOR_PID}" in str(raised.value)


async def test_no_systemd_on_the_bus_fails_the_attestation(
    private_bus: PrivateBus, host_services: HostServices
) -> None:
    attestor = await configured(host_services, private_bus.address)
    try:
        with pytest.raises(UnavailableError) as raised:
            await attestor.attest(PID)
    finally:
        await attestor.close()
    assert "org.freedesktop.DBus.Error.ServiceUnknown" in str(raised.value)


async def test_an_unreachable_bus_fails_naming_its_address(
    tmp_path: Path, host_services: HostServices
) -> None:
    address = f"unix:path={tmp_path}/missing"
    attestor = await configured(host_services, address)
    try:
        with pytest.raises(UnavailableError) as raised:
            await attestor.attest(PID)
    finally:
        await attestor.close()
    assert f"cannot connect to the system bus at {address}: FileNotFoundError" in str(raised.value)


class _OddUnit(ServiceInterface):
    """A unit whose FragmentPath is not a string, which systemd never publishes."""

    def __init__(self) -> None:
        super().__init__(UNIT_INTERFACE)

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> DBusStr:
        return "odd.service"

    @dbus_property(access=PropertyAccess.READ)
    def FragmentPath(self) -> Annotated[list[str], DBusSignature("as")]:
        return ["/a", "/b"]


async def test_an_answer_of_the_wrong_type_fails_the_attestation(
    fake_systemd: FakeSystemd, attestor: SystemdAttestor
) -> None:
    path = fake_systemd.add_interface("odd.service", _OddUnit(), [PID])
    with pytest.raises(UnavailableError) as raised:
        await attestor.attest(PID)
    assert str(raised.value) == f"FragmentPath of unit {path} is not a string (type as)"


async def test_a_missing_property_fails_the_attestation(
    fake_systemd: FakeSystemd, attestor: SystemdAttestor
) -> None:
    # GetUnitByPID names an object that is not published: systemd's answer is an error.
    fake_systemd.add_interface("ghost.service", ServiceInterface("org.example.Other"), [PID])
    with pytest.raises(UnavailableError) as raised:
        await attestor.attest(PID)
    assert "cannot read Id of unit /org/freedesktop/systemd1/unit/ghost_2eservice" in str(
        raised.value
    )


@pytest.mark.parametrize("pid", [2**32, True, "7"])
async def test_pids_d_bus_cannot_carry_are_refused_before_asking(
    fake_systemd: FakeSystemd, attestor: SystemdAttestor, pid: object
) -> None:
    with pytest.raises(InvalidArgumentError, match="pid must be a positive 32-bit integer"):
        await attestor.attest(pid)  # type: ignore[arg-type]
    assert fake_systemd.calls == 0


async def test_attesting_needs_configure(fake_systemd: FakeSystemd) -> None:
    with pytest.raises(PluginError, match="not configured"):
        await SystemdAttestor(bus_address=fake_systemd.address).attest(PID)


def test_the_system_bus_address_comes_from_the_environment() -> None:
    assert system_bus_address({}) == DEFAULT_SYSTEM_BUS_ADDRESS
    assert system_bus_address({SYSTEM_BUS_ADDRESS_VARIABLE: ""}) == DEFAULT_SYSTEM_BUS_ADDRESS
    assert system_bus_address({SYSTEM_BUS_ADDRESS_VARIABLE: "unix:path=/x"}) == "unix:path=/x"


async def test_the_attestor_dials_the_bus_the_environment_names(
    fake_systemd: FakeSystemd, host_services: HostServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SYSTEM_BUS_ADDRESS_VARIABLE, fake_systemd.address)
    fake_systemd.add_unit("web.service", "/etc/systemd/system/web.service", [PID])
    attestor = await configured(host_services, None)
    try:
        assert await attestor.attest(PID) == [
            "id:web.service",
            "fragment_path:/etc/systemd/system/web.service",
        ]
    finally:
        await attestor.close()


async def test_a_restarted_bus_is_dialled_again(host_services: HostServices) -> None:
    with PrivateBus() as bus:
        async with FakeSystemd(bus.address) as systemd:
            systemd.add_unit("web.service", "", [PID])
            attestor = await configured(host_services, bus.address)
            try:
                assert await attestor.attest(PID) == ["id:web.service"]
                bus.stop()
                bus.start()
                async with FakeSystemd(bus.address) as again:
                    again.add_unit("api.service", "", [PID])
                    outcomes: list[object] = []
                    for _ in range(2):
                        try:
                            outcomes.append(await attestor.attest(PID))
                        except UnavailableError as error:
                            outcomes.append(error)
            finally:
                await attestor.close()
    # The broken connection may be found by the first question after the restart, never later.
    assert outcomes[-1] == ["id:api.service"]
    assert outcomes[0] == ["id:api.service"] or isinstance(outcomes[0], UnavailableError)


async def test_concurrent_attestations_share_one_connection(
    fake_systemd: FakeSystemd, attestor: SystemdAttestor
) -> None:
    for offset in range(8):
        fake_systemd.add_unit(f"worker{offset}.service", "", [PID + offset])
    results = await asyncio.gather(*(attestor.attest(PID + offset) for offset in range(8)))
    assert results == [[f"id:worker{offset}.service"] for offset in range(8)]
    assert fake_systemd.calls == 8


def test_registration_loads_no_d_bus_library() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_workloadattestor_systemd.plugin as p\n"
        "[r.factory() for r in p.pyspire_workload_attestors()]"
    )
    assert "pyspire_workloadattestor_systemd" in loaded
    assert "dbus_fast" not in loaded


def test_the_registration_is_spires_name_without_settings() -> None:
    [registration] = pyspire_workload_attestors()
    assert registration.name == "systemd"
    assert registration.config_type is NoConfig


def test_readme_documents_the_settings() -> None:
    assert_readme_documents(README, NoConfig)
    text = README.read_text(encoding="utf-8")
    for selector in ("`systemd:id:<unit>`", "`systemd:fragment_path:<path>`"):
        assert selector in text
    assert f"`{SYSTEM_BUS_ADDRESS_VARIABLE}`" in text
