"""The ``spire`` upstream authority on its own: registration, settings, README, and what it
does when the agent's Workload API cannot be reached. Minting, publishing and the bundle
against real servers and agents are in ``tests/e2e/test_nested_servers.py``."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pyspire_upstreamauthority_spire import SpireUpstreamAuthority, SpireUpstreamConfig
from pyspire_upstreamauthority_spire.plugin import pyspire_upstream_authorities

from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, InvalidArgumentError, PluginError, UnavailableError
from pyspire_sdk.plugin import ENTRY_POINT_GROUP
from pyspire_sdk.plugins.upstream_authority import UpstreamServerSession, UpstreamX509CA
from pyspire_sdk.testing import make_host_services
from pyspire_sdk.testing.upstream_authority_contract import make_ca_csr

README = Path(__file__).resolve().parent.parent / "README.md"


class NoUpstream:
    """An ``upstream_servers`` host service whose sessions must never be called: without an
    SVID from the agent the plugin has nothing to present."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []
        self.closed = 0

    def connect(self, address: str, port: int) -> UpstreamServerSession:
        self.connected.append((address, port))
        return _Session(self)


class _Session:
    def __init__(self, owner: NoUpstream) -> None:
        self.owner = owner

    def use_credentials(
        self, chain: Sequence[bytes], private_key: PrivateKeyTypes, bundle: Bundle
    ) -> None:
        raise AssertionError("no credentials can come from a missing agent")

    async def new_downstream_x509_ca(
        self, csr_der: bytes, preferred_ttl: timedelta
    ) -> UpstreamX509CA:
        raise AssertionError("called without credentials")

    async def publish_jwt_authority(self, key: JwtAuthority) -> list[JwtAuthority]:
        raise AssertionError("called without credentials")

    async def fetch_bundle(self) -> Bundle:
        raise AssertionError("called without credentials")

    async def close(self) -> None:
        self.owner.closed += 1


def settings(tmp_path: Path, **changes: object) -> dict[str, object]:
    return {
        "server_address": "127.0.0.1",
        "server_port": 8081,
        "workload_api_socket": str(tmp_path / "agent" / "api.sock"),
        **changes,
    }


def test_registered_through_the_entry_point() -> None:
    points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name="spire")
    assert "pyspire_upstreamauthority_spire.plugin" in [p.value for p in points]
    [registration] = pyspire_upstream_authorities()
    assert registration.name == "spire"
    assert registration.config_type is SpireUpstreamConfig


def test_readme_documents_the_settings() -> None:
    from pyspire_sdk.testing.readme import assert_readme_documents

    assert_readme_documents(README, SpireUpstreamConfig)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"server_address": " "}, "server_address"),
        ({"server_port": 0}, "server_port"),
        ({"server_port": 70000}, "server_port"),
        ({"workload_api_socket": "relative/api.sock"}, "workload_api_socket"),
    ],
)
async def test_bad_settings_name_their_key(
    tmp_path: Path, changes: dict[str, object], key: str
) -> None:
    config = load_config(SpireUpstreamConfig, settings(tmp_path, **changes))
    host = make_host_services(tmp_path, upstream_servers=NoUpstream())
    with pytest.raises(ConfigError) as raised:
        await SpireUpstreamAuthority().configure(config, host)
    assert [issue.path for issue in raised.value.issues] == [key]


async def test_missing_settings_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server_port"):
        load_config(SpireUpstreamConfig, {"server_address": "x", "workload_api_socket": "/s"})
    with pytest.raises(ConfigError, match="require_pq_kem"):
        load_config(SpireUpstreamConfig, settings(tmp_path, require_pq_kem=True))


async def test_needs_the_upstream_servers_host_service(tmp_path: Path) -> None:
    config = load_config(SpireUpstreamConfig, settings(tmp_path))
    with pytest.raises(PluginError, match="upstream_servers"):
        await SpireUpstreamAuthority().configure(config, make_host_services(tmp_path))


async def test_an_unreachable_agent_is_unavailable(tmp_path: Path) -> None:
    upstream = NoUpstream()
    config = load_config(SpireUpstreamConfig, settings(tmp_path))
    plugin = SpireUpstreamAuthority()
    await plugin.configure(config, make_host_services(tmp_path, upstream_servers=upstream))
    assert upstream.connected == [("127.0.0.1", 8081)]
    socket = tmp_path / "agent" / "api.sock"
    with pytest.raises(InvalidArgumentError, match="csr"):
        await plugin.mint_x509_ca(b"not a csr", timedelta(hours=1))
    _, csr = make_ca_csr(["spiffe://example.org"])
    with pytest.raises(UnavailableError, match=f"workload api at {socket}"):
        await plugin.mint_x509_ca(csr, timedelta(hours=1))
    with pytest.raises(UnavailableError, match="workload api"):
        await plugin.publish_jwt_key(JwtAuthority("k", b"x"))
    updates = plugin.subscribe_to_bundle_updates()
    with pytest.raises(UnavailableError, match="workload api"):
        await anext(updates)
    await plugin.close()
    assert upstream.closed == 1
