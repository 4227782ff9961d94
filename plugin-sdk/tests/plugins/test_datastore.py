"""The datastore interface: filters, pages, enums, mask fields, the protocol and the hookspec."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime

import pluggy
import pytest
from cryptography import x509

from pyspire_sdk.errors import InvalidArgumentError, PyspireError
from pyspire_sdk.model import AttestedNode, FederationRelationship, RegistrationEntry
from pyspire_sdk.plugin import PROJECT_NAME, NoConfig, PluginRegistration, hookimpl
from pyspire_sdk.plugins import datastore
from pyspire_sdk.plugins.datastore import (
    ENTRY_MASK_FIELDS,
    FEDERATION_RELATIONSHIP_MASK_FIELDS,
    NODE_MASK_FIELDS,
    BundleDeleteMode,
    ChangeKind,
    DataStore,
    EntryFilter,
    FailedPreconditionError,
    FederatesWithMatch,
    MatchBehavior,
    NodeFilter,
    Page,
    SelectorMatch,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import datastore_contract


def test_match_behavior_uses_spire_numbers() -> None:
    assert [(m.name, m.value) for m in MatchBehavior] == [
        ("EXACT", 0),
        ("SUBSET", 1),
        ("SUPERSET", 2),
        ("ANY", 3),
    ]


def test_bundle_delete_mode_uses_spire_numbers() -> None:
    assert [(m.name, m.value) for m in BundleDeleteMode] == [
        ("RESTRICT", 0),
        ("DELETE", 1),
        ("DISSOCIATE", 2),
    ]


def test_change_kinds() -> None:
    assert {kind.value for kind in ChangeKind} == {"entry", "node"}


def test_set_filters_must_name_something() -> None:
    with pytest.raises(InvalidArgumentError, match="selector filter is empty"):
        SelectorMatch(())
    with pytest.raises(InvalidArgumentError, match="federates_with filter is empty"):
        FederatesWithMatch((), MatchBehavior.ANY)
    assert SelectorMatch((Selector("a", "1"),)).match is MatchBehavior.EXACT
    assert FederatesWithMatch((TrustDomain("a.test"),)).match is MatchBehavior.EXACT


def test_default_filters_match_everything() -> None:
    assert all(getattr(EntryFilter(), f.name) is None for f in dataclasses.fields(EntryFilter))
    assert all(getattr(NodeFilter(), f.name) is None for f in dataclasses.fields(NodeFilter))


def test_page_defaults_and_validation() -> None:
    assert Page() == Page(0, "")
    with pytest.raises(InvalidArgumentError, match="page size -5 is negative"):
        Page(-5)


def test_mask_fields_name_real_fields_and_leave_out_identity() -> None:
    entry_fields = {f.name for f in dataclasses.fields(RegistrationEntry)}
    assert entry_fields - ENTRY_MASK_FIELDS == {"id", "revision_number", "created_at"}
    node_fields = {f.name for f in dataclasses.fields(AttestedNode)}
    assert node_fields - NODE_MASK_FIELDS == {"spiffe_id"}
    relationship_fields = {f.name for f in dataclasses.fields(FederationRelationship)}
    assert relationship_fields - FEDERATION_RELATIONSHIP_MASK_FIELDS == {"trust_domain"}


def test_failed_precondition_is_a_pyspire_error() -> None:
    assert issubclass(FailedPreconditionError, PyspireError)


def test_every_datastore_method_is_async_and_documented() -> None:
    methods = {
        name: member
        for name, member in vars(DataStore).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }
    assert len(methods) >= 40
    for name, method in methods.items():
        assert inspect.iscoroutinefunction(method), name
        assert (method.__doc__ or "").strip(), f"DataStore.{name} has no docstring"


def test_protocol_rejects_an_incomplete_object() -> None:
    class OnlyLifeCycle:
        async def configure(self, config: object, host: object) -> None:
            return None

        async def close(self) -> None:
            return None

    assert not isinstance(OnlyLifeCycle(), DataStore)


def test_hookspec_collects_registrations() -> None:
    class Factory:
        pass

    class Provider:
        @hookimpl
        def pyspire_datastores(self) -> list[PluginRegistration[NoConfig, Factory]]:
            return [PluginRegistration(name="fake", config_type=NoConfig, factory=Factory)]

    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(datastore)
    manager.register(Provider())
    results = manager.hook.pyspire_datastores()
    assert [[r.name for r in group] for group in results] == [["fake"]]


def test_hookspec_rejects_misspelled_hooks() -> None:
    class Misspelled:
        @hookimpl
        def pyspire_datastore(self) -> list[object]:
            return []

    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(datastore)
    manager.register(Misspelled())
    with pytest.raises(pluggy.PluginValidationError):
        manager.check_pending()


def test_contract_certificates_expire_when_asked() -> None:
    moment = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
    certificate = x509.load_der_x509_certificate(datastore_contract._certificate("x", moment))
    assert certificate.not_valid_after_utc == moment
    basic = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca


def test_contract_is_not_collected_on_its_own() -> None:
    assert not datastore_contract.DataStoreContract.__name__.startswith("Test")
    tests = [
        name for name in vars(datastore_contract.DataStoreContract) if name.startswith("test_")
    ]
    assert len(tests) >= 50
