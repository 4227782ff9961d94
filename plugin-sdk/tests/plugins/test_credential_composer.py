"""Credential templates, their guards, and a composer chain."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from pyspire_sdk.errors import InvalidArgumentError, PluginError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins import credential_composer
from pyspire_sdk.plugins.credential_composer import (
    RESERVED_EXTENSION_OIDS,
    RESERVED_JWT_CLAIMS,
    CredentialComposer,
    Extension,
    JwtSvidClaims,
    SubjectAttribute,
    X509CaTemplate,
    X509SvidTemplate,
    compose_chain,
)
from pyspire_sdk.spiffeid import SpiffeId

UNIQUE_ID_OID = "2.5.4.45"  # x509UniqueIdentifier
WORKLOAD = SpiffeId.parse("spiffe://example.org/web")
SVID = X509SvidTemplate(
    subject=(SubjectAttribute("2.5.4.6", "US"), SubjectAttribute("2.5.4.10", "SPIRE")),
    ttl=timedelta(hours=1),
)


class UniqueIdComposer:
    """Like SPIRE's uniqueid: adds a subject attribute derived from the SPIFFE ID."""

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    async def compose_server_x509_ca(self, template: X509CaTemplate) -> X509CaTemplate:
        return template

    async def compose_server_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return template

    async def compose_agent_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return template

    async def compose_workload_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        unique = SubjectAttribute(UNIQUE_ID_OID, str(len(str(spiffe_id))))
        return X509SvidTemplate(
            subject=(*template.subject, unique),
            ttl=template.ttl,
            dns_names=template.dns_names,
            extra_extensions=template.extra_extensions,
        )

    async def compose_workload_jwt_svid(
        self, spiffe_id: SpiffeId, claims: JwtSvidClaims
    ) -> JwtSvidClaims:
        return claims.with_claims({"groups": ["web", "prod"]})


class ShortLivedComposer(UniqueIdComposer):
    async def compose_workload_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return X509SvidTemplate(
            subject=template.subject, ttl=min(template.ttl, timedelta(minutes=5))
        )


def test_composer_is_a_credential_composer() -> None:
    assert isinstance(UniqueIdComposer(), CredentialComposer)


async def test_chain_applies_composers_in_order() -> None:
    composers = [UniqueIdComposer(), ShortLivedComposer()]
    result = await compose_chain(
        composers,
        SVID,
        lambda composer, template: composer.compose_workload_x509_svid(WORKLOAD, b"k", template),
    )
    assert result.ttl == timedelta(minutes=5)
    assert result.subject[-1] == SubjectAttribute(UNIQUE_ID_OID, "24")


async def test_no_opinion_keeps_the_template() -> None:
    result = await compose_chain(
        [UniqueIdComposer()],
        SVID,
        lambda composer, template: composer.compose_agent_x509_svid(WORKLOAD, b"k", template),
    )
    assert result is SVID
    assert await compose_chain([], SVID, lambda composer, template: template) is SVID  # type: ignore[arg-type,return-value]


async def test_chain_names_a_composer_returning_the_wrong_type() -> None:
    async def wrong(composer: object, template: X509SvidTemplate) -> X509SvidTemplate:
        return JwtSvidClaims()  # type: ignore[return-value]

    with pytest.raises(PluginError, match=r"credential composer #0 \(UniqueIdComposer\) returned"):
        await compose_chain([UniqueIdComposer()], SVID, wrong)


async def test_jwt_claims_compose_and_serialize() -> None:
    claims = await UniqueIdComposer().compose_workload_jwt_svid(WORKLOAD, JwtSvidClaims())
    assert claims.to_dict() == {"groups": ["web", "prod"]}
    assert json.loads(json.dumps(claims.to_dict())) == {"groups": ["web", "prod"]}
    assert claims == JwtSvidClaims({"groups": ("web", "prod")})
    assert hash(claims) == hash(JwtSvidClaims({"groups": ["web", "prod"]}))
    assert claims.without("groups") == JwtSvidClaims()


