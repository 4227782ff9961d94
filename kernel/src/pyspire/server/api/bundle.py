"""``spire.api.server.bundle.v1.Bundle``: our trust bundle and the federated ones.

Anyone may read our bundle (GetBundle); admins manage federated bundles and may append
authorities to ours; agents read the federated bundles their entries need; downstream servers
publish their JWT keys into our bundle. Our own trust domain is never managed through the
federated-bundle calls, so an operator cannot replace or delete the bundle the CA maintains by
mistake.

Every batch item gets its own status; a failed item changes nothing and does not stop the
others.
"""

from __future__ import annotations

__all__ = ["BundleService", "apply_bundle_mask", "encode_bundle"]

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import betterproto
import grpclib.const
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.proto.convert import bundle_from_proto, bundle_to_proto, from_timestamp
from pyspire.proto.gen.codec import spire_api_types as types_wire
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.messages import EncodedMessage, unary_route
from pyspire.registry.validation import validate_text
from pyspire.server.api.bundle_answers import BundleAnswers
from pyspire.server.api.own_bundle import OwnBundleReply
from pyspire.server.context import ServerContext
from pyspire.transport.calls import status_for
from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import InvalidArgumentError, NotFoundError, PyspireError
from pyspire_sdk.limits import MAX_JWT_KEY_ID_BYTES, MAX_SEQUENCE_NUMBER
from pyspire_sdk.plugins.datastore import BundleDeleteMode, FailedPreconditionError, Page
from pyspire_sdk.spiffeid import TrustDomain

_OK = pb.Status(code=0, message="OK")
_FAILED_PRECONDITION = 9

_log = structlog.get_logger("pyspire.server.api.bundle")


def apply_bundle_mask(bundle: pb.Bundle, mask: pb.BundleMask | None) -> pb.Bundle:
    """Clear the fields ``mask`` leaves out (the trust domain is always kept); ``None`` keeps
    all."""
    if mask is None:
        return bundle
    if not mask.x509_authorities:
        bundle.x509_authorities = []
    if not mask.jwt_authorities:
        bundle.jwt_authorities = []
    if not mask.refresh_hint:
        bundle.refresh_hint = 0
    if not mask.sequence_number:
        bundle.sequence_number = 0
    return bundle


def _mask(mask: pb.BundleMask) -> pb.BundleMask | None:
    return mask if betterproto.serialized_on_wire(mask) else None


def _status(error: PyspireError) -> pb.Status:
    if isinstance(error, FailedPreconditionError):
        return pb.Status(code=_FAILED_PRECONDITION, message=str(error))
    return pb.Status(code=status_for(error).value, message=str(error))


def _check_bundle(bundle: Bundle, field: str) -> Bundle:
    """Reject a bundle whose numbers a datastore cannot hold or a reader cannot use (a
    negative refresh hint makes its SPIFFE bundle document unreadable), or whose authorities
    do not parse."""
    if bundle.refresh_hint < 0:
        raise InvalidArgumentError(
            f"invalid {field}.refresh_hint: {bundle.refresh_hint} is negative"
        )
    if bundle.sequence_number > MAX_SEQUENCE_NUMBER:
        raise InvalidArgumentError(
            f"invalid {field}.sequence_number: {bundle.sequence_number} is larger than the "
            f"{MAX_SEQUENCE_NUMBER} allowed"
        )
    return _check_authorities(bundle, field)


def _check_authorities(bundle: Bundle, field: str) -> Bundle:
    """Reject authorities that do not parse: a bad certificate or key would break every
    peer that loads the bundle."""
    for index, authority in enumerate(bundle.x509_authorities):
        try:
            x509.load_der_x509_certificate(authority.der)
        except ValueError:
            raise InvalidArgumentError(
                f"invalid {field}.x509_authorities[{index}]: not a DER X.509 certificate"
            ) from None
    for index, key in enumerate(bundle.jwt_authorities):
        _check_jwt_key(key, f"{field}.jwt_authorities[{index}]")
    return bundle


def _check_jwt_key(key: JwtAuthority, field: str) -> None:
    if not key.key_id:
        raise InvalidArgumentError(f"invalid {field}: key_id is missing")
    try:
        validate_text(key.key_id, "key_id", max_bytes=MAX_JWT_KEY_ID_BYTES)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"invalid {field}: {error}") from None
    try:
        serialization.load_der_public_key(key.public_key)
    except (ValueError, TypeError):
        raise InvalidArgumentError(f"invalid {field}: public_key is not a DER public key") from None


