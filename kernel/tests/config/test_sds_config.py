"""The ``[agent.sds]`` settings: SPIRE's keys and defaults, their errors and its warning."""

from __future__ import annotations

from typing import Any

import pytest

from pyspire.config import AgentConfig
from pyspire.config.sds import SdsConfig
from pyspire_sdk.config import describe_config, load_config
from pyspire_sdk.errors import ConfigError

MINIMAL = {
    "trust_domain": "example.org",
    "server_address": "spire.example.org",
    "server_port": 8081,
    "trust_bundle_path": "/etc/pyspire/bundle.pem",
}


def load(**sds: Any) -> AgentConfig:
    return load_config(AgentConfig, {**MINIMAL, "sds": sds}, path="agent")


def test_defaults_are_spires() -> None:
    config = load_config(AgentConfig, MINIMAL, path="agent")
    assert config.sds == SdsConfig()
    assert (
        config.sds.default_svid_name,
        config.sds.default_bundle_name,
        config.sds.default_all_bundles_name,
        config.sds.disable_spiffe_cert_validation,
    ) == ("default", "ROOTCA", "ALL", False)
    assert config.warnings() == []


def test_every_key_loads() -> None:
    config = load(
        default_svid_name="svid",
        default_bundle_name="ca",
        default_all_bundles_name="all-cas",
        disable_spiffe_cert_validation=True,
    )
    assert config.sds == SdsConfig(
        default_svid_name="svid",
        default_bundle_name="ca",
        default_all_bundles_name="all-cas",
        disable_spiffe_cert_validation=True,
    )
    keys = {row.key for row in describe_config(AgentConfig)}
    assert {
        "sds.default_svid_name",
        "sds.default_bundle_name",
        "sds.default_all_bundles_name",
        "sds.disable_spiffe_cert_validation",
    } <= keys


def test_bad_values_name_their_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load(default_svid_name=" ", default_bundle_name="a\nb", unknown=1)
    found = {issue.path: issue.message for issue in caught.value.issues}
    assert "agent.sds.unknown" in found
    with pytest.raises(ConfigError) as caught:
        load(default_svid_name=" ", default_bundle_name="a\nb")
    found = {issue.path: issue.message for issue in caught.value.issues}
    assert found == {
        "agent.sds.default_svid_name": "must not be empty",
        "agent.sds.default_bundle_name": "must not hold control characters",
    }


def test_equal_bundle_names_warn_as_spire_does() -> None:
    config = load(default_bundle_name="ALL")
    [warning] = config.warnings()
    assert warning.path == "sds.default_all_bundles_name"
    assert "equals default_bundle_name" in warning.message
