"""The issuer asks the composer method of each kind of SVID it signs, passes the entry's TTL and
DNS names through the chain, fails only the items a composer refuses, and lets composers decide
a JWT-SVID's extra claims."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyspire.ca.composition import CredentialComposition
from pyspire.ca.x509svid import CheckedKey
from pyspire.catalog import NamedPlugin
from pyspire.server.context import ServerContext
from pyspire.server.issuer import IssuancePolicy, SvidIssuer
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry, X509Svid
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.credential_composer import (
    CredentialComposer,
    JwtSvidClaims,
    SubjectAttribute,
    X509CaTemplate,
    X509SvidTemplate,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId

AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/test/node")
REFUSED = SpiffeId.parse("spiffe://example.org/refused")


class KindComposer:
    """Marks each X509-SVID with ``OU=<method>``, refuses ``REFUSED``, and sets JWT claims."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, X509SvidTemplate]] = []

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    def _mark(self, kind: str, spiffe_id: SpiffeId, template: X509SvidTemplate) -> X509SvidTemplate:
        if spiffe_id == REFUSED:
            raise InvalidArgumentError("this workload may not have an SVID")
        self.seen.append((kind, template))
        return replace(template, subject=(*template.subject, SubjectAttribute("2.5.4.11", kind)))

    async def compose_server_x509_ca(self, template: X509CaTemplate) -> X509CaTemplate:
        return template

    async def compose_server_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return self._mark("server", spiffe_id, template)

    async def compose_agent_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return self._mark("agent", spiffe_id, template)

    async def compose_workload_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return self._mark("workload", spiffe_id, template)

    async def compose_workload_jwt_svid(
        self, spiffe_id: SpiffeId, claims: JwtSvidClaims
    ) -> JwtSvidClaims:
        issuer = claims.claims.get("iss")
        return claims.with_claims({"tenant": "blue", "iss": f"{issuer}/composed"})


def issuer_for(context: ServerContext, composer: KindComposer, jwt_issuer: str = "") -> SvidIssuer:
    named: list[NamedPlugin[CredentialComposer]] = [NamedPlugin("kinds", composer)]
    return SvidIssuer(
        ca=context.ca,
        clock=context.clock,
        policy=IssuancePolicy(jwt_issuer=jwt_issuer),
        composition=CredentialComposition(named),
    )


def unit(svid: X509Svid) -> str:
    leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
    [attribute] = leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(attribute.value)


def key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


def entry(path: str, **fields: Any) -> RegistrationEntry:
    return RegistrationEntry(
        id=path.strip("/"),
        spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
        parent_id=AGENT,
        selectors=(Selector("unix", "uid:1"),),
        **fields,
    )


async def test_agent_and_workload_svids_ask_their_own_methods(
    server_context: ServerContext,
) -> None:
    composer = KindComposer()
    issuer = issuer_for(server_context, composer)
    assert unit(await issuer.agent_x509(AGENT, key())) == "agent"
    minted = await issuer.x509(SpiffeId.parse("spiffe://example.org/minted"), key())
    assert unit(minted) == "workload"
    web = entry("/web", x509_svid_ttl=600, dns_names=("web.example.org",))
    assert unit(await issuer.workload_x509(web, key())) == "workload"
    _, template = composer.seen[-1]
    assert template.ttl == timedelta(seconds=600)
    assert template.dns_names == ("web.example.org",)
    assert composer.seen[0][1].ttl == issuer.policy.agent_ttl


async def test_a_refused_item_fails_alone_in_a_batch(server_context: ServerContext) -> None:
    issuer = issuer_for(server_context, KindComposer())
    refused = replace(entry("/web"), spiffe_id=REFUSED)
    results = await issuer.workload_x509_batch(
        [
            (entry("/a"), CheckedKey.of(key())),
            (refused, CheckedKey.of(key())),
            (entry("/b"), CheckedKey.of(key())),
        ]
    )
    first, failed, last = results
    assert isinstance(first, X509Svid) and unit(first) == "workload"
    assert isinstance(last, X509Svid) and str(last.spiffe_id) == "spiffe://example.org/b"
    assert isinstance(failed, InvalidArgumentError)
    assert str(failed) == (
        'credential composer "kinds" refused: this workload may not have an SVID'
    )


async def test_composers_decide_the_extra_claims_of_a_jwt_svid(
    server_context: ServerContext,
) -> None:
    issuer = issuer_for(server_context, KindComposer(), jwt_issuer="https://issuer.example.org")
    svid = await issuer.workload_jwt(entry("/web"), ["db"])
    payload = svid.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["tenant"] == "blue"
    assert claims["iss"] == "https://issuer.example.org/composed"
    assert claims["sub"] == "spiffe://example.org/web" and claims["aud"] == ["db"]
