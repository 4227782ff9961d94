"""TLS settings reach the connection. The local test server does not speak TLS (enabling it
would mean changing the shared server's configuration), so these tests show that a
configuration asking for TLS is refused by it, with the key named and no secret shown; the
contexts built from the settings are checked in ``test_configuration.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.connection import ConnectionTarget
from pyspire_datastore_mysql.session import fetch, open_connection

from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.pki import TestAuthority

pytestmark = pytest.mark.mysql


async def _configure(host_services: HostServices, **settings: object) -> None:
    store = MysqlDataStore()
    try:
        await store.configure(
            MysqlDataStoreConfig(max_open_conns=1, max_idle_conns=1, **settings),  # type: ignore[arg-type]
            host_services,
        )
    finally:
        await store.close()


@pytest.fixture
async def plain_server(mysql_dsn: str) -> str:
    target = ConnectionTarget.parse("connection_string", mysql_dsn)
    connection = await open_connection(target, None, statement_timeout=0.0, read_only=False)
    try:
        (row,) = await fetch(connection, "SHOW VARIABLES LIKE 'have_ssl'")
    finally:
        connection.close()
    if row[1] == "YES":
        pytest.skip("the test server speaks TLS; these tests need one that does not")
    return mysql_dsn


@pytest.mark.parametrize("mode", ["true", "skip-verify"])
async def test_tls_is_enforced_when_asked(
    plain_server: str, host_services: HostServices, mode: str
) -> None:
    dsn = plain_server.replace("root@", "root:pw-secret@")
    with pytest.raises(PluginError) as raised:
        await _configure(host_services, connection_string=f"{dsn}?tls={mode}")
    message = str(raised.value)
    assert "connection_string" in message and "cannot connect" in message
    assert "pw-secret" not in message


async def test_a_root_ca_makes_the_connection_verify_the_server(
    plain_server: str, host_services: HostServices, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    authority = TestAuthority(TrustDomain("db.example.org"))
    ca.write_bytes(authority.certificate.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(PluginError) as raised:
        await _configure(host_services, connection_string=plain_server, root_ca_path=ca)
    assert "connection_string" in str(raised.value)
