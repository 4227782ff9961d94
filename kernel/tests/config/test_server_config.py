"""The ``[server]`` settings: SPIRE's defaults, every error path, cross-field rules."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pyspire.config import CaSubject, KeyType, ServerConfig, load_document
from pyspire.config.document import SERVER_SCHEMA
from pyspire_sdk.config import describe_config, load_config
from pyspire_sdk.errors import ConfigError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

MINIMAL = {"trust_domain": "example.org", "data_dir": "/var/lib/pyspire/server"}


def load(**table: Any) -> ServerConfig:
    return load_config(ServerConfig, {**MINIMAL, **table}, path="server")


def issues(**table: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(ServerConfig, table, path="server")
    return {issue.path: issue.message for issue in caught.value.issues}


def test_defaults_match_spire() -> None:
    config = load()
    assert config.trust_domain == TrustDomain("example.org")
    assert config.data_dir == Path("/var/lib/pyspire/server")
    assert config.bind_address == "0.0.0.0"  # noqa: S104 - SPIRE's default
    assert config.bind_port == 8081
    assert config.socket_path == Path("/tmp/pyspire-server/private/api.sock")
    assert config.log_level == "INFO"
    assert config.log_format == "text"
    assert config.log_file is None
    assert config.ca_key_type is KeyType.EC_P256
    assert config.jwt_key_type is None
    assert config.effective_jwt_key_type is KeyType.EC_P256
    assert config.ca_ttl == timedelta(hours=24)
    assert config.ca_subject == CaSubject(country=("US",), organization=("SPIFFE",), common_name="")
    assert config.default_x509_svid_ttl == timedelta(hours=1)
    assert config.default_jwt_svid_ttl == timedelta(minutes=5)
    assert config.agent_ttl is None
    assert config.effective_agent_ttl == timedelta(hours=1)
    assert config.jwt_issuer is None
    assert config.admin_ids == ()
    assert config.audit_log_enabled is False
    assert config.signing_processes == 0
    assert config.reuse_port is False
    assert config.warnings() == []


def test_every_key_is_documented() -> None:
    rows = describe_config(ServerConfig)
    assert {row.key for row in rows} >= {"trust_domain", "data_dir", "ca_ttl", "ca_subject"}
    for row in rows:
        assert row.description, f"{row.key} has no description"
    required = {row.key for row in rows if row.required}
    # A table left out is not required; a Prometheus table given must name its port.
    assert required == {
        "trust_domain",
        "data_dir",
        "telemetry.Prometheus.port",
        "federation.bundle_endpoint.profile.https_web.serving_cert_file",
        "federation.bundle_endpoint.profile.https_web.serving_cert_file.cert_file_path",
        "federation.bundle_endpoint.profile.https_web.serving_cert_file.key_file_path",
        "federation.federates_with.<name>.bundle_endpoint_url",
        "federation.federates_with.<name>.bundle_endpoint_profile",
        "federation.federates_with.<name>.bundle_endpoint_profile.https_spiffe.endpoint_spiffe_id",
    }


def test_full_settings_parse() -> None:
    config = load(
        bind_address="127.0.0.1",
        bind_port=0,
        ca_key_type="rsa-2048",
        jwt_key_type="ec-p384",
        ca_ttl="48h",
        ca_subject={"country": ["DE"], "organization": ["Acme"], "common_name": "acme ca"},
        default_x509_svid_ttl="2h",
        default_jwt_svid_ttl="10m",
        agent_ttl="4h",
        jwt_issuer="https://oidc.example.org",
        admin_ids=["spiffe://example.org/admin", "spiffe://other.org/ops"],
        audit_log_enabled=True,
        log_level="debug",
        log_format="JSON",
        log_file="/var/log/pyspire/server.log",
    )
    assert config.ca_key_type is KeyType.RSA_2048
    assert config.effective_jwt_key_type is KeyType.EC_P384
    assert config.ca_subject.organization == ("Acme",)
    assert config.effective_agent_ttl == timedelta(hours=4)
    assert config.admin_ids == (
        SpiffeId.parse("spiffe://example.org/admin"),
        SpiffeId.parse("spiffe://other.org/ops"),
    )
    assert config.log_file == Path("/var/log/pyspire/server.log")


def test_missing_required_keys_are_all_reported() -> None:
    found = issues()
    assert set(found) == {"server.trust_domain", "server.data_dir"}
    assert "required key is missing" in found["server.trust_domain"]


def test_unknown_key_is_named_with_the_known_ones() -> None:
    found = issues(**MINIMAL, bind_prot=8081)
    assert "unknown key" in found["server.bind_prot"]
    assert "bind_port" in found["server.bind_prot"]


def test_wrong_types_are_all_reported_with_their_paths() -> None:
    found = issues(
        **MINIMAL,
        bind_port="8081",
        ca_ttl="a day",
        audit_log_enabled="yes",
        ca_key_type="ec-p521",
        ca_subject={"country": "US"},
    )
    assert set(found) == {
        "server.bind_port",
        "server.ca_ttl",
        "server.audit_log_enabled",
        "server.ca_key_type",
        "server.ca_subject.country",
    }
    assert found["server.bind_port"] == "expected an integer, found string '8081'"
    assert "ec-p256" in found["server.ca_key_type"]


def test_trust_domain_longer_than_255_bytes_is_rejected() -> None:
    found = issues(trust_domain="a" * 256, data_dir="/data")
    assert list(found) == ["server.trust_domain"]


def test_trust_domain_must_be_a_valid_name() -> None:
    found = issues(trust_domain="Example.org", data_dir="/data")
    assert list(found) == ["server.trust_domain"]
    assert "trust domain" in found["server.trust_domain"]


def test_svid_ttl_longer_than_ca_ttl_is_an_error() -> None:
    found = issues(
        **MINIMAL,
        ca_ttl="2h",
        default_x509_svid_ttl="3h",
        default_jwt_svid_ttl="5m",
        agent_ttl="1d",
    )
    assert found == {
        "server.default_x509_svid_ttl": "3h is longer than ca_ttl (2h)",
        "server.agent_ttl": "1d is longer than ca_ttl (2h)",
    }


def test_svid_ttl_above_a_sixth_of_ca_ttl_is_only_a_warning() -> None:
    config = load(ca_ttl="6h", default_x509_svid_ttl="2h")
    warnings = config.warnings()
    assert [warning.path for warning in warnings] == ["default_x509_svid_ttl"]
    assert "longer than 1h" in warnings[0].message


def test_warning_cap_is_seven_days_for_long_ca_ttls() -> None:
    config = load(ca_ttl="90d", default_x509_svid_ttl="8d")
    assert [warning.path for warning in config.warnings()] == ["default_x509_svid_ttl"]
    assert load(ca_ttl="90d", default_x509_svid_ttl="7d").warnings() == []


def test_zero_durations_are_rejected() -> None:
    found = issues(**MINIMAL, ca_ttl="0s", default_jwt_svid_ttl=0)
    assert found["server.ca_ttl"] == "must be greater than zero"
    assert found["server.default_jwt_svid_ttl"] == "must be greater than zero"


@pytest.mark.parametrize("processes", [-1, 65])
def test_signing_processes_out_of_range(processes: int) -> None:
    assert issues(**MINIMAL, signing_processes=processes) == {
        "server.signing_processes": f"must be between 0 and 64, found {processes}"
    }
    assert load(signing_processes=2).signing_processes == 2


def test_reuse_port_shares_a_fixed_port() -> None:
    assert load(reuse_port=True, bind_port=8081).reuse_port is True
    assert issues(**MINIMAL, reuse_port=True, bind_port=0) == {
        "server.reuse_port": "needs a fixed bind_port, found 0"
    }


def test_reuse_port_is_refused_without_so_reuseport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT", raising=False)
    assert issues(**MINIMAL, reuse_port=True) == {
        "server.reuse_port": "this platform has no SO_REUSEPORT"
    }
    assert load(reuse_port=False).reuse_port is False


@pytest.mark.parametrize("port", [-1, 65536])
def test_bind_port_out_of_range(port: int) -> None:
    assert issues(**MINIMAL, bind_port=port) == {
        "server.bind_port": f"must be between 0 and 65535, found {port}"
    }


def test_socket_path_too_long_for_a_unix_socket() -> None:
    found = issues(**MINIMAL, socket_path="/tmp/" + "s" * 120 + ".sock")
    assert "longer than the 107" in found["server.socket_path"]


@pytest.mark.parametrize("level", ["debug", "Info", "WARN", "warning", "error"])
def test_log_levels_are_case_insensitive(level: str) -> None:
    assert load(log_level=level).log_level == level


def test_log_level_and_format_names_are_checked() -> None:
    found = issues(**MINIMAL, log_level="verbose", log_format="xml")
    assert "DEBUG, INFO, WARN" in found["server.log_level"]
    assert "'text', 'json', 'auto'" in found["server.log_format"]


def test_jwt_issuer_must_be_a_url() -> None:
    found = issues(**MINIMAL, jwt_issuer="example.org")
    assert "expected a URL" in found["server.jwt_issuer"]


def test_ca_subject_country_codes_are_checked() -> None:
    found = issues(**MINIMAL, ca_subject={"country": ["US", "USA"], "organization": [""]})
    assert set(found) == {"server.ca_subject.country[1]", "server.ca_subject.organization[0]"}


def test_admin_ids_must_be_spiffe_ids() -> None:
    found = issues(**MINIMAL, admin_ids=["spiffe://example.org/admin", "admin"])
    assert list(found) == ["server.admin_ids[1]"]


def test_loaded_document_carries_warnings_with_full_paths() -> None:
    document = {"server": {**MINIMAL, "ca_ttl": "6h", "default_x509_svid_ttl": "2h"}}
    loaded = load_document(SERVER_SCHEMA, document)
    assert [str(warning.path) for warning in loaded.warnings] == ["server.default_x509_svid_ttl"]
