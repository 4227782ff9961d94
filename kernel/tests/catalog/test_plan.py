"""Planning: every error message, chain order and arity, without creating any plugin."""

from __future__ import annotations

import tomllib
from types import ModuleType
from typing import Any

import pytest

from pyspire.catalog import (
    AGENT_KINDS,
    SERVER_KINDS,
    Discovery,
    PluginFilter,
    Side,
    installed_plugins,
    plan_plugins,
)
from pyspire_sdk.errors import ConfigError


def issues(error: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(issue) for issue in error.value.issues]


@pytest.fixture
def server_modules(fakes: Any) -> list[ModuleType]:
    created: list[str] = []

    def factory(name: str) -> Any:
        def build() -> object:
            created.append(name)
            return object()

        return build

    reg = fakes.registration
    modules = [
        fakes.make_module(
            "pyspire-datastore-sqlite",
            pyspire_datastores=lambda: [reg("sqlite", factory("sqlite"), fakes.LabelConfig)],
        ),
        fakes.make_module(
            "pyspire-keymanager-disk",
            pyspire_key_managers=lambda: [
                reg("disk", factory("disk"), fakes.LabelConfig, "keys in a file")
            ],
        ),
        fakes.make_module(
            "pyspire-keymanager-memory",
            pyspire_key_managers=lambda: [reg("memory", factory("memory"))],
        ),
        fakes.make_module(
            "upstreams",
            pyspire_upstream_authorities=lambda: [
                reg("disk", factory("upstream-disk")),
                reg("spire", factory("upstream-spire")),
            ],
        ),
        fakes.make_module(
            "notifiers",
            pyspire_notifiers=lambda: [
                reg(name, factory(name), fakes.LabelConfig) for name in ("zulu", "alpha", "mike")
            ],
        ),
    ]
    for module in modules:
        module.created = created
    return modules


@pytest.fixture
def server_discovery(server_modules: list[ModuleType]) -> Discovery:
    return Discovery.from_modules(*server_modules)


@pytest.fixture
def agent_discovery(agent_modules: list[ModuleType]) -> Discovery:
    return Discovery.from_modules(*agent_modules)


def parse(document: str) -> Any:
    return tomllib.loads(document)


def test_valid_server_plan_keeps_chain_document_order(
    server_discovery: Discovery, server_modules: list[ModuleType]
) -> None:
    document = parse(
        """
        [server.plugins.notifier.mike]
        label = "m"
        [server.plugins.datastore.sqlite]
        label = "db"
        [server.plugins.notifier.zulu]
        label = "z"
        weight = 3
        [server.plugins.key_manager.disk]
        label = "k"
        [server.plugins.notifier.alpha]
        label = "a"
        """
    )
    plan = plan_plugins(Side.SERVER, document["server"]["plugins"], server_discovery)
    assert [(plugin.kind.toml_name, plugin.name) for plugin in plan.plugins] == [
        ("datastore", "sqlite"),
        ("key_manager", "disk"),
        ("notifier", "mike"),
        ("notifier", "zulu"),
        ("notifier", "alpha"),
    ]
    assert [plugin.name for plugin in plan.of("notifier")] == ["mike", "zulu", "alpha"]
    zulu = plan.of("notifier")[1]
    assert (zulu.config.label, zulu.config.weight) == ("z", 3)
    assert zulu.path == "server.plugins.notifier.zulu"
    assert zulu.distribution == "notifiers"
    assert plan.of("upstream_authority") == ()
    assert server_modules[0].created == []  # nothing was instantiated


def test_unknown_type_lists_the_types_of_that_side(server_discovery: Discovery) -> None:
    table = {
        "datastore": {"sqlite": {"label": "x"}},
        "key_manager": {"memory": {}},
        "workload_attestor": {"unix": {}},
    }
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, table, server_discovery)
    assert issues(caught) == [
        'server.plugins.workload_attestor: unknown plugin type "workload_attestor"; known types '
        "for the server: bundle_publisher, credential_composer, datastore, key_manager, "
        "node_attestor, notifier, upstream_authority",
    ]


def test_unknown_name_lists_installed_plugins_and_the_distribution(
    agent_discovery: Discovery,
) -> None:
    table = {
        "key_manager": {"memory": {}},
        "node_attestor": {"join_token": {}},
        "workload_attestor": {"docker": {}, "alpha": {"label": "a"}},
    }
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.AGENT, table, agent_discovery)
    assert issues(caught) == [
        'agent.plugins.workload_attestor.docker: no workload_attestor plugin named "docker" is '
        "installed; installed: alpha, bravo, broken, charlie; install "
        "pyspire-workloadattestor-docker to get it",
    ]


