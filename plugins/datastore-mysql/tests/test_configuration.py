"""Configuration, connection strings and the secrets in them, TLS contexts; registration with
pyspire."""

from __future__ import annotations

import ssl
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path

import pluggy
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql import plugin as plugin_module
from pyspire_datastore_mysql.connection import ConnectionTarget, TlsFiles, TlsMode

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, PROJECT_NAME
from pyspire_sdk.plugins import datastore as datastore_spec
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.pki import TestAuthority
from pyspire_sdk.testing.readme import assert_readme_documents


def test_config_loads_from_toml_values(tmp_path: Path) -> None:
    config = load_config(
        MysqlDataStoreConfig,
        {
            "connection_string": "spire:pw@tcp(db:3306)/spire",
            "ro_connection_string": "spire:pw@tcp(replica:3306)/spire",
            "max_open_conns": 8,
            "max_idle_conns": 3,
            "conn_max_lifetime": "1h",
            "statement_timeout": "5s",
            "root_ca_path": str(tmp_path / "ca.pem"),
            "disable_migration": True,
            "events_poll_interval": "250ms",
        },
    )
    assert config.max_open_conns == 8
    assert config.conn_max_lifetime == timedelta(hours=1)
    assert config.statement_timeout == timedelta(seconds=5)
    assert config.root_ca_path == tmp_path / "ca.pem"
    assert config.disable_migration
    assert config.events_poll_interval == timedelta(milliseconds=250)


def test_config_reports_every_problem_and_hides_the_connection_string() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(
            MysqlDataStoreConfig,
            {
                "connection_string": "u:hunter2@tcp(h)/db",
                "max_open_conns": 2,
                "max_idle_conns": 3,
                "client_cert_path": "/c.pem",
                "events_poll_interval": "0s",
            },
            path="ds",
        )
    assert sorted(issue.path for issue in raised.value.issues) == [
        "ds.client_key_path",
        "ds.events_poll_interval",
        "ds.max_idle_conns",
    ]
    assert "hunter2" not in str(raised.value)
    config = load_config(MysqlDataStoreConfig, {"connection_string": "u:pw@tcp(h)/db"})
    assert "pw@" not in repr(config)


def test_readme_documents_every_setting() -> None:
    assert_readme_documents(Path(__file__).parent.parent / "README.md", MysqlDataStoreConfig)


def test_registers_through_the_entry_point() -> None:
    names = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert names.get("mysql") == "pyspire_datastore_mysql.plugin"
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(datastore_spec)
    manager.register(plugin_module)
    registrations = [r for group in manager.hook.pyspire_datastores() for r in group]
    assert [r.name for r in registrations] == ["mysql"]
    assert registrations[0].config_type is MysqlDataStoreConfig
    assert isinstance(registrations[0].factory(), MysqlDataStore)


def test_spire_connection_strings_are_read_and_hide_their_password() -> None:
    target = ConnectionTarget.parse(
        "connection_string", "spire:s3cr:et@tcp(db.example.org:3307)/spire?parseTime=true"
    )
    assert (target.user, target.password, target.host, target.port, target.database) == (
        "spire",
        "s3cr:et",
        "db.example.org",
        3307,
        "spire",
    )
    assert target.shown == "spire:***@tcp(db.example.org:3307)/spire?parseTime=true"
    assert "s3cr" not in repr(target)
    assert target.scrub("access denied for s3cr:et") == "access denied for ***"
    socket = ConnectionTarget.parse("connection_string", "root@unix(/run/mysqld/mysqld.sock)/db")
    assert socket.unix_socket == "/run/mysqld/mysqld.sock"
    assert socket.password == ""
    default = ConnectionTarget.parse("connection_string", "root@tcp(db)/spire?timeout=2500ms")
    assert (default.host, default.port, default.connect_timeout) == ("db", 3306, 2.5)


def test_uri_connection_strings_are_read_and_hide_their_password() -> None:
    target = ConnectionTarget.parse(
        "ro_connection_string", "mysql://alice:p%40ss@replica:3306/spire?tls=skip-verify"
    )
    assert (target.user, target.password, target.host, target.database) == (
        "alice",
        "p@ss",
        "replica",
        "spire",
    )
    assert target.tls is TlsMode.SKIP_VERIFY
    assert target.shown == "mysql://alice:***@replica:3306/spire?tls=skip-verify"
    assert target.scrub("p@ss and p%40ss") == "*** and ***"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("spire:pw@tcp(db:3306)/", "names no database"),
        ("spire:pw@tcp(db:99999)/spire", "port '99999'"),
        ("spire:pw@tcp(db)/spire?tls=maybe", "tls='maybe'"),
        ("spire:pw@tcp(db)/spire?timeout=soon", "timeout 'soon'"),
        ("spire:pw@tcp(db)/spire?allowAllFiles=true", "'allowAllFiles' is not supported"),
        ("postgresql://u:pw@db/spire", "not mysql:// or mariadb://"),
        ("just words", "expected user:password@tcp"),
    ],
)
def test_bad_connection_strings_name_the_key_and_reason(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ConnectionTarget.parse("connection_string", text)
    (issue,) = raised.value.issues
    assert issue.path == "connection_string"
    assert reason in issue.message
    assert "pw" not in issue.message


def test_tls_contexts_follow_the_settings(tmp_path: Path) -> None:
    authority = TestAuthority(TrustDomain("example.org"))
    ca = tmp_path / "ca.pem"
    ca.write_bytes(authority.certificate.public_bytes(serialization.Encoding.PEM))
    svid = authority.issue(SpiffeId.parse("spiffe://example.org/pyspire-server"))
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
    cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        serialization.load_der_private_key(svid.private_key, None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    plain = ConnectionTarget.parse("connection_string", "u@tcp(db)/spire")
    assert plain.ssl_context(TlsFiles()) is None

    verified = plain.ssl_context(TlsFiles(root_ca=ca, client_cert=cert, client_key=key))
    assert verified is not None
    assert verified.verify_mode is ssl.CERT_REQUIRED and verified.check_hostname
    assert [c["subject"] for c in verified.get_ca_certs()] == [
        ((("organizationName", "SPIFFE"),), (("commonName", "example.org"),))
    ]

    system = ConnectionTarget.parse("connection_string", "u@tcp(db)/spire?tls=true")
    context = system.ssl_context(TlsFiles())
    assert context is not None and context.verify_mode is ssl.CERT_REQUIRED

    unverified = ConnectionTarget.parse("connection_string", "u@tcp(db)/spire?tls=skip-verify")
    context = unverified.ssl_context(TlsFiles())
    assert context is not None and context.verify_mode is ssl.CERT_NONE

    with pytest.raises(ConfigError, match="root_ca_path"):
        plain.ssl_context(TlsFiles(root_ca=tmp_path / "absent.pem"))
    with pytest.raises(ConfigError, match="client_cert_path"):
        plain.ssl_context(TlsFiles(root_ca=ca, client_cert=cert, client_key=ca))


def test_registering_does_not_load_the_driver() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_datastore_mysql.plugin as p; p.pyspire_datastores()"
    )
    assert "pyspire_datastore_mysql" in loaded
    assert "asyncmy" not in loaded
