"""All plugin hooks on one pluggy manager, and the documented public surface of their modules."""

from __future__ import annotations

import inspect
from types import ModuleType, SimpleNamespace

import pluggy
import pytest

from pyspire_sdk import procfs
from pyspire_sdk.hookspecs import HOOK_NAMES, HOOKSPEC_MODULES, add_hookspecs, new_plugin_manager
from pyspire_sdk.plugin import PROJECT_NAME, NoConfig, PluginRegistration, hookimpl
from pyspire_sdk.plugins import (
    bundle_publisher,
    credential_composer,
    node_attestor,
    notifier,
    svid_store,
    upstream_authority,
    workload_attestor,
)

MODULES_OF_THIS_PART: tuple[ModuleType, ...] = (
    node_attestor,
    workload_attestor,
    upstream_authority,
    notifier,
    bundle_publisher,
    credential_composer,
    svid_store,
    procfs,
)


def test_nine_plugin_types_are_collected() -> None:
    names = [module.__name__.rsplit(".", 1)[-1] for module in HOOKSPEC_MODULES]
    assert names == [
        "datastore",
        "key_manager",
        "node_attestor",
        "workload_attestor",
        "upstream_authority",
        "notifier",
        "bundle_publisher",
        "credential_composer",
        "svid_store",
    ]


def test_every_hook_is_specified_once() -> None:
    manager = new_plugin_manager()
    specified = sorted(
        name for name in dir(manager.hook) if getattr(getattr(manager.hook, name), "spec", None)
    )
    assert specified == sorted(HOOK_NAMES)
    assert len(set(HOOK_NAMES)) == 10


def test_every_hook_takes_no_arguments_and_is_documented() -> None:
    manager = new_plugin_manager()
    for name in HOOK_NAMES:
        spec = getattr(manager.hook, name).spec
        assert spec is not None
        assert spec.argnames == ()
        assert spec.function.__doc__ and "Return" in spec.function.__doc__


def test_add_hookspecs_is_idempotent() -> None:
    manager = new_plugin_manager()
    add_hookspecs(manager)
    assert manager.hook.pyspire_svid_stores.spec is not None


def test_a_manager_of_another_project_is_refused() -> None:
    with pytest.raises(ValueError, match="plugin manager project is 'other', expected 'pyspire'"):
        add_hookspecs(pluggy.PluginManager("other"))


def test_registrations_come_back_from_a_plugin_module() -> None:
    class Attestor:
        pass

    @hookimpl
    def pyspire_workload_attestors() -> list[PluginRegistration[NoConfig, Attestor]]:
        return [PluginRegistration(name="fake", config_type=NoConfig, factory=Attestor)]

    plugin = SimpleNamespace(pyspire_workload_attestors=pyspire_workload_attestors)
    manager = new_plugin_manager()
    manager.register(plugin, name="fake-plugin")
    manager.check_pending()

    results = manager.hook.pyspire_workload_attestors()
    assert [[registration.name for registration in result] for result in results] == [["fake"]]
    assert manager.hook.pyspire_notifiers() == []


def test_a_misspelt_hook_fails_check_pending() -> None:
    @hookimpl
    def pyspire_workload_attestor() -> list[object]:
        return []

    manager = new_plugin_manager()
    manager.register(SimpleNamespace(pyspire_workload_attestor=pyspire_workload_attestor))
    with pytest.raises(
        pluggy.PluginValidationError, match="unknown hook 'pyspire_workload_attestor'"
    ):
        manager.check_pending()


def test_a_hook_with_arguments_is_refused_on_registration() -> None:
    @hookimpl
    def pyspire_notifiers(config: object) -> list[object]:
        return []

    manager = new_plugin_manager()
    with pytest.raises(pluggy.PluginValidationError):
        manager.register(SimpleNamespace(pyspire_notifiers=pyspire_notifiers))


def test_project_name() -> None:
    assert new_plugin_manager().project_name == PROJECT_NAME


@pytest.mark.parametrize("module", MODULES_OF_THIS_PART, ids=lambda module: module.__name__)
def test_public_surface_is_declared_and_documented(module: ModuleType) -> None:
    assert module.__doc__
    exported = module.__all__
    assert sorted(exported) == sorted(set(exported)), "duplicates in __all__"
    for name in exported:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, f"{module.__name__}.{name} has no docstring"
    public_defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module.__name__
    }
    assert public_defined <= set(exported), (
        f"public but not in __all__: {sorted(public_defined - set(exported))}"
    )