@pytest.mark.parametrize(
    ("configured", "guesses"),
    [("dsik", '"disk"'), ("memroy", '"memory"'), ("Disk", '"disk"')],
)
def test_a_typo_of_an_installed_name_asks_did_you_mean(
    server_discovery: Discovery, configured: str, guesses: str
) -> None:
    table = {"datastore": {"sqlite": {"label": "x"}}, "key_manager": {configured: {}}}
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, table, server_discovery)
    assert issues(caught) == [
        f'server.plugins.key_manager.{configured}: no key_manager plugin named "{configured}" '
        f"is installed; did you mean {guesses}? installed: disk, memory",
    ]


def test_a_name_close_to_several_installed_names_lists_each(fakes: Any) -> None:
    discovery = Discovery.from_modules(
        fakes.make_module(
            "notifiers",
            pyspire_notifiers=lambda: [
                fakes.registration(name, lambda: object()) for name in ("slack", "slacks", "mail")
            ],
        )
    )
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, {"notifier": {"slak": {}}}, discovery, path="plugins")
    assert issues(caught)[0] == (
        'plugins.notifier.slak: no notifier plugin named "slak" is installed; did you mean '
        '"slack" or "slacks"? installed: mail, slack, slacks'
    )


def test_unknown_name_when_none_of_the_type_is_installed(server_discovery: Discovery) -> None:
    table = {
        "datastore": {"sqlite": {"label": "x"}},
        "key_manager": {"memory": {}},
        "node_attestor": {"join_token": {}},
    }
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, table, server_discovery)
    assert issues(caught) == [
        'server.plugins.node_attestor.join_token: no node_attestor plugin named "join_token" is '
        "installed; installed: none; install pyspire-nodeattestor-join-token to get it",
    ]


def test_unknown_name_of_a_blocked_plugin_says_so(server_modules: list[ModuleType]) -> None:
    discovery = Discovery.from_modules(
        *server_modules,
        plugin_filter=PluginFilter.of(block=["pyspire-keymanager-disk", "notifier:zulu"]),
    )
    table = {
        "datastore": {"sqlite": {"label": "x"}},
        "key_manager": {"disk": {"label": "k"}},
        "notifier": {"zulu": {"label": "z"}},
    }
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, table, discovery)
    assert issues(caught) == [
        'server.plugins.key_manager.disk: no key_manager plugin named "disk" is loaded: '
        "distribution pyspire-keymanager-disk is installed but blocked by PYSPIRE_PLUGINS_BLOCK; "
        "loaded: memory",
        'server.plugins.notifier.zulu: no notifier plugin named "zulu" is loaded: it is blocked '
        "by PYSPIRE_PLUGINS_BLOCK; loaded: alpha, mike",
    ]


def test_bad_plugin_config_names_key_type_and_value(server_discovery: Discovery) -> None:
    document = parse(
        """
        [server.plugins.datastore.sqlite]
        label = 7
        [server.plugins.key_manager.disk]
        weight = "heavy"
        colour = "red"
        """
    )
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, document["server"]["plugins"], server_discovery)
    assert issues(caught) == [
        "server.plugins.datastore.sqlite.label: expected a string, found integer 7",
        "server.plugins.key_manager.disk.colour: unknown key; known keys: label, weight",
        "server.plugins.key_manager.disk.label: required key is missing (expected a string)",
        "server.plugins.key_manager.disk.weight: expected an integer, found string 'heavy'",
    ]


def test_plugin_without_settings_rejects_any_key(server_discovery: Discovery) -> None:
    table = {"datastore": {"sqlite": {"label": "x"}}, "key_manager": {"memory": {"size": 1}}}
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, table, server_discovery)
    # the wording after the key path belongs to pyspire_sdk.config
    (issue,) = issues(caught)
    assert issue.startswith("server.plugins.key_manager.memory.size: unknown key")


def test_missing_required_plugin(server_discovery: Discovery) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, {"key_manager": {"memory": {}}}, server_discovery)
    assert issues(caught) == [
        "server.plugins.datastore: exactly one datastore plugin is required, found 0",
    ]


def test_every_cardinality_rule(server_discovery: Discovery, agent_discovery: Discovery) -> None:
    server_table = {
        "datastore": {},
        "key_manager": {"disk": {"label": "k"}, "memory": {}},
        "upstream_authority": {"spire": {}, "disk": {}},
    }
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, server_table, server_discovery)
    assert issues(caught) == [
        "server.plugins.datastore: exactly one datastore plugin is required, found 0",
        "server.plugins.key_manager: exactly one key_manager plugin is required, found 2: "
        "disk, memory",
        "server.plugins.upstream_authority: at most one upstream_authority plugin is allowed, "
        "found 2: spire, disk",
    ]
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.AGENT, None, agent_discovery)
    assert issues(caught) == [
        "agent.plugins.key_manager: exactly one key_manager plugin is required, found 0",
        "agent.plugins.node_attestor: exactly one node_attestor plugin is required, found 0",
        "agent.plugins.workload_attestor: at least one workload_attestor plugin is required, "
        "found 0",
    ]


