"""Discovery: real entry points, in-memory modules, filters, duplicates and broken plugins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyspire.catalog import (
    AGENT_KINDS,
    SERVER_KINDS,
    Discovery,
    PluginFilter,
    PluginLoadError,
)
from pyspire_sdk.errors import ConfigError

WORKLOAD = next(kind for kind in AGENT_KINDS if kind.toml_name == "workload_attestor")
AGENT_KEYS = next(kind for kind in AGENT_KINDS if kind.toml_name == "key_manager")
SERVER_KEYS = next(kind for kind in SERVER_KINDS if kind.toml_name == "key_manager")
SERVER_NODE = next(kind for kind in SERVER_KINDS if kind.toml_name == "node_attestor")
AGENT_NODE = next(kind for kind in AGENT_KINDS if kind.toml_name == "node_attestor")

GOOD_PLUGIN = """
from pyspire_sdk.plugin import NoConfig, PluginRegistration, hookimpl

class Attestor:
    async def configure(self, config, host): pass
    async def close(self): pass
    async def attest(self, pid): return []

@hookimpl
def pyspire_workload_attestors():
    return [PluginRegistration(name="{name}", config_type=NoConfig, factory=Attestor)]
"""

TWO_PLUGINS = """
from pyspire_sdk.plugin import NoConfig, PluginRegistration, hookimpl

class Attestor:
    async def configure(self, config, host): pass
    async def close(self): pass
    async def attest(self, pid): return []

@hookimpl
def pyspire_workload_attestors():
    return [
        PluginRegistration(name="one", config_type=NoConfig, factory=Attestor),
        PluginRegistration(name="two", config_type=NoConfig, factory=Attestor),
    ]
