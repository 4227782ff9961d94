"""What the two Debug APIs report about a certificate and a count, in one place.

The server's ``spire.api.server.debug.v1`` and the agent's ``spire.agent.debug.v1`` both answer
GetInfo with an SVID chain of ``Cert{id, expires_at, subject}`` messages and with counts that
travel as ``int32``; their generated message classes differ only in name.
"""

from __future__ import annotations

__all__ = ["INT32_MAX", "certificate_info", "int32_count"]

from collections.abc import Callable
from typing import Any, TypeVar

from cryptography import x509

from pyspire.proto.convert import spiffe_id_to_proto
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId

INT32_MAX = 2**31 - 1

CertT = TypeVar("CertT")


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


def certificate_info(certificate_der: bytes, message: Callable[..., CertT]) -> CertT:
    """One certificate of an SVID chain as a ``GetInfoResponse.Cert`` of type ``message``.

    ``id`` is set when the certificate carries exactly one SPIFFE URI SAN (a leaf, and our CAs,
    whose ID is the trust domain's); ``subject`` is the RFC 4514 form of the subject. Raises
    :class:`~pyspire_sdk.errors.InvalidArgumentError` for bytes that are not DER.
    """
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
    except ValueError as error:
        raise InvalidArgumentError(f"svid_chain certificate is not DER: {error}") from None
    fields: dict[str, Any] = {
        "expires_at": int(certificate.not_valid_after_utc.timestamp()),
        "subject": certificate.subject.rfc4514_string(),
    }
    spiffe_id = _spiffe_id(certificate)
    if spiffe_id is not None:
        fields["id"] = spiffe_id_to_proto(spiffe_id)
    return message(**fields)


def int32_count(value: int) -> int:
    """A count as it travels (``int32``): a larger one is reported as the largest int32."""
    return max(0, min(value, INT32_MAX))
