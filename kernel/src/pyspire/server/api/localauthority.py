"""``spire.api.server.localauthority.v1.LocalAuthority``: forced rotation (admin callers).

An operator who fears a key was exposed prepares a new authority, activates it, taints the old
one (consumers replace what it signed: agents re-mint their SVIDs, the bundle marks it) and
finally revokes it (it leaves the bundle). The preconditions and messages are SPIRE's: only
the slot beside the active one is touched, only a prepared authority can be activated, only an
old one can be tainted, and only a tainted one revoked. X.509 authorities are named by the hex
subject key ID of their CA certificate, JWT authorities by their key ID, upstream authorities by
the subject key ID of the upstream root.

What SPIRE's ``NotifyTaintedX509Authority`` sets off follows from the bundle change itself: the
server mints its own SVID again from the active CA (``server/identity.py`` re-mints on every
bundle change), agents re-mint what chains to the tainted authority, and downstream servers
that follow this server's bundle replace a CA that chains to it (``server/upstream_bundle.py``).
"""

from __future__ import annotations

__all__ = ["LocalAuthorityService"]

from collections.abc import Callable

import structlog
from grpclib import GRPCError
from grpclib.const import Status

from pyspire.ca.manager import JwtSlot, X509Slot
from pyspire.ca.rotation import SlotStatus
from pyspire.ca.tainting import revoke_jwt_key, revoke_x509_ca, taint_jwt_key, taint_x509_ca
from pyspire.proto.gen.spire.api.server.localauthority import v1 as la_pb
from pyspire.server.context import ServerContext
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import PyspireError

_log = structlog.get_logger("pyspire.server.api.localauthority")

Slot = X509Slot | JwtSlot


def _state(slot: Slot) -> la_pb.AuthorityState:
    return la_pb.AuthorityState(
        authority_id=slot.authority_id,
        expires_at=int(slot.not_after.timestamp()),
        upstream_authority_subject_key_id=slot.upstream_authority_id,
    )


def _fail(status: Status, message: str, error: object = None) -> GRPCError:
    """SPIRE's error: the message, then the cause after a colon."""
    return GRPCError(status, message if error is None else f"{message}: {error}")


def _split(
    current: Slot | None, following: Slot | None
) -> tuple[la_pb.AuthorityState, la_pb.AuthorityState | None, la_pb.AuthorityState | None]:
    """Active, prepared and old states of a pair of slots, as the Get*AuthorityState calls
    answer them."""
    if current is None or current.status is not SlotStatus.ACTIVE:
        raise _fail(Status.UNAVAILABLE, "server is initializing")
    prepared = old = None
    if following is not None and following.status is SlotStatus.PREPARED:
        prepared = _state(following)
    elif following is not None and following.status is SlotStatus.OLD:
        old = _state(following)
    return _state(current), prepared, old


def _check_activation(authority_id: str, following: Slot | None) -> None:
    if not authority_id:
        raise _fail(Status.INVALID_ARGUMENT, "no authority ID provided")
    if following is None or authority_id != following.authority_id:
        raise _fail(Status.INVALID_ARGUMENT, "unexpected authority ID")
    if following.status is not SlotStatus.PREPARED:
        raise _fail(
            Status.INTERNAL,
            "only Prepared authorities can be activated",
            f"unsupported local authority status: {following.status.value.upper()}",
        )


def _check_taint(authority_id: str, current: Slot | None, following: Slot | None) -> Slot:
    if not authority_id:
        raise _fail(Status.INVALID_ARGUMENT, "no authority ID provided")
    if current is not None and authority_id == current.authority_id:
        raise _fail(Status.INVALID_ARGUMENT, "unable to taint current local authority")
    if following is None or authority_id != following.authority_id:
        raise _fail(Status.INVALID_ARGUMENT, "unexpected authority ID")
    if following.status is not SlotStatus.OLD:
        raise _fail(
            Status.INVALID_ARGUMENT,
            "only Old local authorities can be tainted",
            f"unsupported local authority status: {following.status.value.upper()}",
        )
    return following