"""


def test_example_plugin_is_found_through_its_entry_point() -> None:
    discovery = Discovery.load(
        plugin_filter=PluginFilter.of(allow=["pyspire-workloadattestor-environ"])
    )
    (plugin,) = discovery.plugins(WORKLOAD)
    assert plugin.name == "environ"
    assert plugin.distribution == "pyspire-workloadattestor-environ"
    assert plugin.version == "0.1.0"
    assert plugin.entry_point == "environ = pyspire_workloadattestor_environ.plugin"
    assert plugin.registration.config_type.__name__ == "EnvironConfig"
    assert discovery.get(WORKLOAD, "environ") is plugin


def test_allow_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSPIRE_PLUGINS_ALLOW", " pyspire_workloadattestor.environ ,")
    monkeypatch.delenv("PYSPIRE_PLUGINS_BLOCK", raising=False)
    discovery = Discovery.load()
    assert [plugin.name for plugin in discovery] == ["environ"]


def test_block_wins_over_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSPIRE_PLUGINS_ALLOW", "pyspire-workloadattestor-environ")
    monkeypatch.setenv("PYSPIRE_PLUGINS_BLOCK", "workload_attestor:environ")
    discovery = Discovery.load()
    assert list(discovery) == []
    assert discovery.exclusion(WORKLOAD, "environ") == "it is blocked by PYSPIRE_PLUGINS_BLOCK"


def test_blocked_distribution_is_never_imported(install: Callable[..., None], site: Path) -> None:
    install("pyspire-workloadattestor-boom", {"boom": "boom_mod"}, {"boom_mod": "1 / 0\n"})
    install(
        "pyspire-workloadattestor-fine",
        {"fine": "fine_mod"},
        {"fine_mod": GOOD_PLUGIN.format(name="fine")},
    )
    discovery = Discovery.load(
        path=[str(site)], plugin_filter=PluginFilter.of(block=["pyspire-workloadattestor-boom"])
    )
    assert [plugin.name for plugin in discovery.plugins(WORKLOAD)] == ["fine"]
    assert discovery.exclusion(WORKLOAD, "boom") == (
        "distribution pyspire-workloadattestor-boom is installed but blocked by "
        "PYSPIRE_PLUGINS_BLOCK"
    )


def test_allow_by_type_and_name_keeps_only_that_plugin(
    install: Callable[..., None], site: Path
) -> None:
    install("third-party-pair", {"pair": "pair_mod"}, {"pair_mod": TWO_PLUGINS})
    discovery = Discovery.load(
        path=[str(site)], plugin_filter=PluginFilter.of(allow=["workload_attestor:two"])
    )
    assert [plugin.name for plugin in discovery.plugins(WORKLOAD)] == ["two"]
    assert discovery.exclusion(WORKLOAD, "one") == "it is not listed in PYSPIRE_PLUGINS_ALLOW"


def test_unlisted_distribution_is_not_imported_under_an_allow_list(
    install: Callable[..., None], site: Path
) -> None:
    install("pyspire-workloadattestor-boom", {"boom": "boom_mod2"}, {"boom_mod2": "1 / 0\n"})
    install(
        "pyspire-workloadattestor-fine",
        {"fine": "fine_mod2"},
        {"fine_mod2": GOOD_PLUGIN.format(name="fine")},
    )
    discovery = Discovery.load(
        path=[str(site)], plugin_filter=PluginFilter.of(allow=["pyspire-workloadattestor-fine"])
    )
    assert [plugin.name for plugin in discovery] == ["fine"]
    assert discovery.exclusion(WORKLOAD, "boom") == (
        "distribution pyspire-workloadattestor-boom is installed but not listed in "
        "PYSPIRE_PLUGINS_ALLOW"
    )


def test_plugin_that_fails_to_import_is_named(install: Callable[..., None], site: Path) -> None:
    install(
        "pyspire-workloadattestor-boom",
        {"boom": "boom_mod3"},
        {"boom_mod3": "raise RuntimeError('missing native library')\n"},
        version="2.3",
    )
    with pytest.raises(PluginLoadError) as caught:
        Discovery.load(path=[str(site)], plugin_filter=PluginFilter())
    assert caught.value.problems == (
        'entry point "boom = boom_mod3" of distribution pyspire-workloadattestor-boom 2.3 '
        "cannot be imported: RuntimeError: missing native library",
    )


def test_entry_point_naming_a_missing_module_is_named(
    install: Callable[..., None], site: Path
) -> None:
    install("pyspire-notifier-ghost", {"ghost": "no_such_module_here"}, {})
    with pytest.raises(PluginLoadError) as caught:
        Discovery.load(path=[str(site)], plugin_filter=PluginFilter())
    assert caught.value.problems == (
        'entry point "ghost = no_such_module_here" of distribution pyspire-notifier-ghost 1.0 '
        "cannot be imported: ModuleNotFoundError: No module named 'no_such_module_here'",
    )


def test_every_broken_plugin_is_reported_at_once(fakes: Any) -> None:
    def explode() -> object:
        raise ValueError("bad state")

    def nothing() -> list[object]:
        return []

    modules = [
        fakes.make_module("raises", pyspire_workload_attestors=explode),
        fakes.make_module("not-a-list", pyspire_notifiers=lambda: "oops"),
        fakes.make_module("wrong-items", pyspire_svid_stores=lambda: [42]),
        fakes.make_module(
            "config-not-dataclass",
            pyspire_datastores=lambda: [fakes.registration("odd", object, config_type=dict)],
        ),
        fakes.make_module("typo", pyspire_workload_attestor=nothing),
    ]
    with pytest.raises(PluginLoadError) as caught:
        Discovery.from_modules(*modules)
    assert set(caught.value.problems) == {
        'entry point "typo" of distribution typo implements unknown hook '
        "pyspire_workload_attestor; known hooks: pyspire_agent_node_attestors, "
        "pyspire_bundle_publishers, pyspire_credential_composers, pyspire_datastores, "
        "pyspire_key_managers, pyspire_notifiers, pyspire_server_node_attestors, "
        "pyspire_svid_stores, pyspire_upstream_authorities, pyspire_workload_attestors",
        'entry point "raises" of distribution raises: hook pyspire_workload_attestors failed: '
        "ValueError: bad state",
        'entry point "not-a-list" of distribution not-a-list: hook pyspire_notifiers returned '
        "str where a list of PluginRegistration was expected",
        'entry point "wrong-items" of distribution wrong-items: hook pyspire_svid_stores '
        "returned int where a PluginRegistration was expected",
        'entry point "config-not-dataclass" of distribution config-not-dataclass: hook '
        "pyspire_datastores plugin \"odd\": config_type <class 'dict'> is not a dataclass",
    }
    assert str(caught.value) == "; ".join(caught.value.problems)


def test_two_distributions_offering_the_same_plugin_is_an_error(fakes: Any) -> None:
    first = fakes.make_module(
        "dist-one", pyspire_key_managers=lambda: [fakes.registration("disk", object)]
    )
    second = fakes.make_module(
        "dist-two", pyspire_key_managers=lambda: [fakes.registration("disk", object)]
    )
    with pytest.raises(PluginLoadError) as caught:
        Discovery.from_modules(first, second)
    assert caught.value.problems == (
        'key_manager plugin "disk" is provided by more than one distribution: '
        'entry point "dist-one" of distribution dist-one and entry point "dist-two" of '
        "distribution dist-two; uninstall one or block it with PYSPIRE_PLUGINS_BLOCK",
    )


def test_duplicate_is_resolved_by_blocking_one_distribution(fakes: Any) -> None:
    first = fakes.make_module(
        "dist-one", pyspire_key_managers=lambda: [fakes.registration("disk", object)]
    )
    second = fakes.make_module(
        "dist-two", pyspire_key_managers=lambda: [fakes.registration("disk", object)]
    )
    discovery = Discovery.from_modules(
        first, second, plugin_filter=PluginFilter.of(block=["dist-two"])
    )
    assert discovery.get(SERVER_KEYS, "disk") is not None
    assert discovery.get(SERVER_KEYS, "disk").distribution == "dist-one"  # type: ignore[union-attr]


def test_same_distribution_offering_a_name_twice_is_an_error(fakes: Any) -> None:
    module = fakes.make_module(
        "dist-twice",
        pyspire_notifiers=lambda: [
            fakes.registration("log", object),
            fakes.registration("log", object),
        ],
    )
    with pytest.raises(PluginLoadError) as caught:
        Discovery.from_modules(module)
    assert caught.value.problems == (
        'entry point "dist-twice" of distribution dist-twice provides notifier plugin "log" 2 '
        "times",
    )


def test_server_and_agent_halves_share_a_name_without_conflict(fakes: Any) -> None:
    module = fakes.make_module(
        "dist-join-token",
        pyspire_server_node_attestors=lambda: [fakes.registration("join_token", object)],
        pyspire_agent_node_attestors=lambda: [fakes.registration("join_token", object)],
    )
    discovery = Discovery.from_modules(module)
    assert discovery.get(SERVER_NODE, "join_token") is not None
    assert discovery.get(AGENT_NODE, "join_token") is not None
    assert discovery.get(SERVER_NODE, "join_token") is not discovery.get(AGENT_NODE, "join_token")


def test_key_managers_serve_both_sides(fakes: Any) -> None:
    module = fakes.make_module(
        "dist-keys", pyspire_key_managers=lambda: [fakes.registration("memory", object)]
    )
    discovery = Discovery.from_modules(module)
    assert [plugin.kind for plugin in discovery] == [SERVER_KEYS, AGENT_KEYS]


def test_hook_returning_none_offers_nothing(fakes: Any) -> None:
    module = fakes.make_module("dist-quiet", pyspire_notifiers=lambda: None)
    assert list(Discovery.from_modules(module)) == []


def test_the_same_module_behind_two_entry_points_registers_once(
    install: Callable[..., None], site: Path
) -> None:
    install(
        "pyspire-workloadattestor-twin",
        {"twin": "twin_mod", "twin-again": "twin_mod"},
        {"twin_mod": GOOD_PLUGIN.format(name="twin")},
    )
    discovery = Discovery.load(path=[str(site)], plugin_filter=PluginFilter())
    assert [plugin.name for plugin in discovery] == ["twin"]


def test_filter_items_are_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        PluginFilter.parse(allow="key_managers:disk, ok-dist", block="bad name!,notifier:")
    assert [str(issue) for issue in caught.value.issues] == [
        'PYSPIRE_PLUGINS_ALLOW: unknown plugin type "key_managers" in "key_managers:disk"; '
        "known types: bundle_publisher, credential_composer, datastore, key_manager, "
        "node_attestor, notifier, svid_store, upstream_authority, workload_attestor",
        'PYSPIRE_PLUGINS_BLOCK: "bad name!" is neither a distribution name nor <type>:<name>',
        'PYSPIRE_PLUGINS_BLOCK: invalid plugin name "" in "notifier:"',
    ]


def test_empty_allow_variable_means_no_allow_list() -> None:
    plugin_filter = PluginFilter.from_environ({"PYSPIRE_PLUGINS_ALLOW": " , "})
    assert not plugin_filter.restricts
    assert plugin_filter.admits_plugin("notifier", "log", "any-dist")


def test_hook_with_arguments_the_spec_lacks_is_named(fakes: Any) -> None:
    def wants_argument(verbose: bool) -> list[object]:
        return []

    module = fakes.make_module("dist-args", pyspire_notifiers=wants_argument)
    with pytest.raises(PluginLoadError) as caught:
        Discovery.from_modules(module)
    (problem,) = caught.value.problems
    assert problem.startswith(
        'entry point "dist-args" of distribution dist-args is not a valid plugin: '
        "PluginValidationError: "
    )
    assert "verbose" in problem


def test_combining_discoveries_refuses_a_plugin_given_twice(fakes: Any) -> None:
    first = Discovery.from_modules(
        fakes.make_module("dist-a", pyspire_notifiers=lambda: [fakes.registration("log", object)])
    )
    second = Discovery.from_modules(
        fakes.make_module("dist-b", pyspire_notifiers=lambda: [fakes.registration("log", object)])
    )
    with pytest.raises(PluginLoadError) as caught:
        Discovery([*first, *second])
    assert str(caught.value) == 'notifier plugin "log" is provided by both dist-a and dist-b'