def test_jwt_claims_are_read_only() -> None:
    source: dict[str, Any] = {"team": {"name": "web", "ids": [1, 2]}}
    claims = JwtSvidClaims(source)
    source["team"]["name"] = "changed"
    assert claims.to_dict() == {"team": {"name": "web", "ids": [1, 2]}}
    with pytest.raises(TypeError):
        claims.claims["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(RESERVED_JWT_CLAIMS))
def test_jwt_claims_refuse_reserved_names(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"claim '{name}' is set by the host"):
        JwtSvidClaims({name: "x"})


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"n": float("nan")}, "claim n is nan"),
        ({"a": {"b": [1, {2: 3}]}}, r"claim a\.b\[1\] has a non-string key 2"),
        ({"s": {1, 2}}, "claim s is a set, which is not a JSON value"),
        ({"b": b"bytes"}, "claim b is a bytes"),
        ({"": 1}, "claim name '' must be a non-empty string"),
    ],
)
def test_jwt_claims_must_be_json(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        JwtSvidClaims(claims)


@pytest.mark.parametrize("oid", sorted(RESERVED_EXTENSION_OIDS))
def test_extensions_the_host_sets_are_refused(oid: str) -> None:
    with pytest.raises(InvalidArgumentError, match="is set by the host"):
        Extension(oid, False, b"\x30\x00")


@pytest.mark.parametrize("oid", ["", "1", "3.4", "1.2.03", "1..2", "1.2.x", " 1.2"])
def test_malformed_oids_are_refused(oid: str) -> None:
    with pytest.raises(InvalidArgumentError, match="not a dotted object identifier"):
        Extension(oid, False, b"\x05\x00")


def test_extension_needs_a_value_and_unique_oids() -> None:
    with pytest.raises(InvalidArgumentError, match="value must be non-empty DER"):
        Extension("1.2.3.4", False, b"")
    extension = Extension("1.2.3.4", True, b"\x05\x00")
    with pytest.raises(InvalidArgumentError, match=r"has oid '1\.2\.3\.4' twice"):
        X509SvidTemplate(subject=(), ttl=timedelta(hours=1), extra_extensions=(extension,) * 2)


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1)])
def test_templates_need_a_positive_ttl(ttl: timedelta) -> None:
    with pytest.raises(InvalidArgumentError, match="ttl must be a positive duration"):
        X509SvidTemplate(subject=(), ttl=ttl)
    with pytest.raises(InvalidArgumentError, match="ttl must be a positive duration"):
        X509CaTemplate(subject=(), ttl=ttl)


def test_ca_template_checks_policy_identifiers() -> None:
    template = X509CaTemplate(
        subject=(), ttl=timedelta(days=1), policy_identifiers=("2.5.29.32.0",)
    )
    assert template.policy_identifiers == ("2.5.29.32.0",)
    with pytest.raises(InvalidArgumentError, match="policy identifier 'any'"):
        X509CaTemplate(subject=(), ttl=timedelta(days=1), policy_identifiers=("any",))


@pytest.mark.parametrize("name", ["example.org", "*.example.org", "a-b.c_d.org", "localhost"])
def test_dns_names_accepted(name: str) -> None:
    assert X509SvidTemplate(subject=(), ttl=timedelta(hours=1), dns_names=(name,)).dns_names


@pytest.mark.parametrize("name", ["", "a..b", "*.*.org", "a.*.org", "-a.org", "a b.org", "x" * 254])
def test_dns_names_refused(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="dns name"):
        X509SvidTemplate(subject=(), ttl=timedelta(hours=1), dns_names=(name,))


def test_subject_attribute_needs_a_value() -> None:
    with pytest.raises(
        InvalidArgumentError, match=r"subject attribute '2\.5\.4\.3' value is empty"
    ):
        SubjectAttribute("2.5.4.3", "")


def test_hookspec_is_documented() -> None:
    hook = credential_composer.pyspire_credential_composers
    assert hasattr(hook, "pyspire_spec")
    assert hook.__doc__ and "chain" in hook.__doc__


async def test_chain_names_a_composer_by_its_configured_name() -> None:
    async def wrong(composer: object, template: X509SvidTemplate) -> X509SvidTemplate:
        return JwtSvidClaims()  # type: ignore[return-value]

    named = r'credential composer "uniqueid" #0 \(UniqueIdComposer\)'
    with pytest.raises(PluginError, match=named):
        await compose_chain([UniqueIdComposer()], SVID, wrong, names=["uniqueid"])
    with pytest.raises(ValueError, match="2 names given for 1 composers"):
        await compose_chain([UniqueIdComposer()], SVID, wrong, names=["a", "b"])
