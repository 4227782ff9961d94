"""Catalog: creation and configuration in plan order, closing in reverse, failures by name."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from pyspire.catalog import (
    AGENT_KEY_MANAGER,
    AGENT_NODE_ATTESTOR,
    DATASTORE,
    NOTIFIERS,
    SERVER_KEY_MANAGER,
    SVID_STORES,
    UPSTREAM_AUTHORITY,
    WORKLOAD_ATTESTORS,
    Catalog,
    CatalogPlan,
    Discovery,
    PlannedPlugin,
    Side,
    plan_plugins,
)
from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import HostServices

HostFor = Callable[[PlannedPlugin], HostServices]
LABELLED = {"alpha", "bravo", "charlie"}  # the fakes whose configuration needs a label


def agent_plan(modules: list[ModuleType], *workload: str) -> CatalogPlan:
    table = {
        "key_manager": {"memory": {}},
        "node_attestor": {"join_token": {}},
        "workload_attestor": {
            name: ({"label": name} if name in LABELLED else {}) for name in workload
        },
    }
    return plan_plugins(Side.AGENT, table, Discovery.from_modules(*modules))


async def test_configures_in_plan_order_and_closes_in_reverse(
    agent_modules: list[ModuleType], journal: list[str], host_for: HostFor
) -> None:
    plan = agent_plan(agent_modules, "charlie", "alpha", "bravo")
    async with Catalog.open(plan, host_for=host_for) as catalog:
        assert journal == [
            "configure memory",
            "configure join_token",
            "configure charlie",
            "configure alpha",
            "configure bravo",
        ]
        chain = catalog.chain(WORKLOAD_ATTESTORS)
        assert [plugin.name for plugin in chain] == ["charlie", "alpha", "bravo"]
        assert [plugin.instance.name for plugin in chain] == ["charlie", "alpha", "bravo"]
        assert catalog.one(AGENT_KEY_MANAGER).name == "memory"
        alpha = catalog.get(WORKLOAD_ATTESTORS, "alpha")
        assert alpha is not None
        assert alpha.config.label == "alpha"
        assert catalog.get(WORKLOAD_ATTESTORS, "zulu") is None
        assert await chain[0].instance.attest(42) == ["pid:42"]
        journal.clear()
    assert journal == [
        "close bravo",
        "close alpha",
        "close charlie",
        "close join_token",
        "close memory",
    ]


async def test_each_plugin_gets_its_own_host(
    agent_modules: list[ModuleType], host_for: HostFor
) -> None:
    async with Catalog.open(agent_plan(agent_modules, "alpha"), host_for=host_for) as catalog:
        named = catalog.one_named(AGENT_NODE_ATTESTOR)
        attestor = named.instance
        assert named.name == "join_token"
        assert (attestor.host.plugin_name, attestor.host.plugin_type) == (
            "join_token",
            "node_attestor",
        )
        ((_, workload),) = ((p.name, p.instance) for p in catalog.chain(WORKLOAD_ATTESTORS))
        assert (workload.host.plugin_name, workload.host.plugin_type) == (
            "alpha",
            "workload_attestor",
        )


async def test_failed_configure_closes_it_and_everything_before(
    agent_modules: list[ModuleType], journal: list[str], host_for: HostFor
) -> None:
    plan = agent_plan(agent_modules, "alpha", "broken", "bravo")
    with pytest.raises(PluginError) as caught:
        async with Catalog.open(plan, host_for=host_for):
            pytest.fail("the catalog must not open")
    assert str(caught.value) == (
        'workload_attestor plugin "broken" (dist-workload) failed to configure: '
        "RuntimeError: disk on fire"
    )
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert journal == [
        "configure memory",
        "configure join_token",
        "configure alpha",
        "configure broken",
        "close broken",
        "close alpha",
        "close join_token",
        "close memory",
    ]


async def test_error_in_the_body_still_closes_everything(
    agent_modules: list[ModuleType], journal: list[str], host_for: HostFor
) -> None:
    async def use_and_fail() -> None:
        async with Catalog.open(agent_plan(agent_modules, "alpha"), host_for=host_for):
            journal.clear()
            raise KeyError("body failed")

    with pytest.raises(KeyError):
        await use_and_fail()
    assert journal == ["close alpha", "close join_token", "close memory"]


async def test_a_failing_close_does_not_stop_the_others(
    fakes: Any, agent_modules: list[ModuleType], journal: list[str], host_for: HostFor
) -> None:
    class StuckAttestor(fakes.FakeWorkloadAttestor):  # type: ignore[misc]
        async def close(self) -> None:
            await super().close()
            raise OSError("socket stuck")

    stuck = fakes.make_module(
        "dist-stuck",
        pyspire_workload_attestors=lambda: [
            fakes.registration("stuck", lambda: StuckAttestor("stuck", journal))
        ],
    )
    plan = agent_plan([*agent_modules, stuck], "stuck", "alpha")
    with pytest.raises(PluginError) as caught:
        async with Catalog.open(plan, host_for=host_for):
            journal.clear()
    assert str(caught.value) == (
        'workload_attestor plugin "stuck" (dist-stuck) failed to close: OSError: socket stuck'
    )
    assert journal == ["close alpha", "close stuck", "close join_token", "close memory"]


async def test_object_missing_interface_methods_is_rejected_by_name(
    fakes: Any, agent_modules: list[ModuleType], journal: list[str], host_for: HostFor
) -> None:
    class Lazy(fakes.Recorder):  # type: ignore[misc]
        def attest(self, pid: int) -> list[str]:  # not async
            return []

    odd = fakes.make_module(
        "dist-odd",
        pyspire_workload_attestors=lambda: [
            fakes.registration("hollow", lambda: fakes.Recorder("hollow", journal)),
            fakes.registration("lazy", lambda: Lazy("lazy", journal)),
        ],
    )
    for name, reason in [
        ("hollow", "missing attest"),
        ("lazy", "not async: attest"),
    ]:
        journal.clear()
        plan = agent_plan([*agent_modules, odd], name)
        with pytest.raises(PluginError) as caught:
            async with Catalog.open(plan, host_for=host_for):
                pytest.fail("the catalog must not open")
        assert str(caught.value) == (
            f'workload_attestor plugin "{name}" (dist-odd) does not implement '
            f"WorkloadAttestor: {reason}"
        )
        assert journal == [
            "configure memory",
            "configure join_token",
            "close join_token",
            "close memory",
        ]


async def test_factory_failure_is_named(
    fakes: Any, agent_modules: list[ModuleType], host_for: HostFor
) -> None:
    def refuse() -> object:
        raise FileNotFoundError("no such device")

    odd = fakes.make_module(
        "dist-refuse",
        pyspire_workload_attestors=lambda: [fakes.registration("refuse", refuse)],
    )
    plan = agent_plan([*agent_modules, odd], "refuse")
    with pytest.raises(PluginError) as caught:
        async with Catalog.open(plan, host_for=host_for):
            pytest.fail("the catalog must not open")
    assert str(caught.value) == (
        'workload_attestor plugin "refuse" (dist-refuse) cannot be created: '
        "FileNotFoundError: no such device"
    )


async def test_accessors_enforce_arity_and_side(
    agent_modules: list[ModuleType], host_for: HostFor
) -> None:
    async with Catalog.open(agent_plan(agent_modules, "alpha"), host_for=host_for) as catalog:
        with pytest.raises(
            TypeError,
            match=r"^agent\.workload_attestor is not a OneKind: at least one workload_attestor",
        ):
            catalog.one(WORKLOAD_ATTESTORS)
        with pytest.raises(TypeError, match=r"^agent\.svid_store is not a OptionalKind"):
            catalog.optional(SVID_STORES)
        with pytest.raises(LookupError, match="datastore is not a plugin type of the agent"):
            catalog.one(DATASTORE)
        with pytest.raises(LookupError, match="notifier is not a plugin type of the agent"):
            catalog.chain(NOTIFIERS)
        assert catalog.chain(SVID_STORES) == ()


async def test_optional_kind(fakes: Any, journal: list[str], host_for: HostFor) -> None:
    modules = [
        fakes.make_module(
            "server-dist",
            pyspire_datastores=lambda: [
                fakes.registration("sql", lambda: fakes.Recorder("sql", journal))
            ],
            pyspire_key_managers=lambda: [
                fakes.registration("memory", lambda: fakes.FakeKeyManager("memory", journal))
            ],
        )
    ]
    discovery = Discovery.from_modules(*modules)
    # the datastore's interface is checked for real; Recorder does not implement it
    plan = plan_plugins(
        Side.SERVER, {"datastore": {"sql": {}}, "key_manager": {"memory": {}}}, discovery
    )
    with pytest.raises(PluginError, match=r'datastore plugin "sql" \(server-dist\) does not'):
        async with Catalog.open(plan, host_for=host_for):
            pytest.fail("the catalog must not open")
    key_only = CatalogPlan(side=Side.SERVER, plugins=plan.of("key_manager"))
    async with Catalog.open(key_only, host_for=host_for) as catalog:
        assert catalog.optional(UPSTREAM_AUTHORITY) is None
        assert catalog.one(SERVER_KEY_MANAGER).name == "memory"
