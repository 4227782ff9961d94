"""Plugin modules made in memory, and fake plugin objects that record their life cycle.

The fakes implement their kind's interface for real (small, fixed answers), so the catalog's
interface check accepts them; the journal shows in which order the catalog configured and
closed them.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyspire.catalog import PlannedPlugin
from pyspire_sdk.config import setting
from pyspire_sdk.plugin import HostServices, NoConfig, PluginRegistration, hookimpl
from pyspire_sdk.plugins.key_manager import HashAlgorithm, KeyType, PublicKey
from pyspire_sdk.testing import install_distribution, make_host_services

Journal = list[str]


@dataclass(frozen=True, kw_only=True)
class LabelConfig:
    """A configuration with one required and one defaulted key, to exercise load_config."""

    label: str = setting(description="a label")
    weight: int = setting(1, description="a weight")


class Recorder:
    """Configure and close append ``<event> <name>`` to the shared journal."""

    def __init__(self, name: str, journal: Journal, *, fail_configure: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.fail_configure = fail_configure
        self.config: Any = None
        self.host: HostServices | None = None

    async def configure(self, config: Any, host: HostServices) -> None:
        self.journal.append(f"configure {self.name}")
        if self.fail_configure:
            raise RuntimeError("disk on fire")
        self.config = config
        self.host = host

    async def close(self) -> None:
        self.journal.append(f"close {self.name}")


class FakeWorkloadAttestor(Recorder):
    async def attest(self, pid: int) -> list[str]:
        return [f"pid:{pid}"]


class FakeAgentNodeAttestor(Recorder):
    async def attestation_payload(self) -> bytes:
        return b"payload"

    async def answer_challenge(self, challenge: bytes) -> bytes:
        return challenge[::-1]


class FakeKeyManager(Recorder):
    async def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        raise LookupError(f"fake key manager makes no keys, asked for {key_id}")

    async def get_public_key(self, key_id: str) -> PublicKey:
        raise LookupError(f"fake key manager holds no key {key_id}")

    async def get_public_keys(self) -> list[PublicKey]:
        return []

    async def sign_digest(
        self,
        key_id: str,
        digest: bytes,
        hash_algorithm: HashAlgorithm,
        *,
        rsa_pss: bool = False,
    ) -> bytes:
        raise LookupError(f"fake key manager holds no key {key_id}")


def make_module(name: str, **hooks: Callable[[], object]) -> types.ModuleType:
    """A plugin module called ``name`` whose hooks return what the given callables return."""
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def registration(
    name: str, factory: Callable[[], object], config_type: type = NoConfig, description: str = ""
) -> PluginRegistration[Any, Any]:
    return PluginRegistration(
        name=name, config_type=config_type, factory=factory, description=description
    )


@pytest.fixture
def journal() -> Journal:
    return []


@pytest.fixture
def host_for(tmp_path: Path) -> Callable[[PlannedPlugin], HostServices]:
    def build(planned: PlannedPlugin) -> HostServices:
        return make_host_services(
            tmp_path, plugin_name=planned.name, plugin_type=planned.kind.toml_name
        )

    return build


@pytest.fixture
def agent_modules(journal: Journal) -> list[types.ModuleType]:
    """Distributions for a complete agent: a key manager, a node attestor and four workload
    attestors (one of which fails to configure)."""
    return [
        make_module(
            "dist-keys",
            pyspire_key_managers=lambda: [
                registration("memory", lambda: FakeKeyManager("memory", journal))
            ],
        ),
        make_module(
            "dist-node",
            pyspire_agent_node_attestors=lambda: [
                registration("join_token", lambda: FakeAgentNodeAttestor("join_token", journal))
            ],
        ),
        make_module(
            "dist-workload",
            pyspire_workload_attestors=lambda: (
                [
                    registration(
                        name,
                        functools.partial(FakeWorkloadAttestor, name, journal),
                        config_type=LabelConfig,
                    )
                    for name in ("alpha", "bravo", "charlie")
                ]
                + [
                    registration(
                        "broken",
                        lambda: FakeWorkloadAttestor("broken", journal, fail_configure=True),
                    )
                ]
            ),
        ),
    ]


@pytest.fixture
def site(plugin_site: Path) -> Path:
    """A directory on ``sys.path`` where tests install distributions (the SDK's fixture)."""
    return plugin_site


@pytest.fixture
def install(site: Path) -> Callable[..., None]:
    def run(
        name: str,
        entry_points: dict[str, str],
        modules: dict[str, str],
        version: str = "1.0",
    ) -> None:
        install_distribution(site, name, entry_points, modules=modules, version=version)

    return run


@pytest.fixture
def fakes() -> types.ModuleType:
    """This module: fake plugins and helpers for building plugin modules."""
    return sys.modules[__name__]
