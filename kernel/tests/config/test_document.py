"""Reading configuration files: TOML errors with positions, env expansion, layout, overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyspire.config import (
    AGENT_SCHEMA,
    SERVER_SCHEMA,
    expand_env_vars,
    load_agent_config,
    load_server_config,
    plugins_table,
    read_document,
)
from pyspire_sdk.errors import ConfigError, ConfigIssue

SERVER_TOML = """\
[server]
trust_domain = "example.org"
data_dir = "/var/lib/pyspire/server"

[server.plugins.notifier.second]
[server.plugins.datastore.sqlite]
database_path = "/var/lib/pyspire/server/datastore.sqlite3"
[server.plugins.notifier.first]
"""

AGENT_TOML = """\
[agent]
trust_domain = "example.org"
server_address = "127.0.0.1"
server_port = 8081
insecure_bootstrap = true

[agent.plugins.workload_attestor.unix]
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def issues_of(error: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(issue) for issue in error.value.issues]


def test_server_file_loads_with_its_plugins_in_document_order(tmp_path: Path) -> None:
    path = write(tmp_path, SERVER_TOML)
    loaded = load_server_config(path)
    assert str(loaded.settings.trust_domain) == "example.org"
    assert loaded.source == path
    assert list(loaded.plugins) == ["notifier", "datastore"]
    assert list(loaded.plugins["notifier"]) == ["second", "first"]
    assert loaded.plugins["datastore"]["sqlite"] == {
        "database_path": "/var/lib/pyspire/server/datastore.sqlite3"
    }
    assert loaded.warnings == ()


def test_agent_file_loads_and_reports_its_warnings(tmp_path: Path) -> None:
    loaded = load_agent_config(write(tmp_path, AGENT_TOML))
    assert loaded.settings.server_port == 8081
    assert dict(loaded.plugins) == {"workload_attestor": {"unix": {}}}
    assert [warning.path for warning in loaded.warnings] == ["agent.insecure_bootstrap"]


def test_toml_syntax_error_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\ntrust_domain = "example.org"\nbind_port = \n')
    with pytest.raises(ConfigError) as caught:
        load_server_config(path)
    (issue,) = caught.value.issues
    assert issue.path == ""
    prefix = f"invalid toml in {str(path)!r} at line 3, column 13: "
    assert issue.message.startswith(prefix)
    assert issue.message == issue.message.rstrip(".")
    assert issue.message[len(prefix)].islower()


def test_duplicate_table_is_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\n[server]\n")
    with pytest.raises(ConfigError) as caught:
        load_server_config(path)
    assert "line 2" in caught.value.issues[0].message


def test_missing_file_is_one_clear_issue(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_server_config(tmp_path / "absent.toml")
    assert issues_of(caught) == [
        f"cannot read configuration file {str(tmp_path / 'absent.toml')!r}: "
        "no such file or directory"
    ]


def test_binary_file_is_reported_as_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[server]\n\xff\xfe")
    with pytest.raises(ConfigError) as caught:
        read_document(path)
    assert "is not UTF-8 text" in caught.value.issues[0].message


def test_default_path_is_spire_like() -> None:
    assert SERVER_SCHEMA.default_path == Path("conf/server/server.toml")
    assert AGENT_SCHEMA.default_path == Path("conf/agent/agent.toml")


def test_default_path_is_used_when_none_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf" / "server").mkdir(parents=True)
    write(tmp_path / "conf" / "server", SERVER_TOML, "server.toml")
    monkeypatch.chdir(tmp_path)
    assert load_server_config().source == Path("conf/server/server.toml")


def test_unknown_top_level_tables_and_settings_issues_come_together(tmp_path: Path) -> None:
    text = SERVER_TOML + "\n[telemetry]\nprometheus = 1\n[agent]\nx = 1\n"
    text = text.replace('data_dir = "/var/lib/pyspire/server"', "bind_port = true")
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, text))
    found = {issue.path: issue.message for issue in caught.value.issues}
    assert found["telemetry"] == (
        "unknown top-level table; the server configuration has only [server]"
    )
    assert "agent" in found
    assert "server.data_dir" in found
    assert found["server.bind_port"] == "expected an integer, found boolean true"


