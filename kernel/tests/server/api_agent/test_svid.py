"""The SVID service: agents' batch X.509 and JWT signing, admin minting, downstream CAs."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from pyspire.proto.gen.codec import spire_api_server_svid_v1 as svid_wire
from pyspire.proto.gen.codec import spire_api_types as types_wire
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.proto.messages import EncodedMessage
from pyspire.server.api.agent import AgentService
from pyspire.server.api.svid import MAX_BATCH_PARAMS, SvidService
from pyspire.server.authorization import CallerKind
from pyspire.server.context import ServerContext
from pyspire_sdk.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugins.datastore import DataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock

from .conftest import (
    as_agent,
    attest,
    caller,
    corrupt_signature,
    leaf,
    make_csr,
    make_key,
    params,
    verify_chain,
)

AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/tok-1")
OTHER_AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/other")


class CountingDataStore:
    """Forwards to a datastore and counts the calls made through it."""

    def __init__(self, inner: DataStore) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if callable(attribute):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return attribute(*args, **kwargs)

            return counted
        return attribute


def results_of(response: EncodedMessage[svid_wire.BatchNewX509SVIDResponse]) -> list[Any]:
    """The results of an encoded response, decoded."""
    return list(response.decode().results)


async def attested_agent(context: ServerContext, value: str = "tok-1", **request: Any) -> bytes:
    """Attest an agent with a fresh join token; return its SVID leaf (DER)."""
    service = AgentService(context, attestation_rate_limit=False)
    caller(CallerKind.LOCAL)
    await service.create_join_token(agent_pb.CreateJoinTokenRequest(ttl=60, token=value, **request))
    caller(CallerKind.ANY)
    responses = await attest(service, params("join_token", value.encode(), make_csr()))
    return bytes(responses[-1].result.svid.cert_chain[0])


async def entry(context: ServerContext, path: str, parent: SpiffeId, **fields: Any) -> str:
    stored = await context.datastore.create_entry(
        RegistrationEntry(
            spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
            parent_id=parent,
            selectors=(Selector("unix", f"uid:{len(path)}"),),
            **fields,
        )
    )
    return stored.id


async def roots(context: ServerContext) -> list[bytes]:
    bundle = await context.datastore.get_bundle(context.trust_domain)
    assert bundle is not None
    return [authority.der for authority in bundle.x509_authorities]


def uri_and_dns(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        san.get_values_for_type(x509.UniformResourceIdentifier),
        san.get_values_for_type(x509.DNSName),
    )


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


# -- BatchNewX509SVID -------------------------------------------------------------------------


async def test_batch_new_x509_svid_signs_what_the_entries_say(context: ServerContext) -> None:
    agent_svid = await attested_agent(context)
    web = await entry(context, "/web", AGENT, dns_names=("web.example.org",), x509_svid_ttl=600)
    db = await entry(context, "/db", AGENT, hint="database")
    await context.registry.refresh()
    await as_agent(context, agent_svid)

    key = make_key()
    response = await SvidService(context).sign_x509_batch(
        svid_wire.BatchNewX509SVIDRequest(
            params=[
                svid_wire.NewX509SVIDParams(
                    entry_id=web, csr=make_csr(key, uris=["spiffe://example.org/evil"])
                ),
                svid_wire.NewX509SVIDParams(entry_id=db, csr=make_csr()),
            ]
        )
    )
    first, second = results_of(response)
    assert (first.status.code, second.status.code) == (0, 0)
    certificate = leaf(first.svid.cert_chain)
    assert uri_and_dns(certificate) == (["spiffe://example.org/web"], ["web.example.org"])
    assert certificate.public_key() == key.public_key()
    lifetime = certificate.not_valid_after_utc - context.clock.now()
    assert lifetime == timedelta(seconds=600)
    assert first.svid.id == types_wire.SPIFFEID(trust_domain="example.org", path="/web")
    assert second.svid.hint == "database"
    verify_chain(first.svid.cert_chain, await roots(context))
    verify_chain(second.svid.cert_chain, await roots(context))


async def test_batch_items_fail_alone_with_spire_statuses(context: ServerContext) -> None:
    agent_svid = await attested_agent(context)
    mine = await entry(context, "/mine", AGENT)
    theirs = await entry(context, "/theirs", OTHER_AGENT)
    await context.registry.refresh()
    await as_agent(context, agent_svid)

    response = await SvidService(context).sign_x509_batch(
        svid_wire.BatchNewX509SVIDRequest(
            params=[
                svid_wire.NewX509SVIDParams(csr=make_csr()),
                svid_wire.NewX509SVIDParams(entry_id=mine),
                svid_wire.NewX509SVIDParams(entry_id=mine, csr=b"\x30\x03junk"),
                svid_wire.NewX509SVIDParams(entry_id=mine, csr=corrupt_signature(make_csr())),
                svid_wire.NewX509SVIDParams(entry_id="no-such-entry", csr=make_csr()),
                svid_wire.NewX509SVIDParams(entry_id=theirs, csr=make_csr()),
                svid_wire.NewX509SVIDParams(entry_id=mine, csr=make_csr()),
            ]
        )
    )
    statuses = [(r.status.code, r.status.message.split(":")[0]) for r in results_of(response)]
    assert statuses == [
        (3, "missing entry ID"),
        (3, "missing CSR"),
        (3, "malformed CSR"),
        (3, "invalid CSR signature"),
        (5, "entry not found or not authorized"),
        (5, "entry not found or not authorized"),
        (0, "OK"),
    ]
    assert [bool(r.svid and r.svid.cert_chain) for r in results_of(response)] == [False] * 6 + [
        True
    ]


async def test_batch_size_is_bounded(context: ServerContext) -> None:
    agent_svid = await attested_agent(context)
    await as_agent(context, agent_svid)
    service = SvidService(context)
    with pytest.raises(InvalidArgumentError, match=r"^missing params"):
        await service.sign_x509_batch(svid_wire.BatchNewX509SVIDRequest())
    too_many = [svid_wire.NewX509SVIDParams(entry_id="e", csr=b"x")] * (MAX_BATCH_PARAMS + 1)
    with pytest.raises(InvalidArgumentError, match=r"^invalid params: 501 given, at most 500"):
        await service.sign_x509_batch(svid_wire.BatchNewX509SVIDRequest(params=too_many))


async def test_signing_makes_no_datastore_round_trip(context: ServerContext) -> None:
    agent_svid = await attested_agent(context)
    web = await entry(context, "/web", AGENT)
    await context.registry.refresh()
    await as_agent(context, agent_svid)
    counting = CountingDataStore(context.datastore)
    service = SvidService(dataclasses.replace(context, datastore=counting))
    response = await service.sign_x509_batch(
        svid_wire.BatchNewX509SVIDRequest(
            params=[svid_wire.NewX509SVIDParams(entry_id=web, csr=make_csr())]
        )
    )
    assert results_of(response)[0].status.code == 0
    jwt = await service.new_jwtsvid(svid_pb.NewJwtsvidRequest(entry_id=web, audience=["a"]))
    assert jwt.svid.token
    assert counting.calls == []


async def test_entries_reached_through_a_join_token_alias(context: ServerContext) -> None:
    agent_svid = await attested_agent(
        context, agent_id=pb.Spiffeid(trust_domain="example.org", path="/nodes/edge")
    )
    child = await entry(context, "/edge/app", SpiffeId.parse("spiffe://example.org/nodes/edge"))
    await context.registry.refresh()
    await as_agent(context, agent_svid)
    response = await SvidService(context).sign_x509_batch(
        svid_wire.BatchNewX509SVIDRequest(
            params=[svid_wire.NewX509SVIDParams(entry_id=child, csr=make_csr())]
        )
    )
    assert results_of(response)[0].status.code == 0


async def test_only_agents_may_sign_entries(context: ServerContext) -> None:
    caller(CallerKind.ADMIN, spiffe_id=SpiffeId.parse("spiffe://example.org/ops"))
    with pytest.raises(PermissionDeniedError, match=r"^caller is not an attested agent$"):
        await SvidService(context).sign_x509_batch(
            svid_wire.BatchNewX509SVIDRequest(params=[svid_wire.NewX509SVIDParams(entry_id="e")])
        )


# -- NewJWTSVID -------------------------------------------------------------------------------


async def test_new_jwt_svid(context: ServerContext) -> None:
    agent_svid = await attested_agent(context)
    web = await entry(context, "/web", AGENT, jwt_svid_ttl=120, hint="h")
    theirs = await entry(context, "/theirs", OTHER_AGENT)
    await context.registry.refresh()
    await as_agent(context, agent_svid)
    service = SvidService(context)

    response = await service.new_jwtsvid(
        svid_pb.NewJwtsvidRequest(entry_id=web, audience=["a", "b"])
    )
    body = claims(response.svid.token)
    assert body["sub"] == "spiffe://example.org/web"
    assert body["aud"] == ["a", "b"]
    assert body["exp"] - body["iat"] == 120
    assert response.svid.hint == "h"
    assert response.svid.expires_at == body["exp"]

    with pytest.raises(InvalidArgumentError, match=r"at least one audience is required"):
        await service.new_jwtsvid(svid_pb.NewJwtsvidRequest(entry_id=web))
    with pytest.raises(InvalidArgumentError, match=r"^invalid audience\[1\]"):
        await service.new_jwtsvid(svid_pb.NewJwtsvidRequest(entry_id=web, audience=["a", ""]))
    with pytest.raises(InvalidArgumentError, match=r"^missing entry ID$"):
        await service.new_jwtsvid(svid_pb.NewJwtsvidRequest(audience=["a"]))
    with pytest.raises(NotFoundError, match=r"^entry not found or not authorized$"):
        await service.new_jwtsvid(svid_pb.NewJwtsvidRequest(entry_id=theirs, audience=["a"]))


# -- MintX509SVID and MintJWTSVID -------------------------------------------------------------


async def test_mint_x509_svid_takes_the_id_and_dns_names_from_the_csr(
    context: ServerContext,
) -> None:
    caller(CallerKind.LOCAL)
    response = await SvidService(context).mint_x509_svid(
        svid_pb.MintX509SvidRequest(
            csr=make_csr(uris=["spiffe://example.org/minted"], dns=["a.example.org"]), ttl=120
        )
    )
    certificate = leaf(response.svid.cert_chain)
    assert uri_and_dns(certificate) == (["spiffe://example.org/minted"], ["a.example.org"])
    assert certificate.not_valid_after_utc - context.clock.now() == timedelta(seconds=120)
    verify_chain(response.svid.cert_chain, await roots(context))

    default = await SvidService(context).mint_x509_svid(
        svid_pb.MintX509SvidRequest(csr=make_csr(uris=["spiffe://example.org/minted"]))
    )
    lifetime = leaf(default.svid.cert_chain).not_valid_after_utc - context.clock.now()
    assert lifetime == context.issuer.policy.default_x509_svid_ttl


@pytest.mark.parametrize(
    ("csr", "ttl", "message"),
    [
        (b"", 0, "^missing CSR$"),
        (b"garbage", 0, "^malformed CSR"),
        (corrupt_signature(make_csr(uris=["spiffe://example.org/a"])), 0, "^invalid CSR signature"),
        (make_csr(), 0, "a URI SAN is required"),
        (make_csr(dns=["a.example.org"]), 0, "a URI SAN is required"),
        (
            make_csr(uris=["spiffe://example.org/a", "spiffe://example.org/b"]),
            0,
            "one URI SAN expected, found 2",
        ),
        (make_csr(uris=["https://example.org/a"]), 0, "not a valid SPIFFE ID"),
        (make_csr(uris=["spiffe://other.org/a"]), 0, "not in trust domain 'example.org'"),
        (make_csr(uris=["spiffe://example.org"]), 0, "has no path"),
        (make_csr(uris=["spiffe://example.org/a"], dns=["bad_name!"]), 0, "invalid CSR DNS SAN"),
        (make_csr(uris=["spiffe://example.org/a"]), -1, "^invalid ttl: -1 is negative$"),
    ],
)
async def test_mint_x509_svid_rejects_bad_input(
    context: ServerContext, csr: bytes, ttl: int, message: str
) -> None:
    caller(CallerKind.LOCAL)
    with pytest.raises(InvalidArgumentError, match=message):
        await SvidService(context).mint_x509_svid(svid_pb.MintX509SvidRequest(csr=csr, ttl=ttl))


async def test_mint_jwt_svid(context: ServerContext) -> None:
    caller(CallerKind.LOCAL)
    service = SvidService(context)
    response = await service.mint_jwtsvid(
        svid_pb.MintJwtsvidRequest(
            id=pb.Spiffeid(trust_domain="example.org", path="/jwt"), audience=["x"], ttl=60
        )
    )
    body = claims(response.svid.token)
    assert (body["sub"], body["aud"], body["exp"] - body["iat"]) == (
        "spiffe://example.org/jwt",
        ["x"],
        60,
    )
    with pytest.raises(InvalidArgumentError, match=r"^invalid id: trust domain is missing"):
        await service.mint_jwtsvid(svid_pb.MintJwtsvidRequest(audience=["x"]))
    with pytest.raises(InvalidArgumentError, match=r"not in trust domain"):
        await service.mint_jwtsvid(
            svid_pb.MintJwtsvidRequest(
                id=pb.Spiffeid(trust_domain="other.org", path="/jwt"), audience=["x"]
            )
        )
    with pytest.raises(InvalidArgumentError, match=r"at least one audience"):
        await service.mint_jwtsvid(
            svid_pb.MintJwtsvidRequest(id=pb.Spiffeid(trust_domain="example.org", path="/jwt"))
        )
    with pytest.raises(InvalidArgumentError, match=r"^invalid ttl"):
        await service.mint_jwtsvid(
            svid_pb.MintJwtsvidRequest(
                id=pb.Spiffeid(trust_domain="example.org", path="/jwt"), audience=["x"], ttl=-3
            )
        )


# -- NewDownstreamX509CA ----------------------------------------------------------------------


async def test_new_downstream_x509_ca(context: ServerContext, fake_clock: FakeClock) -> None:
    downstream = SpiffeId.parse("spiffe://example.org/downstream")
    await entry(context, "/downstream", AGENT, downstream=True, x509_svid_ttl=3600)
    await context.registry.refresh()
    caller(CallerKind.DOWNSTREAM, spiffe_id=downstream)
    key = make_key()
    response = await SvidService(context).new_downstream_x509_ca(
        svid_pb.NewDownstreamX509CaRequest(csr=make_csr(key))
    )
    ca = x509.load_der_x509_certificate(response.ca_cert_chain[0])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.public_key() == key.public_key()
    assert ca.not_valid_after_utc - fake_clock.now() == timedelta(hours=1)
    assert uri_and_dns(ca)[0] == ["spiffe://example.org"]
    assert list(response.x509_authorities) == await roots(context)
    verify_chain_ca(list(response.ca_cert_chain), list(response.x509_authorities))

    preferred = await SvidService(context).new_downstream_x509_ca(
        svid_pb.NewDownstreamX509CaRequest(csr=make_csr(key), preferred_ttl=600)
    )
    lifetime = x509.load_der_x509_certificate(preferred.ca_cert_chain[0]).not_valid_after_utc
    assert lifetime - fake_clock.now() == timedelta(seconds=600)

    with pytest.raises(InvalidArgumentError, match=r"^malformed CSR"):
        await SvidService(context).new_downstream_x509_ca(
            svid_pb.NewDownstreamX509CaRequest(csr=b"junk")
        )
    caller(CallerKind.DOWNSTREAM, spiffe_id=SpiffeId.parse("spiffe://example.org/not-anymore"))
    with pytest.raises(PermissionDeniedError, match=r"^caller is not a downstream server$"):
        await SvidService(context).new_downstream_x509_ca(
            svid_pb.NewDownstreamX509CaRequest(csr=make_csr(key))
        )


def verify_chain_ca(chain: list[bytes], roots_der: list[bytes]) -> None:
    """Raise unless the downstream CA (``chain[0]``) is signed directly by one of our roots."""
    ca = x509.load_der_x509_certificate(chain[0])
    for der in roots_der:
        try:
            ca.verify_directly_issued_by(x509.load_der_x509_certificate(der))
        except (ValueError, TypeError, InvalidSignature):
            continue
        return
    raise AssertionError("the downstream CA is not signed by any root")
