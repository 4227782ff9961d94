"""The ``[agent]`` settings: SPIRE's defaults, bootstrap exclusivity, every error path."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pyspire.config import AgentConfig, KeyType
from pyspire_sdk.config import describe_config, load_config
from pyspire_sdk.errors import ConfigError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.readme import assert_readme_documents

MINIMAL = {
    "trust_domain": "example.org",
    "server_address": "spire.example.org",
    "server_port": 8081,
    "trust_bundle_path": "/etc/pyspire/bundle.pem",
}


def load(**table: Any) -> AgentConfig:
    return load_config(AgentConfig, {**MINIMAL, **table}, path="agent")


def issues(table: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(AgentConfig, table, path="agent")
    return {issue.path: issue.message for issue in caught.value.issues}


def without(*keys: str, **extra: Any) -> dict[str, Any]:
    table = {key: value for key, value in MINIMAL.items() if key not in keys}
    return {**table, **extra}


def test_defaults_match_spire() -> None:
    config = load()
    assert config.trust_domain == TrustDomain("example.org")
    assert config.server_address == "spire.example.org"
    assert config.server_port == 8081
    assert config.data_dir == Path(".")
    assert config.socket_path == Path("/tmp/pyspire-agent/public/api.sock")
    assert config.admin_socket_path is None
    assert config.trust_bundle_path == Path("/etc/pyspire/bundle.pem")
    assert config.trust_bundle_url is None
    assert config.trust_bundle_format == "pem"
    assert config.insecure_bootstrap is False
    assert config.join_token is None
    assert config.sync_interval == timedelta(seconds=5)
    assert config.workload_x509_svid_key_type is KeyType.EC_P256
    assert config.x509_svid_cache_max_size == 1000
    assert (config.log_level, config.log_format, config.log_file) == ("INFO", "text", None)
    assert config.warnings() == []


def test_every_key_is_documented_and_required_keys_are_spires() -> None:
    rows = describe_config(AgentConfig)
    for row in rows:
        assert row.description, f"{row.key} has no description"
    assert {row.key for row in rows if row.required} == {
        "trust_domain",
        "server_address",
        "server_port",
        "telemetry.Prometheus.port",  # only when the (optional) table is given
    }


def test_missing_required_keys_are_all_reported() -> None:
    found = issues({"insecure_bootstrap": True})
    assert set(found) == {"agent.trust_domain", "agent.server_address", "agent.server_port"}


def test_no_bootstrap_way_is_an_issue_naming_the_keys() -> None:
    found = issues(without("trust_bundle_path"))
    assert found == {
        "agent": "exactly one of trust_bundle_path, trust_bundle_url, insecure_bootstrap "
        "must be set, found none"
    }


def test_two_bootstrap_ways_are_an_issue_naming_them() -> None:
    found = issues(without(insecure_bootstrap=True))
    assert found == {
        "agent": "exactly one of trust_bundle_path, trust_bundle_url, insecure_bootstrap "
        "must be set, found trust_bundle_path and insecure_bootstrap"
    }


@pytest.mark.parametrize(
    ("extra", "chosen"),
    [
        ({"trust_bundle_path": "/b.pem"}, ["trust_bundle_path"]),
        ({"trust_bundle_url": "https://example.org/bundle"}, ["trust_bundle_url"]),
        ({"insecure_bootstrap": True}, ["insecure_bootstrap"]),
    ],
)
def test_each_bootstrap_way_alone_is_accepted(extra: dict[str, Any], chosen: list[str]) -> None:
    config = load_config(AgentConfig, without("trust_bundle_path", **extra), path="agent")
    assert config.bootstrap_keys_set() == chosen


def test_insecure_bootstrap_draws_a_warning() -> None:
    config = load_config(AgentConfig, without("trust_bundle_path", insecure_bootstrap=True))
    assert [warning.path for warning in config.warnings()] == ["insecure_bootstrap"]


def test_trust_bundle_url_must_be_https() -> None:
    found = issues(without("trust_bundle_path", trust_bundle_url="http://example.org/b"))
    assert found == {
        "agent.trust_bundle_url": "expected an https URL, found 'http://example.org/b'"
    }


def test_trust_bundle_format_is_pem_or_spiffe() -> None:
    assert load(trust_bundle_format="spiffe").trust_bundle_format == "spiffe"
    found = issues(without(trust_bundle_format="jwks"))
    assert "'pem', 'spiffe'" in found["agent.trust_bundle_format"]


def test_join_token_value_never_appears_in_an_error() -> None:
    found = issues(without(join_token=123456))
    assert "123456" not in found["agent.join_token"]
    assert load(join_token="abc").join_token == "abc"
    assert "abc" not in repr(load(join_token="abc"))


def test_server_port_must_be_a_real_port() -> None:
    assert issues(without(server_port=0)) == {
        "agent.server_port": "must be between 1 and 65535, found 0"
    }


def test_server_address_is_a_host_not_a_url() -> None:
    found = issues(without(server_address="https://spire.example.org"))
    assert "without scheme" in found["agent.server_address"]


def test_admin_socket_must_live_outside_the_workload_socket_directory() -> None:
    found = issues(
        without(
            socket_path="/run/agent/public/api.sock", admin_socket_path="/run/agent/public/x/a.sock"
        )
    )
    assert list(found) == ["agent.admin_socket_path"]
    config = load(
        socket_path="/run/agent/public/api.sock", admin_socket_path="/run/agent/private/a.sock"
    )
    assert config.admin_socket_path == Path("/run/agent/private/a.sock")


def test_sizes_and_intervals_are_checked() -> None:
    found = issues(without(x509_svid_cache_max_size=0, sync_interval="0s", log_level="trace"))
    assert set(found) == {
        "agent.x509_svid_cache_max_size",
        "agent.sync_interval",
        "agent.log_level",
    }


# -- authorized_delegates (the Delegated Identity API) ---------------------------------------


def test_authorized_delegates_are_spiffe_ids_of_the_trust_domain() -> None:
    config = load(
        admin_socket_path="/run/agent/private/a.sock",
        authorized_delegates=["spiffe://example.org/envoy", "spiffe://example.org/cilium"],
    )
    assert config.authorized_delegates == (
        SpiffeId.parse("spiffe://example.org/envoy"),
        SpiffeId.parse("spiffe://example.org/cilium"),
    )
    assert config.warnings() == []
    assert load().authorized_delegates == ()


def test_an_authorized_delegate_that_is_not_a_spiffe_id_is_named() -> None:
    found = issues(without(authorized_delegates=["spiffe://example.org/ok", "envoy"]))
    assert list(found) == ["agent.authorized_delegates[1]"]
    assert "SPIFFE ID" in found["agent.authorized_delegates[1]"]
    found = issues(without(authorized_delegates="spiffe://example.org/envoy"))
    assert list(found) == ["agent.authorized_delegates"]


def test_authorized_delegates_must_be_workloads_of_our_trust_domain_listed_once() -> None:
    found = issues(
        without(
            authorized_delegates=[
                "spiffe://other.org/envoy",
                "spiffe://example.org",
                "spiffe://example.org/envoy",
                "spiffe://example.org/envoy",
            ]
        )
    )
    assert found == {
        "agent.authorized_delegates[0]": "spiffe://other.org/envoy is not a member of the "
        "trust domain 'example.org'",
        "agent.authorized_delegates[1]": "spiffe://example.org names a trust domain, not a "
        "workload",
        "agent.authorized_delegates[3]": "spiffe://example.org/envoy is listed more than once",
    }


def test_authorized_delegates_without_an_admin_socket_draw_a_warning() -> None:
    config = load(authorized_delegates=["spiffe://example.org/envoy"])
    assert [(w.path, w.message) for w in config.warnings()] == [
        (
            "authorized_delegates",
            "no admin_socket_path is set, so the Delegated Identity API is not served",
        )
    ]


def test_the_readme_lists_every_agent_setting() -> None:
    assert_readme_documents(Path(__file__).resolve().parents[3] / "README.md", AgentConfig)
