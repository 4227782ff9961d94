"""``spire.api.server.svid.v1.SVID``: signing X509- and JWT-SVIDs and downstream CAs.

Agents call BatchNewX509SVID and NewJWTSVID for entries they are authorized for; those are hot
paths and are answered from the registry cache with no datastore round trip. Only the public key
of a CSR is used there: the ID, DNS names and TTL come from the entry. Admins mint SVIDs for any
ID of the trust domain (MintX509SVID, MintJWTSVID); downstream servers get intermediate CAs
(NewDownstreamX509CA).

A batch item that fails gets its own status and leaves the other items unaffected.

BatchNewX509SVID is read and answered by the generated codecs (:mod:`pyspire.proto.svids`):
an agent sends it constantly, and a generic decoder and encoder would cost more per item than
signing does. Its route (:meth:`SvidService.sign_x509_batch`) takes the codec request and
answers with the encoded response.
"""

from __future__ import annotations

__all__ = ["MAX_BATCH_PARAMS", "SvidService"]

from collections.abc import Mapping, Sequence
from datetime import timedelta

import grpclib.const
import grpclib.server
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.ca.signing import sign_certificate
from pyspire.ca.templates import CaSubject, downstream_ca_builder
from pyspire.ca.x509svid import CheckedKey, public_key_from_csr
from pyspire.proto.convert import jwt_svid_to_proto, spiffe_id_from_proto, x509_svid_to_proto
from pyspire.proto.gen.codec import spire_api_server_svid_v1 as svid_wire
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.proto.messages import EncodedMessage, unary_route
from pyspire.proto.svids import BatchItem, batch_new_x509_svid_response
from pyspire.registry.validation import validate_dns_name
from pyspire.server.authorization import Caller, CallerKind
from pyspire.server.context import ServerContext
from pyspire.transport.calls import current_caller, status_for
from pyspire_sdk.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PyspireError,
)
from pyspire_sdk.model import RegistrationEntry, X509Svid
from pyspire_sdk.spiffeid import SpiffeId

MAX_BATCH_PARAMS = 500
"""The most CSRs one BatchNewX509SVID request may carry."""

_OK_CODE = 0
_OK_MESSAGE = "OK"

_log = structlog.get_logger("pyspire.server.api.svid")


_BATCH_METHOD = "/spire.api.server.svid.v1.SVID/BatchNewX509SVID"


def _authorized_item(
    entry_id: str, csr: bytes, authorized: Mapping[str, RegistrationEntry]
) -> RegistrationEntry | PyspireError:
    """The entry a batch item asks for, or why it cannot have it (checked before the CSR)."""
    if not entry_id:
        return InvalidArgumentError("missing entry ID")
    if not csr:
        return InvalidArgumentError("missing CSR")
    entry = authorized.get(entry_id)
    if entry is None:
        return NotFoundError("entry not found or not authorized")
    return entry


def _caller_id(kind: CallerKind, description: str) -> SpiffeId:
    """The SPIFFE ID of the caller, which the gate found to be of ``kind``."""
    try:
        caller = current_caller()
    except LookupError:
        caller = None
    if not isinstance(caller, Caller) or not caller.is_(kind) or caller.spiffe_id is None:
        raise PermissionDeniedError(f"caller is not {description}")
    return caller.spiffe_id


def _audience(audience: Sequence[str]) -> tuple[str, ...]:
    if not audience:
        raise InvalidArgumentError("invalid audience: at least one audience is required")
    for index, item in enumerate(audience):
        if not item:
            raise InvalidArgumentError(f"invalid audience[{index}]: must not be empty")
    return tuple(audience)


def _ttl(seconds: int, field: str) -> timedelta | None:
    if seconds < 0:
        raise InvalidArgumentError(f"invalid {field}: {seconds} is negative")
    return timedelta(seconds=seconds) if seconds else None