def test_optional_and_chain_kinds_accept_their_bounds(server_discovery: Discovery) -> None:
    table = {
        "datastore": {"sqlite": {"label": "x"}},
        "key_manager": {"memory": {}},
        "upstream_authority": {"spire": {}},
    }
    plan = plan_plugins(Side.SERVER, table, server_discovery)
    assert [plugin.name for plugin in plan.of("upstream_authority")] == ["spire"]
    assert plan.of("notifier") == ()


def test_every_issue_is_reported_together(server_discovery: Discovery) -> None:
    table = {
        "datastore": {"sqlite": {}},
        "key_manager": {"vault": {}},
        "bogus": {},
        "notifier": {"alpha": {"label": "a"}, "mike": 5},
        "bundle_publisher": [{"name": "s3"}],
    }
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, table, server_discovery, path="plugins")
    assert issues(caught) == [
        "plugins.datastore.sqlite.label: required key is missing (expected a string)",
        'plugins.key_manager.vault: no key_manager plugin named "vault" is installed; '
        "installed: disk, memory; install pyspire-keymanager-vault to get it",
        'plugins.bogus: unknown plugin type "bogus"; known types for the server: '
        "bundle_publisher, credential_composer, datastore, key_manager, node_attestor, "
        "notifier, upstream_authority",
        "plugins.notifier.mike: expected a table with the plugin's settings (empty for the "
        "defaults), found integer 5",
        "plugins.bundle_publisher: expected a table of bundle_publisher plugins, found an "
        "array; write one table per plugin: [plugins.bundle_publisher.<name>]",
    ]


def test_plugins_table_must_be_a_table(server_discovery: Discovery) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_plugins(Side.SERVER, "sqlite", server_discovery)  # type: ignore[arg-type]
    assert issues(caught)[0] == "server.plugins: expected a table, found string 'sqlite'"


def test_listing_shows_the_side_in_kind_order(server_discovery: Discovery) -> None:
    rows = installed_plugins(Side.SERVER, server_discovery)
    assert [(row.type, row.name, row.distribution) for row in rows] == [
        ("datastore", "sqlite", "pyspire-datastore-sqlite"),
        ("key_manager", "disk", "pyspire-keymanager-disk"),
        ("key_manager", "memory", "pyspire-keymanager-memory"),
        ("upstream_authority", "disk", "upstreams"),
        ("upstream_authority", "spire", "upstreams"),
        ("notifier", "alpha", "notifiers"),
        ("notifier", "mike", "notifiers"),
        ("notifier", "zulu", "notifiers"),
    ]
    assert rows[1].description == "keys in a file"
    assert installed_plugins(Side.AGENT, server_discovery) == [
        row for row in installed_plugins(Side.AGENT, server_discovery) if row.type == "key_manager"
    ]


def test_kind_table_matches_spire_arity() -> None:
    server = {kind.toml_name: (kind.min_count, kind.max_count) for kind in SERVER_KINDS}
    agent = {kind.toml_name: (kind.min_count, kind.max_count) for kind in AGENT_KINDS}
    assert server == {
        "datastore": (1, 1),
        "key_manager": (1, 1),
        "upstream_authority": (0, 1),
        "node_attestor": (0, None),
        "notifier": (0, None),
        "bundle_publisher": (0, None),
        "credential_composer": (0, None),
    }
    assert agent == {
        "key_manager": (1, 1),
        "node_attestor": (1, 1),
        "workload_attestor": (1, None),
        "svid_store": (0, None),
    }
    prefixes = {kind.toml_name: kind.distribution_prefix for kind in SERVER_KINDS + AGENT_KINDS}
    assert prefixes["workload_attestor"] == "pyspire-workloadattestor-"
    assert prefixes["credential_composer"] == "pyspire-credentialcomposer-"
    assert [kind.is_chain for kind in AGENT_KINDS] == [False, False, True, True]


def test_kind_table_matches_the_sdk() -> None:
    from pyspire_sdk.hookspecs import HOOK_NAMES

    kinds = SERVER_KINDS + AGENT_KINDS
    assert {kind.hook_name for kind in kinds} == set(HOOK_NAMES)
    expected = {
        "datastore": "DataStore",
        "key_manager": "KeyManager",
        "upstream_authority": "UpstreamAuthority",
        "notifier": "Notifier",
        "bundle_publisher": "BundlePublisher",
        "credential_composer": "CredentialComposer",
        "workload_attestor": "WorkloadAttestor",
        "svid_store": "SvidStore",
    }
    for kind in kinds:
        interface = kind.interface
        assert interface.__name__ == kind.interface_name
        if kind.toml_name == "node_attestor":
            side = "Server" if kind.side is Side.SERVER else "Agent"
            assert kind.interface_name == f"{side}NodeAttestor"
        else:
            assert kind.interface_name == expected[kind.toml_name]
        assert getattr(interface, "_is_protocol", False), f"{kind} interface is not a Protocol"