_Result = TypeVar(
    "_Result",
    bundle_pb.BatchCreateFederatedBundleResponseResult,
    bundle_pb.BatchUpdateFederatedBundleResponseResult,
    bundle_pb.BatchSetFederatedBundleResponseResult,
)


def _result(kind: type[_Result], status: pb.Status, bundle: pb.Bundle | None) -> _Result:
    """A batch result; the bundle is left unset (not sent) when the item failed."""
    if bundle is None:
        return kind(status=status)
    return kind(status=status, bundle=bundle)


_GET_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetBundle"


def encode_bundle(bundle: Bundle) -> bytes:
    """A bundle encoded as GetBundle and GetFederatedBundle answer it (no output mask)."""
    return bytes(bundle_to_proto(bundle))


class BundleService(bundle_pb.BundleBase):
    """The Bundle service over one :class:`~pyspire.server.context.ServerContext`.

    GetBundle without an output mask (what agents ask at every sync) is answered with the
    encoding :class:`~pyspire.server.api.own_bundle.OwnBundleReply` keeps: nothing is encoded
    per call. ``answers`` (shared with the Entry service, which offers their digest to agents)
    keeps it; the federated bundles this service writes are forgotten there."""

    def __init__(self, context: ServerContext, answers: BundleAnswers | None = None) -> None:
        self._context = context
        self._answers = answers if answers is not None else BundleAnswers(context, encode_bundle)
        self._reply = self._answers.own

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping = dict(super().__mapping__())
        mapping[_GET_BUNDLE] = unary_route(self.get_bundle_encoded, bundle_pb.GetBundleRequest)
        return mapping

    @property
    def answers(self) -> BundleAnswers:
        """The kept answers to GetBundle and GetFederatedBundle, whose digest agents are
        offered."""
        return self._answers

    @property
    def reply(self) -> OwnBundleReply:
        """The kept answer to GetBundle."""
        return self._reply

    async def get_bundle_encoded(
        self, request: bundle_pb.GetBundleRequest
    ) -> EncodedMessage[types_wire.Bundle]:
        """GetBundle as routed: the kept answer for a request without an output mask,
        :meth:`get_bundle` encoded for one with a mask."""
        if _mask(request.output_mask) is None:
            return EncodedMessage(await self._reply.encoded())
        return EncodedMessage(bytes(await self.get_bundle(request)))

    # -- helpers ---------------------------------------------------------------------------

    def _foreign(self, name: str, field: str) -> TrustDomain:
        """A federated trust domain: valid, and not ours."""
        try:
            trust_domain = TrustDomain.parse(name)
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"invalid {field}: {error}") from None
        if trust_domain == self._context.trust_domain:
            raise InvalidArgumentError(
                f"invalid {field}: {trust_domain.name!r} is the server's own trust domain, "
                "not a federated one"
            )
        return trust_domain

    def _federated_bundle(self, message: pb.Bundle, field: str) -> Bundle:
        self._foreign(message.trust_domain, f"{field}.trust_domain")
        return _check_bundle(bundle_from_proto(message, field), field)

    async def _own_bundle(self) -> Bundle:
        bundle = await self._context.datastore.get_bundle(self._context.trust_domain)
        if bundle is None:
            raise NotFoundError("bundle not found")
        return bundle

    # -- our bundle ------------------------------------------------------------------------

    async def get_bundle(self, get_bundle_request: bundle_pb.GetBundleRequest) -> pb.Bundle:
        """Our trust domain's bundle, reduced to ``output_mask``."""
        bundle = await self._own_bundle()
        return apply_bundle_mask(bundle_to_proto(bundle), _mask(get_bundle_request.output_mask))

    async def append_bundle(
        self, append_bundle_request: bundle_pb.AppendBundleRequest
    ) -> pb.Bundle:
        """Add X.509 and JWT authorities to our bundle (those already present are skipped);
        the sequence number rises when something was added."""
        request = append_bundle_request
        if not request.x509_authorities and not request.jwt_authorities:
            raise InvalidArgumentError(
                "missing authorities: give x509_authorities or jwt_authorities"
            )
        message = pb.Bundle(
            trust_domain=self._context.trust_domain.name,
            x509_authorities=request.x509_authorities,
            jwt_authorities=request.jwt_authorities,
        )
        additions = _check_authorities(bundle_from_proto(message, "request"), "request")
        await self._own_bundle()
        stored = await self._context.datastore.append_bundle(additions)
        self._reply.forget()
        _log.info(
            "bundle appended",
            x509_authorities=len(additions.x509_authorities),
            jwt_authorities=len(additions.jwt_authorities),
            sequence_number=stored.sequence_number,
        )
        return apply_bundle_mask(bundle_to_proto(stored), _mask(request.output_mask))

    async def publish_jwt_authority(
        self, publish_jwt_authority_request: bundle_pb.PublishJwtAuthorityRequest
    ) -> bundle_pb.PublishJwtAuthorityResponse:
        """Add a downstream server's JWT key to our bundle; returns our JWT authorities."""
        message = publish_jwt_authority_request.jwt_authority
        if not betterproto.serialized_on_wire(message):
            raise InvalidArgumentError("missing jwt_authority")
        key = JwtAuthority(
            key_id=message.key_id,
            public_key=message.public_key,
            expires_at=from_timestamp(message.expires_at, "jwt_authority.expires_at"),
        )
        _check_jwt_key(key, "jwt_authority")
        await self._own_bundle()
        stored = await self._context.datastore.append_bundle(
            Bundle(trust_domain=self._context.trust_domain, jwt_authorities=(key,))
        )
        self._reply.forget()
        _log.info("jwt authority published", key_id=key.key_id)
        return bundle_pb.PublishJwtAuthorityResponse(
            jwt_authorities=bundle_to_proto(stored).jwt_authorities
        )

    async def count_bundles(
        self, count_bundles_request: bundle_pb.CountBundlesRequest
    ) -> bundle_pb.CountBundlesResponse:
        """How many bundles are stored, ours included."""
        return bundle_pb.CountBundlesResponse(count=await self._context.datastore.count_bundles())

    # -- federated bundles -----------------------------------------------------------------

    async def list_federated_bundles(
        self, list_federated_bundles_request: bundle_pb.ListFederatedBundlesRequest
    ) -> bundle_pb.ListFederatedBundlesResponse:
        """One page of federated bundles (ours is skipped, so a page may come up one short)."""
        request = list_federated_bundles_request
        if request.page_size < 0:
            raise InvalidArgumentError(f"invalid page_size: {request.page_size} is negative")
        page = await self._context.datastore.list_bundles(
            Page(size=request.page_size, token=request.page_token)
        )
        mask = _mask(request.output_mask)
        return bundle_pb.ListFederatedBundlesResponse(
            bundles=[
                apply_bundle_mask(bundle_to_proto(bundle), mask)
                for bundle in page.bundles
                if bundle.trust_domain != self._context.trust_domain
            ],
            next_page_token=page.next_page_token,
        )

    async def get_federated_bundle(
        self, get_federated_bundle_request: bundle_pb.GetFederatedBundleRequest
    ) -> pb.Bundle:
        """The bundle of a federated trust domain; NotFound when none is stored."""
        request = get_federated_bundle_request
        trust_domain = self._foreign(request.trust_domain, "trust_domain")
        bundle = await self._context.datastore.get_bundle(trust_domain)
        if bundle is None:
            raise NotFoundError(f"bundle for {trust_domain.name!r} not found")
        return apply_bundle_mask(bundle_to_proto(bundle), _mask(request.output_mask))

    async def _each(
        self,
        messages: list[pb.Bundle],
        write: Callable[[Bundle], Awaitable[Bundle]],
        mask: pb.BundleMask | None,
    ) -> list[tuple[pb.Status, pb.Bundle | None]]:
        results: list[tuple[pb.Status, pb.Bundle | None]] = []
        for index, message in enumerate(messages):
            try:
                bundle = self._federated_bundle(message, f"bundle[{index}]")
                stored = await write(bundle)
                self._answers.forget_federated(bundle.trust_domain)
            except PyspireError as error:
                results.append((_status(error), None))
                continue
            results.append((_OK, apply_bundle_mask(bundle_to_proto(stored), mask)))
        return results

    async def batch_create_federated_bundle(
        self, batch_create_federated_bundle_request: bundle_pb.BatchCreateFederatedBundleRequest
    ) -> bundle_pb.BatchCreateFederatedBundleResponse:
        """Store new federated bundles; AlreadyExists for a trust domain that has one."""
        request = batch_create_federated_bundle_request
        results = await self._each(
            request.bundle, self._context.datastore.create_bundle, _mask(request.output_mask)
        )
        return bundle_pb.BatchCreateFederatedBundleResponse(
            results=[
                _result(bundle_pb.BatchCreateFederatedBundleResponseResult, status, bundle)
                for status, bundle in results
            ]
        )

    async def batch_update_federated_bundle(
        self, batch_update_federated_bundle_request: bundle_pb.BatchUpdateFederatedBundleRequest
    ) -> bundle_pb.BatchUpdateFederatedBundleResponse:
        """Overwrite the fields in ``input_mask`` (all when absent) of existing federated
        bundles; NotFound for a trust domain without one."""
        request = batch_update_federated_bundle_request
        input_mask = _mask(request.input_mask)
        datastore = self._context.datastore

        async def update(bundle: Bundle) -> Bundle:
            def mutate(current: Bundle | None) -> Bundle:
                if current is None:
                    raise NotFoundError(f"bundle for {bundle.trust_domain.name!r} not found")
                if input_mask is None:
                    return bundle
                return replace(
                    current,
                    x509_authorities=bundle.x509_authorities
                    if input_mask.x509_authorities
                    else current.x509_authorities,
                    jwt_authorities=bundle.jwt_authorities
                    if input_mask.jwt_authorities
                    else current.jwt_authorities,
                    refresh_hint=bundle.refresh_hint
                    if input_mask.refresh_hint
                    else current.refresh_hint,
                    sequence_number=bundle.sequence_number
                    if input_mask.sequence_number
                    else current.sequence_number,
                )

            return await datastore.update_bundle(bundle.trust_domain, mutate)

        results = await self._each(request.bundle, update, _mask(request.output_mask))
        return bundle_pb.BatchUpdateFederatedBundleResponse(
            results=[
                _result(bundle_pb.BatchUpdateFederatedBundleResponseResult, status, bundle)
                for status, bundle in results
            ]
        )

    async def batch_set_federated_bundle(
        self, batch_set_federated_bundle_request: bundle_pb.BatchSetFederatedBundleRequest
    ) -> bundle_pb.BatchSetFederatedBundleResponse:
        """Create or replace federated bundles."""
        request = batch_set_federated_bundle_request
        results = await self._each(
            request.bundle, self._context.datastore.set_bundle, _mask(request.output_mask)
        )
        return bundle_pb.BatchSetFederatedBundleResponse(
            results=[
                _result(bundle_pb.BatchSetFederatedBundleResponseResult, status, bundle)
                for status, bundle in results
            ]
        )

    async def batch_delete_federated_bundle(
        self, batch_delete_federated_bundle_request: bundle_pb.BatchDeleteFederatedBundleRequest
    ) -> bundle_pb.BatchDeleteFederatedBundleResponse:
        """Delete federated bundles; ``mode`` says what happens to entries federating with
        them (RESTRICT refuses while there are any, DELETE deletes them, DISSOCIATE unlinks)."""
        request = batch_delete_federated_bundle_request
        try:
            mode = BundleDeleteMode(int(request.mode))
        except ValueError:
            raise InvalidArgumentError(f"invalid mode: unknown value {int(request.mode)}") from None
        results: list[bundle_pb.BatchDeleteFederatedBundleResponseResult] = []
        changed = False
        for index, name in enumerate(request.trust_domains):
            try:
                trust_domain = self._foreign(name, f"trust_domains[{index}]")
                await self._context.datastore.delete_bundle(trust_domain, mode)
                self._answers.forget_federated(trust_domain)
            except PyspireError as error:
                status = _status(error)
            else:
                status = _OK
                changed = True
                _log.info("federated bundle deleted", trust_domain=name, mode=mode.name)
            results.append(
                bundle_pb.BatchDeleteFederatedBundleResponseResult(status=status, trust_domain=name)
            )
        if changed and mode is not BundleDeleteMode.RESTRICT:
            self._context.registry.poke()
        return bundle_pb.BatchDeleteFederatedBundleResponse(results=results)