class LocalAuthorityService(la_pb.LocalAuthorityBase):
    """``spire.api.server.localauthority.v1.LocalAuthority`` over a :class:`ServerContext`."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context

    async def _update(self, mutate: Callable[[Bundle | None], Bundle], failure: str) -> None:
        context = self._context
        try:
            await context.datastore.update_bundle(context.trust_domain, mutate)
        except PyspireError as error:
            raise _fail(Status.INTERNAL, failure, error) from None

    # -- JWT -------------------------------------------------------------------------------

    async def get_jwt_authority_state(
        self, get_jwt_authority_state_request: la_pb.GetJwtAuthorityStateRequest
    ) -> la_pb.GetJwtAuthorityStateResponse:
        ca = self._context.ca
        active, prepared, old = _split(ca.current_jwt(), ca.next_jwt())
        response = la_pb.GetJwtAuthorityStateResponse(active=active)
        if prepared is not None:
            response.prepared = prepared
        if old is not None:
            response.old = old
        return response

    async def prepare_jwt_authority(
        self, prepare_jwt_authority_request: la_pb.PrepareJwtAuthorityRequest
    ) -> la_pb.PrepareJwtAuthorityResponse:
        ca = self._context.ca
        if ca.current_jwt() is None:
            raise _fail(Status.UNAVAILABLE, "server is initializing")
        try:
            slot = await ca.prepare_jwt_now()
        except PyspireError as error:
            raise _fail(Status.INTERNAL, "failed to prepare JWT authority", error) from None
        _log.info("JWT authority prepared", local_authority_id=slot.authority_id)
        return la_pb.PrepareJwtAuthorityResponse(
            prepared_authority=la_pb.AuthorityState(
                authority_id=slot.authority_id, expires_at=int(slot.not_after.timestamp())
            )
        )

    async def activate_jwt_authority(
        self, activate_jwt_authority_request: la_pb.ActivateJwtAuthorityRequest
    ) -> la_pb.ActivateJwtAuthorityResponse:
        ca = self._context.ca
        _check_activation(activate_jwt_authority_request.authority_id, ca.next_jwt())
        slot = await ca.activate_jwt_now()
        _log.info("JWT authority activated", local_authority_id=slot.authority_id)
        return la_pb.ActivateJwtAuthorityResponse(
            activated_authority=la_pb.AuthorityState(
                authority_id=slot.authority_id, expires_at=int(slot.not_after.timestamp())
            )
        )

    async def taint_jwt_authority(
        self, taint_jwt_authority_request: la_pb.TaintJwtAuthorityRequest
    ) -> la_pb.TaintJwtAuthorityResponse:
        ca = self._context.ca
        authority_id = taint_jwt_authority_request.authority_id
        slot = _check_taint(authority_id, ca.current_jwt(), ca.next_jwt())
        await self._update(taint_jwt_key(slot.authority_id), "failed to taint JWT authority")
        _log.info("JWT authority tainted successfully", local_authority_id=authority_id)
        return la_pb.TaintJwtAuthorityResponse(
            tainted_authority=la_pb.AuthorityState(authority_id=slot.authority_id)
        )

    async def revoke_jwt_authority(
        self, revoke_jwt_authority_request: la_pb.RevokeJwtAuthorityRequest
    ) -> la_pb.RevokeJwtAuthorityResponse:
        authority_id = revoke_jwt_authority_request.authority_id
        problem = await self._jwt_revocation_problem(authority_id)
        if problem:
            raise _fail(Status.INVALID_ARGUMENT, "invalid authority ID", problem)
        await self._update(revoke_jwt_key(authority_id), "failed to revoke JWT authority")
        _log.info("JWT authority revoked successfully", local_authority_id=authority_id)
        return la_pb.RevokeJwtAuthorityResponse(
            revoked_authority=la_pb.AuthorityState(authority_id=authority_id)
        )

    async def _jwt_revocation_problem(self, authority_id: str) -> str:
        """Why ``authority_id`` cannot be revoked (empty when it can): the old slot's key, or
        any key of the bundle (another server's, or an earlier one of ours), but never the
        active or the prepared one."""
        context = self._context
        if not authority_id:
            return "no authority ID provided"
        following = context.ca.next_jwt()
        if following is not None and following.authority_id == authority_id:
            return "unable to use a prepared key" if following.status is SlotStatus.PREPARED else ""
        current = context.ca.current_jwt()
        if current is not None and current.authority_id == authority_id:
            return "unable to use current authority"
        bundle = await context.datastore.get_bundle(context.trust_domain)
        if bundle is not None and any(a.key_id == authority_id for a in bundle.jwt_authorities):
            return ""
        return "no JWT authority found with provided authority ID"

    # -- X.509 -----------------------------------------------------------------------------

    async def get_x509_authority_state(
        self, get_x509_authority_state_request: la_pb.GetX509AuthorityStateRequest
    ) -> la_pb.GetX509AuthorityStateResponse:
        ca = self._context.ca
        active, prepared, old = _split(ca.current_x509(), ca.next_x509())
        response = la_pb.GetX509AuthorityStateResponse(active=active)
        if prepared is not None:
            response.prepared = prepared
        if old is not None:
            response.old = old
        return response

    async def prepare_x509_authority(
        self, prepare_x509_authority_request: la_pb.PrepareX509AuthorityRequest
    ) -> la_pb.PrepareX509AuthorityResponse:
        ca = self._context.ca
        if ca.current_x509() is None:
            raise _fail(Status.UNAVAILABLE, "server is initializing")
        try:
            slot = await ca.prepare_x509_now()
        except PyspireError as error:
            raise _fail(Status.INTERNAL, "failed to prepare X.509 authority", error) from None
        _log.info("X.509 authority prepared", local_authority_id=slot.authority_id)
        return la_pb.PrepareX509AuthorityResponse(prepared_authority=_state(slot))

    async def activate_x509_authority(
        self, activate_x509_authority_request: la_pb.ActivateX509AuthorityRequest
    ) -> la_pb.ActivateX509AuthorityResponse:
        ca = self._context.ca
        _check_activation(activate_x509_authority_request.authority_id, ca.next_x509())
        slot = await ca.activate_x509_now()
        _log.info("X.509 authority activated", local_authority_id=slot.authority_id)
        return la_pb.ActivateX509AuthorityResponse(activated_authority=_state(slot))

    async def taint_x509_authority(
        self, taint_x509_authority_request: la_pb.TaintX509AuthorityRequest
    ) -> la_pb.TaintX509AuthorityResponse:
        ca = self._context.ca
        if ca.has_upstream:
            raise _fail(
                Status.FAILED_PRECONDITION,
                "local authority can't be tainted if there is an upstream authority",
            )
        authority_id = taint_x509_authority_request.authority_id
        slot = _check_taint(authority_id, ca.current_x509(), ca.next_x509())
        await self._update(taint_x509_ca(slot.authority_id), "failed to taint X.509 authority")
        _log.info("X.509 authority tainted successfully", local_authority_id=authority_id)
        return la_pb.TaintX509AuthorityResponse(tainted_authority=_state(slot))

    async def revoke_x509_authority(
        self, revoke_x509_authority_request: la_pb.RevokeX509AuthorityRequest
    ) -> la_pb.RevokeX509AuthorityResponse:
        ca = self._context.ca
        if ca.has_upstream:
            raise _fail(
                Status.FAILED_PRECONDITION,
                "local authority can't be revoked if there is an upstream authority",
            )
        authority_id = revoke_x509_authority_request.authority_id
        problem = _x509_revocation_problem(authority_id, ca.current_x509(), ca.next_x509())
        if problem:
            raise _fail(Status.INVALID_ARGUMENT, "invalid authority ID", problem)
        await self._update(revoke_x509_ca(authority_id), "failed to revoke X.509 authority")
        _log.info("X.509 authority revoked successfully", local_authority_id=authority_id)
        return la_pb.RevokeX509AuthorityResponse(
            revoked_authority=la_pb.AuthorityState(authority_id=authority_id)
        )

    # -- upstream --------------------------------------------------------------------------

    async def taint_x509_upstream_authority(
        self, taint_x509_upstream_authority_request: la_pb.TaintX509UpstreamAuthorityRequest
    ) -> la_pb.TaintX509UpstreamAuthorityResponse:
        subject_key_id = self._upstream_key_id(
            taint_x509_upstream_authority_request.subject_key_id,
            "provided subject key id is not valid",
        )
        await self._update(taint_x509_ca(subject_key_id), "failed to taint upstream authority")
        _log.info("X.509 upstream authority tainted successfully", subject_key_id=subject_key_id)
        return la_pb.TaintX509UpstreamAuthorityResponse(
            upstream_authority_subject_key_id=subject_key_id
        )

    async def revoke_x509_upstream_authority(
        self, revoke_x509_upstream_authority_request: la_pb.RevokeX509UpstreamAuthorityRequest
    ) -> la_pb.RevokeX509UpstreamAuthorityResponse:
        subject_key_id = self._upstream_key_id(
            revoke_x509_upstream_authority_request.subject_key_id, "invalid subject key ID"
        )
        await self._update(
            revoke_x509_ca(subject_key_id), "failed to revoke X.509 upstream authority"
        )
        _log.info("X.509 upstream authority successfully revoked", subject_key_id=subject_key_id)
        return la_pb.RevokeX509UpstreamAuthorityResponse(
            upstream_authority_subject_key_id=subject_key_id
        )

    def _upstream_key_id(self, requested: str, invalid: str) -> str:
        """The requested upstream subject key ID, lower-cased, once SPIRE's checks pass: an
        upstream authority is configured and the ID names the upstream CA that signed our old
        X.509 authority (never the one that signed the active one)."""
        ca = self._context.ca
        if not ca.has_upstream:
            raise _fail(Status.FAILED_PRECONDITION, "upstream authority is not configured")
        subject_key_id = requested.lower()
        current, following = ca.current_x509(), ca.next_x509()
        if not subject_key_id:
            problem = "no subject key ID provided"
        elif current is not None and subject_key_id == current.upstream_authority_id:
            problem = "unable to use upstream authority singing current authority"
        elif following is None or subject_key_id != following.upstream_authority_id:
            problem = "upstream authority didn't sign the old local authority"
        elif following.status is SlotStatus.PREPARED:
            problem = "only upstream authorities signing an old authority can be used"
        else:
            return subject_key_id
        raise _fail(Status.INVALID_ARGUMENT, invalid, problem)


def _x509_revocation_problem(
    authority_id: str, current: X509Slot | None, following: X509Slot | None
) -> str:
    """Why ``authority_id`` cannot be revoked (empty when it can): only the old slot's CA."""
    if not authority_id:
        return "no authority ID provided"
    if current is not None and authority_id == current.authority_id:
        return "unable to use current authority"
    if following is None or authority_id != following.authority_id:
        return "only Old local authority can be revoked"
    if following.status is not SlotStatus.OLD:
        return "only Old local authority can be revoked"
    return ""
