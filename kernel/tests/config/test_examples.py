"""The example configurations in ``examples/configs`` stay valid and complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyspire.catalog import Discovery, Side
from pyspire.cli.commands.validate import validate_configuration
from pyspire.config import AgentConfig, ServerConfig, load_agent_config, load_server_config
from pyspire_sdk.config import describe_config

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "configs"
NOT_INSTALLED = re.compile(r'^no \w+ plugin named "[\w-]+" is installed')


def test_server_example_settings_load() -> None:
    loaded = load_server_config(EXAMPLES / "server.toml")
    assert str(loaded.settings.trust_domain) == "example.org"
    assert loaded.warnings == ()
    assert {kind: list(names) for kind, names in loaded.plugins.items()} == {
        "datastore": ["sqlite"],
        "key_manager": ["disk"],
        "node_attestor": ["join_token"],
    }


def test_agent_example_settings_load() -> None:
    loaded = load_agent_config(EXAMPLES / "agent.toml")
    assert loaded.settings.bootstrap_keys_set() == ["trust_bundle_path"]
    assert loaded.warnings == ()
    assert {kind: list(names) for kind, names in loaded.plugins.items()} == {
        "key_manager": ["disk"],
        "node_attestor": ["join_token"],
        "workload_attestor": ["unix"],
    }


@pytest.mark.parametrize(
    ("name", "config_type"), [("server.toml", ServerConfig), ("agent.toml", AgentConfig)]
)
def test_examples_mention_every_setting(name: str, config_type: type[object]) -> None:
    text = (EXAMPLES / name).read_text()
    for row in describe_config(config_type):
        leaf = row.key.rsplit(".", 1)[-1]  # nested tables are documented row by row
        pattern = rf"^(# )?({leaf} = |\[[\w.]+\.{leaf}\])"
        assert re.search(pattern, text, re.MULTILINE), f"{name} lacks {row.key}"


@pytest.mark.parametrize(
    ("side", "name"), [(Side.SERVER, "server.toml"), (Side.AGENT, "agent.toml")]
)
def test_examples_fail_only_for_plugins_not_installed_yet(side: Side, name: str) -> None:
    report = validate_configuration(
        side, EXAMPLES / name, expand_env=False, environ={}, discover=Discovery.load
    )
    assert report.warnings == ()
    for issue in report.issues:
        assert NOT_INSTALLED.match(issue.message), str(issue)
