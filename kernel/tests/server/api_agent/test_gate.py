"""The TCP and local gates: who the caller is, and whether they may call the method."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.server.api.gate import TcpGate, local_gate, serial_hex
from pyspire.server.authorization import CallerKind
from pyspire.server.context import ServerContext
from pyspire.transport.calls import current_caller
from pyspire_sdk.errors import PermissionDeniedError
from pyspire_sdk.model import AttestedNode, RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock

from .conftest import make_key

ATTEST = "/spire.api.server.agent.v1.Agent/AttestAgent"
RENEW = "/spire.api.server.agent.v1.Agent/RenewAgent"
NEW_X509 = "/spire.api.server.svid.v1.SVID/BatchNewX509SVID"
MINT_X509 = "/spire.api.server.svid.v1.SVID/MintX509SVID"
DOWNSTREAM_CA = "/spire.api.server.svid.v1.SVID/NewDownstreamX509CA"
GET_FEDERATED = "/spire.api.server.bundle.v1.Bundle/GetFederatedBundle"
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/test/node-1")


async def svid_for(context: ServerContext, spiffe_id: SpiffeId, ttl: float = 3600) -> bytes:
    svid = await context.issuer.x509(spiffe_id, make_key().public_key(), ttl=timedelta(seconds=ttl))
    return svid.cert_chain[0]


async def attested(context: ServerContext, certificate_der: bytes, **fields: Any) -> AttestedNode:
    certificate = x509.load_der_x509_certificate(certificate_der)
    node = AttestedNode(
        spiffe_id=AGENT,
        attestation_type="test",
        x509_svid_serial_number=serial_hex(certificate),
        x509_svid_expires_at=certificate.not_valid_after_utc,
        **fields,
    )
    return await context.datastore.create_attested_node(node)


async def test_a_caller_without_a_certificate_is_anonymous(context: ServerContext) -> None:
    gate = TcpGate(context)
    who = await gate.identify(ATTEST, None, "10.1.2.3")
    assert who.kinds == frozenset({CallerKind.ANY})
    assert who.address == "10.1.2.3"
    with pytest.raises(PermissionDeniedError, match=rf"^caller is not authorized to call {RENEW}$"):
        await gate.identify(RENEW, None, "10.1.2.3")


async def test_unknown_methods_are_refused(context: ServerContext) -> None:
    admin = await svid_for(context, SpiffeId.parse("spiffe://example.org/ops"))
    with pytest.raises(PermissionDeniedError, match=r"not authorized to call /x.Y/Z$"):
        await TcpGate(context).identify("/x.Y/Z", admin, "")
    with pytest.raises(PermissionDeniedError, match=r"not authorized to call /x.Y/Z$"):
        await local_gate(context)("/x.Y/Z", _no_stream())


async def test_a_certificate_without_a_spiffe_id_is_refused(context: ServerContext) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "plain")])
    now = context.clock.now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(PermissionDeniedError, match=r"no URI SAN"):
        await TcpGate(context).identify(
            NEW_X509, certificate.public_bytes(serialization.Encoding.DER), ""
        )


async def test_an_attested_agent_with_its_current_svid_is_an_agent(
    context: ServerContext,
) -> None:
    der = await svid_for(context, AGENT)
    node = await attested(context, der)
    who = await TcpGate(context).identify(NEW_X509, der, "10.0.0.1")
    assert CallerKind.AGENT in who.kinds
    assert who.spiffe_id == AGENT
    assert who.node == node
    with pytest.raises(PermissionDeniedError, match=rf"not authorized to call {MINT_X509}$"):
        await TcpGate(context).identify(MINT_X509, der, "10.0.0.1")


async def test_agent_refusals_name_the_reason(
    context: ServerContext, fake_clock: FakeClock
) -> None:
    gate = TcpGate(context)
    der = await svid_for(context, AGENT, ttl=600)
    with pytest.raises(PermissionDeniedError, match=rf"^agent '{AGENT}' is not attested$"):
        await gate.identify(NEW_X509, der, "")

    await attested(context, der)
    other = await svid_for(context, AGENT)
    with pytest.raises(PermissionDeniedError, match=r"SVID is not active: expected serial number"):
        await gate.identify(NEW_X509, other, "")

    await fake_clock.advance(601)
    with pytest.raises(PermissionDeniedError, match=rf"^agent '{AGENT}' SVID is expired$"):
        await gate.identify(NEW_X509, der, "")


async def test_a_banned_agent_is_refused(context: ServerContext) -> None:
    der = await svid_for(context, AGENT)
    await attested(context, der, banned=True)
    with pytest.raises(PermissionDeniedError, match=r"is banned$"):
        await TcpGate(context).identify(NEW_X509, der, "")


async def test_agent_checks_are_skipped_for_methods_anyone_may_call(
    context: ServerContext,
) -> None:
    der = await svid_for(context, AGENT)  # never attested: evicted, say
    who = await TcpGate(context).identify(ATTEST, der, "")
    assert who.kinds == frozenset({CallerKind.ANY})
    assert who.spiffe_id == AGENT


async def test_a_record_changed_by_another_server_is_read_again(
    context: ServerContext,
) -> None:
    first = await svid_for(context, AGENT)
    node = await attested(context, first)
    gate = TcpGate(context)
    await gate.identify(NEW_X509, first, "")  # remembered now
    second = await svid_for(context, AGENT)
    # Another server renewed the agent and it started using the new SVID.
    await context.datastore.update_attested_node(
        dataclasses.replace(
            node, x509_svid_serial_number=serial_hex(x509.load_der_x509_certificate(second))
        )
    )
    who = await gate.identify(NEW_X509, second, "")
    assert CallerKind.AGENT in who.kinds


async def test_admins_by_configuration_and_by_entry(context: ServerContext) -> None:
    gate = TcpGate(context)
    configured = await svid_for(context, SpiffeId.parse("spiffe://example.org/ops"))
    who = await gate.identify(MINT_X509, configured, "")
    assert CallerKind.ADMIN in who.kinds

    workload = SpiffeId.parse("spiffe://example.org/tools/admin")
    der = await svid_for(context, workload)
    with pytest.raises(PermissionDeniedError, match=r"not authorized"):
        await gate.identify(MINT_X509, der, "")
    await context.datastore.create_entry(
        RegistrationEntry(
            spiffe_id=workload,
            parent_id=AGENT,
            selectors=(Selector("unix", "uid:0"),),
            admin=True,
        )
    )
    await context.registry.refresh()
    who = await gate.identify(MINT_X509, der, "")
    assert who.kinds >= {CallerKind.ADMIN}
    who = await gate.identify(GET_FEDERATED, der, "")
    assert CallerKind.ADMIN in who.kinds


async def test_downstream_by_entry_and_expired_entries_do_not_count(
    context: ServerContext, fake_clock: FakeClock
) -> None:
    gate = TcpGate(context)
    workload = SpiffeId.parse("spiffe://example.org/downstream")
    der = await svid_for(context, workload, ttl=7200)
    await context.datastore.create_entry(
        RegistrationEntry(
            spiffe_id=workload,
            parent_id=AGENT,
            selectors=(Selector("unix", "uid:1"),),
            downstream=True,
            expires_at=fake_clock.now() + timedelta(hours=1),
        )
    )
    await context.registry.refresh()
    who = await gate.identify(DOWNSTREAM_CA, der, "")
    assert who.kinds == frozenset({CallerKind.ANY, CallerKind.DOWNSTREAM})
    with pytest.raises(PermissionDeniedError, match=r"not authorized"):
        await gate.identify(MINT_X509, der, "")
    await fake_clock.advance(timedelta(hours=1, seconds=1))
    with pytest.raises(PermissionDeniedError, match=r"not authorized"):
        await gate.identify(DOWNSTREAM_CA, der, "")


class _Stream:
    peer = None


def _no_stream() -> Any:
    return _Stream()


async def test_local_gate_marks_every_caller_local(context: ServerContext) -> None:
    gate = local_gate(context)
    await gate("/spire.api.server.agent.v1.Agent/ListAgents", _no_stream())
    who = current_caller()
    assert getattr(who, "kinds", None) == frozenset({CallerKind.LOCAL})
    with pytest.raises(PermissionDeniedError, match=r"not authorized"):
        await gate(RENEW, _no_stream())