def test_top_level_key_is_named_as_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_agent_config(write(tmp_path, 'trust_domain = "example.org"\n' + AGENT_TOML))
    assert issues_of(caught) == [
        "trust_domain: unknown top-level key; the agent configuration has only [agent]"
    ]


def test_section_and_plugins_must_be_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, 'server = "yes"\n'))
    assert "server: expected a table" in issues_of(caught)
    text = SERVER_TOML.split("\n\n")[0] + '\nplugins = ["sqlite"]\n'
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, text))
    assert [issue.path for issue in caught.value.issues] == ["server.plugins"]


def test_plugins_table_tolerates_broken_documents() -> None:
    assert plugins_table(SERVER_SCHEMA, {}) == {}
    assert plugins_table(SERVER_SCHEMA, {"server": 1}) == {}
    assert plugins_table(SERVER_SCHEMA, {"server": {"plugins": 1}}) == {}
    table: dict[str, object] = {"datastore": {"sqlite": {}}}
    assert plugins_table(SERVER_SCHEMA, {"server": {"plugins": table}}) == table


def test_overrides_replace_file_values_and_none_means_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, SERVER_TOML)
    loaded = load_server_config(
        path, overrides={"bind_port": 9000, "log_level": None, "data_dir": "/srv/data"}
    )
    assert loaded.settings.bind_port == 9000
    assert loaded.settings.log_level == "INFO"
    assert loaded.settings.data_dir == Path("/srv/data")


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, SERVER_TOML), overrides={"bind_port": 70000})
    assert [issue.path for issue in caught.value.issues] == ["server.bind_port"]


def test_expand_env_vars_forms() -> None:
    environ = {"TD": "example.org", "PORT": "8081", "DIR_1": "/data"}
    text = "a=$TD b=${PORT} c=${DIR_1}/x d=$UNSET e=${UNSET} f=$ g=$1 h=${bad"
    assert expand_env_vars(text, environ) == (
        "a=example.org b=8081 c=/data/x d= e= f=$ g=$1 h=${bad"
    )


def test_env_expansion_only_when_asked(tmp_path: Path) -> None:
    text = (
        '[server]\ntrust_domain = "${PYSPIRE_TEST_TD}"\ndata_dir = "$PYSPIRE_TEST_DIR/server"\n'
        "bind_port = $PYSPIRE_TEST_PORT\n"
    )
    path = write(tmp_path, text)
    environ = {
        "PYSPIRE_TEST_TD": "example.org",
        "PYSPIRE_TEST_DIR": "/srv",
        "PYSPIRE_TEST_PORT": "9443",
    }
    loaded = load_server_config(path, expand_env=True, environ=environ)
    assert str(loaded.settings.trust_domain) == "example.org"
    assert loaded.settings.data_dir == Path("/srv/server")
    assert loaded.settings.bind_port == 9443
    with pytest.raises(ConfigError) as caught:
        load_server_config(path, environ=environ)
    assert f"invalid toml in {str(path)!r} at line 4" in caught.value.issues[0].message


def test_env_expansion_reads_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYSPIRE_TEST_DATA", "/from/env")
    path = write(tmp_path, SERVER_TOML.replace('/var/lib/pyspire/server"', '$PYSPIRE_TEST_DATA"'))
    assert os.environ["PYSPIRE_TEST_DATA"] == "/from/env"
    loaded = load_server_config(path, expand_env=True)
    assert loaded.settings.data_dir == Path("/from/env")


def test_expanded_values_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, SERVER_TOML.replace('"example.org"', '"$PYSPIRE_UNSET_TD"'))
    with pytest.raises(ConfigError) as caught:
        load_server_config(path, expand_env=True, environ={})
    assert [issue.path for issue in caught.value.issues] == ["server.trust_domain"]


def test_issue_text_names_path_and_reason() -> None:
    assert str(ConfigIssue("server.bind_port", "must be between 0 and 65535, found -1")) == (
        "server.bind_port: must be between 0 and 65535, found -1"
    )
