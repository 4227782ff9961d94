"""The connection settings SQL datastores share are checked by one set of rules."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from pyspire_sdk.sql_settings import connection_setting_issues


@dataclass(frozen=True)
class _Settings:
    connection_string: str = "postgresql://db/test"
    ro_connection_string: str | None = None
    max_open_conns: int = 4
    max_idle_conns: int = 2
    conn_max_lifetime: timedelta = timedelta(0)
    statement_timeout: timedelta = timedelta(seconds=30)
    client_cert_path: Path | None = None
    client_key_path: Path | None = None


def _issues(**changes: object) -> list[tuple[str, str]]:
    settings = replace(_Settings(), **changes)  # type: ignore[arg-type]
    return [(issue.path, issue.message) for issue in connection_setting_issues(settings)]


def test_valid_settings_have_no_issue() -> None:
    assert _issues() == []
    assert _issues(client_cert_path=Path("c.pem"), client_key_path=Path("k.pem")) == []


def test_each_broken_rule_names_its_key_and_reason() -> None:
    assert _issues(connection_string=" ") == [("connection_string", "must not be empty")]
    assert _issues(ro_connection_string="") == [
        ("ro_connection_string", "must not be empty when set")
    ]
    assert _issues(max_open_conns=0, max_idle_conns=0) == [
        ("max_open_conns", "must be at least 1, found 0")
    ]
    assert _issues(max_idle_conns=-1) == [("max_idle_conns", "must not be negative, found -1")]
    assert _issues(max_idle_conns=5) == [("max_idle_conns", "5 is more than max_open_conns 4")]
    assert _issues(conn_max_lifetime=timedelta(seconds=-1)) == [
        ("conn_max_lifetime", "must not be negative")
    ]
    assert _issues(statement_timeout=timedelta(seconds=-1)) == [
        ("statement_timeout", "must not be negative")
    ]
    ((key, message),) = _issues(client_cert_path=Path("c.pem"))
    assert key == "client_key_path"
    assert message == "is required with client_cert_path and client_key_path: set both or none"
    assert _issues(client_key_path=Path("k.pem"))[0][0] == "client_cert_path"
