"""The server's Debug API (``spire.api.server.debug.v1.Debug``, local callers only).

GetInfo reports what an operator checks first: the server's own SVID chain (each certificate's
SPIFFE ID, expiry and subject), the uptime on the server's clock, and how many agents, entries
and federated bundles the datastore holds.
"""

from __future__ import annotations

__all__ = ["DebugService", "certificate_info"]

import math

from cryptography import x509

from pyspire.proto.convert import spiffe_id_to_proto
from pyspire.proto.gen.spire.api.server.debug import v1 as debug_pb
from pyspire.server.context import ServerContext
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId

_INT32_MAX = 2**31 - 1


def _spiffe_id(certificate: x509.Certificate) -> SpiffeId | None:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        return None
    try:
        return SpiffeId.parse(uris[0])
    except InvalidArgumentError:
        return None


def certificate_info(certificate_der: bytes) -> debug_pb.GetInfoResponseCert:
    """One certificate of the chain as GetInfo reports it.

    ``id`` is set when the certificate carries exactly one SPIFFE URI SAN (the leaf, and our
    CAs, whose ID is the trust domain's); ``subject`` is the RFC 4514 form of the subject.
    Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` for bytes that are not DER.
    """
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
    except ValueError as error:
        raise InvalidArgumentError(f"svid_chain certificate is not DER: {error}") from None
    spiffe_id = _spiffe_id(certificate)
    info = debug_pb.GetInfoResponseCert(
        expires_at=int(certificate.not_valid_after_utc.timestamp()),
        subject=certificate.subject.rfc4514_string(),
    )
    if spiffe_id is not None:
        info.id = spiffe_id_to_proto(spiffe_id)
    return info


def _int32(value: int) -> int:
    """Counts travel as int32; a larger one is reported as the largest int32."""
    return max(0, min(value, _INT32_MAX))


class DebugService(debug_pb.DebugBase):
    """``spire.api.server.debug.v1.Debug`` over a :class:`ServerContext`."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context

    async def get_info(self, get_info_request: debug_pb.GetInfoRequest) -> debug_pb.GetInfoResponse:
        context = self._context
        datastore = context.datastore
        uptime = (context.clock.now() - context.started_at).total_seconds()
        agents = await datastore.count_attested_nodes()
        entries = await datastore.count_entries()
        bundles = await datastore.count_bundles()
        own_bundle = await datastore.get_bundle(context.trust_domain)
        federated = bundles - (1 if own_bundle is not None else 0)
        return debug_pb.GetInfoResponse(
            svid_chain=[certificate_info(der) for der in context.server_svid_chain],
            uptime=_int32(math.floor(uptime)),
            agents_count=_int32(agents),
            entries_count=_int32(entries),
            federated_bundles_count=_int32(federated),
        )
