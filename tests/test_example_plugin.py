"""The example third-party plugin, installed as a distribution, reaches a running catalog.

Only its entry point connects it to pyspire: discovery finds it, the agent's TOML plans it, the
catalog configures it and the chain attests a real process by its environment.
"""

from __future__ import annotations

import asyncio
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pyspire.catalog import (
    AGENT_KINDS,
    WORKLOAD_ATTESTORS,
    Catalog,
    Discovery,
    PlannedPlugin,
    PluginFilter,
    Side,
    installed_plugins,
    plan_plugins,
)
from pyspire_sdk.errors import ConfigError
from pyspire_sdk.plugin import HostServices, NoConfig, PluginRegistration, hookimpl
from pyspire_sdk.plugins.key_manager import HashAlgorithm, KeyType, PublicKey
from pyspire_sdk.testing import make_host_services

WORKLOAD = next(kind for kind in AGENT_KINDS if kind.toml_name == "workload_attestor")
ONLY_THE_EXAMPLE = PluginFilter.of(allow=["pyspire-workloadattestor-environ"])

AGENT_TOML = """
[agent.plugins.key_manager.scratch]
[agent.plugins.node_attestor.scratch]
[agent.plugins.workload_attestor.environ]
names = ["APP", "TIER"]
max_value_bytes = 16
"""


class _Lifecycle:
    async def configure(self, config: Any, host: HostServices) -> None:
        self.host = host

    async def close(self) -> None:
        return None


class ScratchKeyManager(_Lifecycle):
    """Holds no keys; it only completes the agent's plan."""

    async def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        raise LookupError(key_id)

    async def get_public_key(self, key_id: str) -> PublicKey:
        raise LookupError(key_id)

    async def get_public_keys(self) -> list[PublicKey]:
        return []

    async def sign_digest(
        self, key_id: str, digest: bytes, hash_algorithm: HashAlgorithm, *, rsa_pss: bool = False
    ) -> bytes:
        raise LookupError(key_id)


class ScratchNodeAttestor(_Lifecycle):
    async def attestation_payload(self) -> bytes:
        return b""

    async def answer_challenge(self, challenge: bytes) -> bytes:
        return challenge


class _ScratchPlugins:
    """In-process stand-ins for the agent's other required plugins."""

    @hookimpl
    def pyspire_key_managers(self) -> list[PluginRegistration[NoConfig, ScratchKeyManager]]:
        return [PluginRegistration(name="scratch", config_type=NoConfig, factory=ScratchKeyManager)]

    @hookimpl
    def pyspire_agent_node_attestors(
        self,
    ) -> list[PluginRegistration[NoConfig, ScratchNodeAttestor]]:
        return [
            PluginRegistration(name="scratch", config_type=NoConfig, factory=ScratchNodeAttestor)
        ]


@pytest.fixture
async def workload() -> AsyncIterator[int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; sys.stdin.read()",
        stdin=asyncio.subprocess.PIPE,
        env={"APP": "billing", "TIER": "a-value-longer-than-16-bytes"},
    )
    try:
        yield process.pid
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await process.wait()


def test_discovered_through_its_entry_point() -> None:
    discovery = Discovery.load(plugin_filter=ONLY_THE_EXAMPLE)
    plugin = discovery.get(WORKLOAD, "environ")
    assert plugin is not None
    assert (plugin.distribution, plugin.entry_point) == (
        "pyspire-workloadattestor-environ",
        "environ = pyspire_workloadattestor_environ.plugin",
    )
    rows = installed_plugins(Side.AGENT, discovery)
    assert [(row.type, row.name, row.distribution) for row in rows] == [
        ("workload_attestor", "environ", "pyspire-workloadattestor-environ")
    ]


def test_planned_from_toml_with_its_own_validation() -> None:
    discovery = Discovery.load(plugin_filter=ONLY_THE_EXAMPLE)
    document = tomllib.loads(
        """
        [agent.plugins.workload_attestor.environ]
        names = []
        max_value_bytes = "big"
        """
    )
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.AGENT, document["agent"]["plugins"], discovery)
    assert [str(issue) for issue in caught.value.issues] == [
        "agent.plugins.workload_attestor.environ.max_value_bytes: expected an integer, found "
        "string 'big'",
        "agent.plugins.key_manager: exactly one key_manager plugin is required, found 0",
        "agent.plugins.node_attestor: exactly one node_attestor plugin is required, found 0",
    ]


async def test_configured_by_the_catalog_and_attests_a_process(
    tmp_path: Path, workload: int
) -> None:
    discovery = Discovery(
        [
            *Discovery.load(plugin_filter=ONLY_THE_EXAMPLE),
            *Discovery.from_modules(_ScratchPlugins()),
        ]
    )
    document = tomllib.loads(AGENT_TOML)
    plan = plan_plugins(Side.AGENT, document["agent"]["plugins"], discovery)
    (environ,) = plan.of("workload_attestor")
    assert environ.config.names == ("APP", "TIER")

    def host_for(planned: PlannedPlugin) -> HostServices:
        return make_host_services(
            tmp_path, plugin_name=planned.name, plugin_type=planned.kind.toml_name
        )

    async with Catalog.open(plan, host_for=host_for) as catalog:
        ((name, attestor),) = ((p.name, p.instance) for p in catalog.chain(WORKLOAD_ATTESTORS))
        assert name == "environ"
        assert type(attestor).__module__ == "pyspire_workloadattestor_environ.attestor"
        assert list(await attestor.attest(workload)) == ["APP:billing"]
