"""The LocalAuthority API: SPIRE's preconditions and messages for forced rotation, and what
tainting and revoking do to the bundle."""

from __future__ import annotations

import betterproto
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib import GRPCError
from grpclib.const import Status

from pyspire.ca.tainting import subject_key_id
from pyspire.proto.gen.spire.api.server.localauthority import v1 as la_pb
from pyspire.server.api.localauthority import LocalAuthorityService
from pyspire.server.context import ServerContext
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.jwt import SUPPORTED_ALGORITHMS, parse_jwt
from pyspire_sdk.spiffeid import SpiffeId


async def _bundle(context: ServerContext) -> Bundle:
    bundle = await context.datastore.get_bundle(context.trust_domain)
    assert bundle is not None
    return bundle


async def _refused(call: object, status: Status, message: str) -> None:
    with pytest.raises(GRPCError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.status is status
    assert raised.value.message == message


async def test_x509_prepare_activate_taint_revoke(server_context: ServerContext) -> None:
    service = LocalAuthorityService(server_context)
    first = (await service.get_x509_authority_state(la_pb.GetX509AuthorityStateRequest())).active
    assert first.authority_id == server_context.ca.x509_ca.authority_id
    assert subject_key_id(server_context.ca.x509_ca.der) == first.authority_id

    prepared = (
        await service.prepare_x509_authority(la_pb.PrepareX509AuthorityRequest())
    ).prepared_authority
    state = await service.get_x509_authority_state(la_pb.GetX509AuthorityStateRequest())
    assert state.prepared == prepared
    assert not betterproto.serialized_on_wire(state.old)
    assert len((await _bundle(server_context)).x509_authorities) == 2

    await _refused(
        service.taint_x509_authority(la_pb.TaintX509AuthorityRequest(prepared.authority_id)),
        Status.INVALID_ARGUMENT,
        "only Old local authorities can be tainted: unsupported local authority status: PREPARED",
    )
    await _refused(
        service.activate_x509_authority(la_pb.ActivateX509AuthorityRequest("00ff")),
        Status.INVALID_ARGUMENT,
        "unexpected authority ID",
    )
    await _refused(
        service.activate_x509_authority(la_pb.ActivateX509AuthorityRequest()),
        Status.INVALID_ARGUMENT,
        "no authority ID provided",
    )
    activated = await service.activate_x509_authority(
        la_pb.ActivateX509AuthorityRequest(prepared.authority_id)
    )
    assert activated.activated_authority == prepared
    assert server_context.ca.x509_ca.authority_id == prepared.authority_id
    state = await service.get_x509_authority_state(la_pb.GetX509AuthorityStateRequest())
    assert state.old == first
    assert not betterproto.serialized_on_wire(state.prepared)

    await _refused(
        service.taint_x509_authority(la_pb.TaintX509AuthorityRequest(prepared.authority_id)),
        Status.INVALID_ARGUMENT,
        "unable to taint current local authority",
    )
    await _refused(
        service.revoke_x509_authority(la_pb.RevokeX509AuthorityRequest(first.authority_id)),
        Status.INTERNAL,
        "failed to revoke X.509 authority: it is not possible to revoke an untainted root CA",
    )
    tainted = await service.taint_x509_authority(
        la_pb.TaintX509AuthorityRequest(first.authority_id)
    )
    assert tainted.tainted_authority == first
    marks = {
        subject_key_id(a.der): a.tainted for a in (await _bundle(server_context)).x509_authorities
    }
    assert marks == {first.authority_id: True, prepared.authority_id: False}
    await server_context.ca.rotate()  # the schedule never brings a tainted CA back
    svid = await server_context.issuer.x509(
        SpiffeId.parse("spiffe://example.org/workload"),
        ec.generate_private_key(ec.SECP256R1()).public_key(),
    )
    issued = x509.load_der_x509_certificate(svid.cert_chain[0])
    aki = issued.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert (aki.key_identifier or b"").hex() == prepared.authority_id
    await _refused(
        service.taint_x509_authority(la_pb.TaintX509AuthorityRequest(first.authority_id)),
        Status.INTERNAL,
        "failed to taint X.509 authority: root CA is already tainted",
    )

    revoked = await service.revoke_x509_authority(
        la_pb.RevokeX509AuthorityRequest(first.authority_id)
    )
    assert revoked.revoked_authority.authority_id == first.authority_id
    left = (await _bundle(server_context)).x509_authorities
    assert [subject_key_id(a.der) for a in left] == [prepared.authority_id]
    await _refused(
        service.revoke_x509_authority(la_pb.RevokeX509AuthorityRequest(prepared.authority_id)),
        Status.INVALID_ARGUMENT,
        "invalid authority ID: unable to use current authority",
    )


async def test_jwt_prepare_activate_taint_revoke(server_context: ServerContext) -> None:
    service = LocalAuthorityService(server_context)
    first = (await service.get_jwt_authority_state(la_pb.GetJwtAuthorityStateRequest())).active
    prepared = (
        await service.prepare_jwt_authority(la_pb.PrepareJwtAuthorityRequest())
    ).prepared_authority
    await _refused(
        service.revoke_jwt_authority(la_pb.RevokeJwtAuthorityRequest(prepared.authority_id)),
        Status.INVALID_ARGUMENT,
        "invalid authority ID: unable to use a prepared key",
    )
    await service.activate_jwt_authority(la_pb.ActivateJwtAuthorityRequest(prepared.authority_id))
    assert server_context.ca.jwt_key.kid == prepared.authority_id
    await _refused(
        service.revoke_jwt_authority(la_pb.RevokeJwtAuthorityRequest(first.authority_id)),
        Status.INTERNAL,
        "failed to revoke JWT authority: it is not possible to revoke an untainted key",
    )
    await _refused(
        service.revoke_jwt_authority(la_pb.RevokeJwtAuthorityRequest("nope")),
        Status.INVALID_ARGUMENT,
        "invalid authority ID: no JWT authority found with provided authority ID",
    )
    await service.taint_jwt_authority(la_pb.TaintJwtAuthorityRequest(first.authority_id))
    marks = {a.key_id: a.tainted for a in (await _bundle(server_context)).jwt_authorities}
    assert marks == {first.authority_id: True, prepared.authority_id: False}
    await server_context.ca.rotate()  # the schedule never brings a tainted key back
    token = await server_context.issuer.jwt(SpiffeId.parse("spiffe://example.org/w"), ["aud"])
    header = parse_jwt(token.token, algorithms=SUPPORTED_ALGORITHMS)
    assert header.key_id == prepared.authority_id
    await service.revoke_jwt_authority(la_pb.RevokeJwtAuthorityRequest(first.authority_id))
    kids = [a.key_id for a in (await _bundle(server_context)).jwt_authorities]
    assert kids == [prepared.authority_id]


async def test_upstream_calls_need_an_upstream_authority(server_context: ServerContext) -> None:
    service = LocalAuthorityService(server_context)
    await _refused(
        service.taint_x509_upstream_authority(la_pb.TaintX509UpstreamAuthorityRequest("ab")),
        Status.FAILED_PRECONDITION,
        "upstream authority is not configured",
    )
    await _refused(
        service.revoke_x509_upstream_authority(la_pb.RevokeX509UpstreamAuthorityRequest("ab")),
        Status.FAILED_PRECONDITION,
        "upstream authority is not configured",
    )