class SvidService(svid_pb.SvidBase):
    """The SVID service over one :class:`~pyspire.server.context.ServerContext`."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context

    def _workload_id(self, spiffe_id: SpiffeId, field: str) -> SpiffeId:
        trust_domain = self._context.trust_domain
        if spiffe_id.trust_domain != trust_domain:
            raise InvalidArgumentError(
                f"invalid {field}: {str(spiffe_id)!r} is not in trust domain {trust_domain.name!r}"
            )
        if spiffe_id.is_trust_domain_id():
            raise InvalidArgumentError(f"invalid {field}: {str(spiffe_id)!r} has no path")
        return spiffe_id

    # -- agents ----------------------------------------------------------------------------

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """The generated handlers, with BatchNewX509SVID carried as codec messages
        (:meth:`sign_x509_batch`)."""
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()
        mapping[_BATCH_METHOD] = unary_route(
            self.sign_x509_batch, svid_wire.BatchNewX509SVIDRequest
        )
        return mapping

    async def sign_x509_batch(
        self, request: svid_wire.BatchNewX509SVIDRequest
    ) -> EncodedMessage[svid_wire.BatchNewX509SVIDResponse]:
        """BatchNewX509SVID: one X509-SVID per (entry, CSR) pair, each with its own status."""
        items = [(params.entry_id, params.csr) for params in request.params]
        return EncodedMessage(
            batch_new_x509_svid_response(await self._batch_new_x509_svid(items)),
            svid_wire.decode_BatchNewX509SVIDResponse,
        )

    async def _batch_new_x509_svid(
        self, items: Sequence[BatchItem]
    ) -> list[tuple[int, str, X509Svid | None]]:
        if not items:
            raise InvalidArgumentError("missing params: give at least one entry and CSR")
        if len(items) > MAX_BATCH_PARAMS:
            raise InvalidArgumentError(
                f"invalid params: {len(items)} given, at most {MAX_BATCH_PARAMS} per request"
            )
        agent_id = _caller_id(CallerKind.AGENT, "an attested agent")
        authorized = {
            entry.id: entry for entry in self._context.registry.authorized_entries(agent_id)
        }
        entries = [_authorized_item(entry_id, csr, authorized) for entry_id, csr in items]
        # CSR signature checks are the costliest step: they run off the event loop, one hop
        # per batch, overlapping with the loop's own work (TLS, HTTP/2).
        checked = iter(
            await self._context.issuer.check_csr_keys(
                [
                    csr
                    for (_, csr), entry in zip(items, entries, strict=True)
                    if not isinstance(entry, PyspireError)
                ]
            )
        )
        # None marks an item handed to the issuer; its result comes back in the same order.
        outcomes: list[PyspireError | None] = []
        signable: list[tuple[RegistrationEntry, CheckedKey]] = []
        for entry in entries:
            if isinstance(entry, PyspireError):
                outcomes.append(entry)
                continue
            key = next(checked)
            if isinstance(key, PyspireError):
                outcomes.append(key)
            else:
                signable.append((entry, key))
                outcomes.append(None)
        signed: Sequence[X509Svid | PyspireError] = ()
        if signable:
            try:
                signed = await self._context.issuer.workload_x509_batch(signable)
            except PyspireError as error:
                signed = [error] * len(signable)
        produced = iter(signed)
        results: list[tuple[int, str, X509Svid | None]] = []
        for outcome in outcomes:
            result = next(produced) if outcome is None else outcome
            if isinstance(result, PyspireError):
                results.append((status_for(result).value, str(result), None))
            else:
                results.append((_OK_CODE, _OK_MESSAGE, result))
        return results

    async def new_jwtsvid(
        self, new_jwtsvid_request: svid_pb.NewJwtsvidRequest
    ) -> svid_pb.NewJwtsvidResponse:
        """A JWT-SVID for an entry the calling agent is authorized for."""
        request = new_jwtsvid_request
        agent_id = _caller_id(CallerKind.AGENT, "an attested agent")
        if not request.entry_id:
            raise InvalidArgumentError("missing entry ID")
        audience = _audience(request.audience)
        entry = next(
            (
                entry
                for entry in self._context.registry.authorized_entries(agent_id)
                if entry.id == request.entry_id
            ),
            None,
        )
        if entry is None:
            raise NotFoundError("entry not found or not authorized")
        svid = await self._context.issuer.workload_jwt(entry, audience)
        return svid_pb.NewJwtsvidResponse(svid=jwt_svid_to_proto(svid))

    # -- admins ----------------------------------------------------------------------------

    async def mint_x509_svid(
        self, mint_x509_svid_request: svid_pb.MintX509SvidRequest
    ) -> svid_pb.MintX509SvidResponse:
        """An X509-SVID for the CSR's key, with the CSR's URI SAN as ID and its DNS SANs."""
        request = mint_x509_svid_request
        public_key = public_key_from_csr(request.csr)
        csr = x509.load_der_x509_csr(request.csr)
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise InvalidArgumentError("invalid CSR: a URI SAN is required") from None
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if not uris:
            raise InvalidArgumentError("invalid CSR: a URI SAN is required")
        if len(uris) > 1:
            raise InvalidArgumentError(f"invalid CSR: one URI SAN expected, found {len(uris)}")
        try:
            spiffe_id = SpiffeId.parse(uris[0])
        except InvalidArgumentError as error:
            raise InvalidArgumentError(
                f"invalid CSR: URI SAN is not a valid SPIFFE ID: {error}"
            ) from None
        self._workload_id(spiffe_id, "CSR URI SAN")
        dns_names = []
        for name in san.get_values_for_type(x509.DNSName):
            try:
                dns_names.append(validate_dns_name(name))
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"invalid CSR DNS SAN: {error}") from None
        ttl = _ttl(request.ttl, "ttl")
        svid = await self._context.issuer.x509(
            spiffe_id, public_key, ttl=ttl, dns_names=tuple(dns_names)
        )
        _log.info("x509-svid minted", spiffe_id=str(spiffe_id))
        return svid_pb.MintX509SvidResponse(svid=x509_svid_to_proto(svid))

    async def mint_jwtsvid(
        self, mint_jwtsvid_request: svid_pb.MintJwtsvidRequest
    ) -> svid_pb.MintJwtsvidResponse:
        """A JWT-SVID for any ID of the trust domain."""
        request = mint_jwtsvid_request
        spiffe_id = self._workload_id(spiffe_id_from_proto(request.id, "id"), "id")
        audience = _audience(request.audience)
        ttl = _ttl(request.ttl, "ttl")
        svid = await self._context.issuer.jwt(spiffe_id, audience, ttl=ttl)
        _log.info("jwt-svid minted", spiffe_id=str(spiffe_id))
        return svid_pb.MintJwtsvidResponse(svid=jwt_svid_to_proto(svid))

    # -- downstream servers ------------------------------------------------------------------

    async def new_downstream_x509_ca(
        self, new_downstream_x509_ca_request: svid_pb.NewDownstreamX509CaRequest
    ) -> svid_pb.NewDownstreamX509CaResponse:
        """An intermediate CA for the CSR's key, signed by our active CA, and our X.509
        authorities (the roots the downstream server chains to)."""
        request = new_downstream_x509_ca_request
        caller_id = _caller_id(CallerKind.DOWNSTREAM, "a downstream server")
        context = self._context
        entry = next(
            (e for e in context.registry.privileged_entries(caller_id) if e.downstream),
            None,
        )
        if entry is None:
            raise PermissionDeniedError("caller is not a downstream server")
        public_key = public_key_from_csr(request.csr)
        preferred = _ttl(request.preferred_ttl, "preferred_ttl")
        ca = context.ca.x509_ca
        now = context.clock.now()
        ttl = preferred or (
            timedelta(seconds=entry.x509_svid_ttl) if entry.x509_svid_ttl else ca.not_after - now
        )
        builder = downstream_ca_builder(
            trust_domain=context.trust_domain,
            public_key=public_key,
            subject=CaSubject().to_name(),
            issuer=ca.certificate,
            now=now,
            ttl=ttl,
        )
        certificate = await sign_certificate(builder, ca.key)
        bundle = await context.datastore.get_bundle(context.trust_domain)
        if bundle is None:
            raise NotFoundError(f"bundle of trust domain {context.trust_domain.name!r} not found")
        _log.info("downstream x509 ca signed", spiffe_id=str(caller_id))
        return svid_pb.NewDownstreamX509CaResponse(
            ca_cert_chain=[
                certificate.public_bytes(serialization.Encoding.DER),
                *ca.chain_der(),
            ],
            x509_authorities=[authority.der for authority in bundle.x509_authorities],
        )
