"""Configuration, connection strings and the secrets in them; registration with pyspire."""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path

import pluggy
import pytest
from pyspire_datastore_postgres import PostgresDataStore, PostgresDataStoreConfig
from pyspire_datastore_postgres import plugin as plugin_module
from pyspire_datastore_postgres.connection import ConnectionTarget

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, PROJECT_NAME
from pyspire_sdk.plugins import datastore as datastore_spec
from pyspire_sdk.testing.readme import assert_readme_documents


def test_config_loads_from_toml_values(tmp_path: Path) -> None:
    config = load_config(
        PostgresDataStoreConfig,
        {
            "connection_string": "postgresql://u@h/db",
            "max_open_conns": 8,
            "max_idle_conns": 3,
            "conn_max_lifetime": "1h",
            "statement_timeout": "5s",
            "root_ca_path": str(tmp_path / "ca.pem"),
            "disable_migration": True,
        },
    )
    assert config.max_open_conns == 8
    assert config.conn_max_lifetime == timedelta(hours=1)
    assert config.statement_timeout == timedelta(seconds=5)
    assert config.root_ca_path == tmp_path / "ca.pem"
    assert config.disable_migration


def test_config_reports_every_problem_and_hides_the_connection_string() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(
            PostgresDataStoreConfig,
            {
                "connection_string": 5,
                "max_open_conns": 0,
                "client_cert_path": "/c.pem",
                "bogus": 1,
            },
            path="server.plugins.datastore.postgres",
        )
    paths = {issue.path for issue in raised.value.issues}
    assert "server.plugins.datastore.postgres.connection_string" in paths
    assert "server.plugins.datastore.postgres.bogus" in paths
    with pytest.raises(ConfigError) as raised:
        load_config(
            PostgresDataStoreConfig,
            {
                "connection_string": "postgresql://u:hunter2@h/db",
                "max_open_conns": 2,
                "max_idle_conns": 3,
                "client_cert_path": "/c.pem",
            },
            path="ds",
        )
    assert sorted(issue.path for issue in raised.value.issues) == [
        "ds.client_key_path",
        "ds.max_idle_conns",
    ]
    assert "hunter2" not in str(raised.value)
    config = load_config(PostgresDataStoreConfig, {"connection_string": "postgresql://u:pw@h/db"})
    assert "pw@" not in repr(config)


def test_readme_documents_every_setting() -> None:
    assert_readme_documents(Path(__file__).parent.parent / "README.md", PostgresDataStoreConfig)


def test_registers_through_the_entry_point() -> None:
    names = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert names.get("postgres") == "pyspire_datastore_postgres.plugin"
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(datastore_spec)
    manager.register(plugin_module)
    registrations = [r for group in manager.hook.pyspire_datastores() for r in group]
    assert [r.name for r in registrations] == ["postgres"]
    assert registrations[0].config_type is PostgresDataStoreConfig
    assert isinstance(registrations[0].factory(), PostgresDataStore)


def test_a_uri_keeps_its_parts_and_hides_its_password() -> None:
    target = ConnectionTarget.parse(
        "connection_string", "postgresql://alice:s%40cret@db:5432/spire?sslmode=require"
    )
    assert target.uri == "postgresql://alice:s%40cret@db:5432/spire?sslmode=require"
    assert target.shown == "postgresql://alice:***@db:5432/spire?sslmode=require"
    assert target.scrub("failed for s@cret and s%40cret") == "failed for *** and ***"
    assert "cret" not in repr(target)


def test_key_value_pairs_become_a_uri() -> None:
    target = ConnectionTarget.parse(
        "connection_string",
        "host=db port = 5433 dbname=spire user=bob password='it\\'s a secret' "
        "options='-c search_path=pyspire'",
    )
    assert target.secrets == ("it's a secret",)
    assert target.uri == (
        "postgresql:///spire?host=db&port=5433&user=bob"
        "&password=it%27s%20a%20secret&options=-c%20search_path%3Dpyspire"
    )
    assert "secret" not in target.shown
    assert "password=***" in target.shown
    assert target.scrub("bad password it's a secret") == "bad password ***"


def test_tls_files_are_added_once(tmp_path: Path) -> None:
    target = ConnectionTarget.parse(
        "connection_string",
        "postgresql://u@db/spire",
        root_ca=tmp_path / "ca.pem",
        client_cert=tmp_path / "c.pem",
        client_key=tmp_path / "k.pem",
    )
    assert "sslmode=verify-full" in target.uri
    assert f"sslrootcert={tmp_path}/ca.pem".replace("/", "%2F") in target.uri
    with pytest.raises(ConfigError, match="sslrootcert"):
        ConnectionTarget.parse(
            "connection_string", "postgresql://u@db/spire?sslrootcert=/x", root_ca=tmp_path
        )
    with pytest.raises(ConfigError, match="connection_string"):
        ConnectionTarget.parse("connection_string", "mysql://u@db/spire")
    with pytest.raises(ConfigError, match="ro_connection_string"):
        ConnectionTarget.parse("ro_connection_string", "host=db password='unterminated")
