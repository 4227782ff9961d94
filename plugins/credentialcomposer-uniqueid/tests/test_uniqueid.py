"""The ``uniqueid`` composer gives workload X509-SVIDs SPIRE's unique identifier and has no
opinion on anything else."""

from __future__ import annotations

import importlib.metadata
from datetime import timedelta

import pytest
from pyspire_credentialcomposer_uniqueid import plugin
from pyspire_credentialcomposer_uniqueid.plugin import UNIQUE_ID_OID, UniqueIdComposer, unique_id

from pyspire_sdk.config import describe_config, load_config
from pyspire_sdk.errors import ConfigError
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, HostServices, NoConfig
from pyspire_sdk.plugins.credential_composer import (
    CredentialComposer,
    JwtSvidClaims,
    SubjectAttribute,
    X509CaTemplate,
    X509SvidTemplate,
)
from pyspire_sdk.spiffeid import SpiffeId

FOO = SpiffeId.parse("spiffe://example.org/foo")
SPIRE = (SubjectAttribute("2.5.4.6", "US"), SubjectAttribute("2.5.4.10", "SPIRE"))
TEMPLATE = X509SvidTemplate(subject=SPIRE, ttl=timedelta(hours=1), dns_names=("foo.example.org",))


@pytest.fixture
async def composer(host_services: HostServices) -> UniqueIdComposer:
    composer = UniqueIdComposer()
    await composer.configure(NoConfig(), host_services)
    return composer


def test_the_value_is_spires_for_the_same_spiffe_id() -> None:
    # SPIRE's own reference value (pkg/common/x509svid: UniqueIDAttribute of spiffe://example.org/foo).
    assert unique_id(FOO) == "c3406f9b12ceb4f9c948318c579b905b"
    assert unique_id(SpiffeId.parse("spiffe://example.org/bar")) != unique_id(FOO)


async def test_a_workload_svid_gets_the_attribute_last(composer: UniqueIdComposer) -> None:
    composed = await composer.compose_workload_x509_svid(FOO, b"spki", TEMPLATE)
    assert composed.subject == (
        *SPIRE,
        SubjectAttribute(UNIQUE_ID_OID, "c3406f9b12ceb4f9c948318c579b905b"),
    )
    assert composed.dns_names == TEMPLATE.dns_names
    assert composed.ttl == TEMPLATE.ttl
    assert composed.extra_extensions == ()


async def test_an_attribute_already_there_is_replaced_in_place(
    composer: UniqueIdComposer,
) -> None:
    earlier = X509SvidTemplate(
        subject=(
            SubjectAttribute(UNIQUE_ID_OID, "stale"),
            *SPIRE,
            SubjectAttribute(UNIQUE_ID_OID, "second"),
        ),
        ttl=timedelta(hours=1),
    )
    composed = await composer.compose_workload_x509_svid(FOO, b"spki", earlier)
    assert composed.subject == (
        SubjectAttribute(UNIQUE_ID_OID, unique_id(FOO)),
        *SPIRE,
        SubjectAttribute(UNIQUE_ID_OID, "second"),
    )


async def test_nothing_else_is_composed(composer: UniqueIdComposer) -> None:
    ca = X509CaTemplate(subject=SPIRE, ttl=timedelta(days=1))
    assert await composer.compose_server_x509_ca(ca) is ca
    assert await composer.compose_server_x509_svid(FOO, b"k", TEMPLATE) is TEMPLATE
    assert await composer.compose_agent_x509_svid(FOO, b"k", TEMPLATE) is TEMPLATE
    claims = JwtSvidClaims({"tenant": "a"})
    assert await composer.compose_workload_jwt_svid(FOO, claims) is claims


def test_registration() -> None:
    [registration] = plugin.pyspire_credential_composers()
    assert registration.name == "uniqueid"
    assert registration.config_type is NoConfig
    assert isinstance(registration.factory(), CredentialComposer)
    assert describe_config(registration.config_type) == []


def test_takes_no_settings() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(NoConfig, {"length": 16}, path="server.plugins.credential_composer.uniqueid")


def test_entry_point_is_installed() -> None:
    found = {
        entry_point.name: entry_point.value
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if entry_point.dist is not None
        and entry_point.dist.metadata["Name"] == "pyspire-credentialcomposer-uniqueid"
    }
    assert found == {"uniqueid": "pyspire_credentialcomposer_uniqueid.plugin"}
