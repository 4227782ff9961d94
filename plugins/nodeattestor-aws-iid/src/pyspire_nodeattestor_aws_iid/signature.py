"""Whether an instance identity document was signed by AWS, for the region it names.

As SPIRE's server does: the ``rsa2048`` PKCS #7 signature when the agent sent one, else the
SHA-256 RSA ``signature``; either is verified with the AWS public certificates configured for
the document's region (or the default ones), never with a certificate the agent supplies. The
PKCS #7 signature carries the document itself: it must be the document that was sent, so a
signature taken from another instance cannot vouch for a forged document.
"""

from __future__ import annotations

__all__ = ["AwsCertificates", "verify_document"]

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pyspire_nodeattestor_aws_iid.identity import AttestationData, InstanceIdentityDocument
from pyspire_nodeattestor_aws_iid.pkcs7 import SignatureError, verify_signed_data
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError, PluginError


def _load(path: Path, key: str) -> tuple[x509.Certificate, ...]:
    try:
        certificates = tuple(x509.load_pem_x509_certificates(path.read_bytes()))
    except (OSError, ValueError) as error:
        raise PluginError(f"{key} {str(path)!r} cannot be read: {error}") from None
    for certificate in certificates:
        if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
            raise PluginError(f"{key} {str(path)!r} holds a certificate without an RSA key")
    return certificates


@dataclass(frozen=True)
class AwsCertificates:
    """AWS's public certificates by region; ``default`` serves regions without their own."""

    default: tuple[x509.Certificate, ...] = ()
    regions: Mapping[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)

    @classmethod
    def load(cls, default_path: Path | None, region_paths: Mapping[str, Path]) -> AwsCertificates:
        """Read the PEM files (blocking: call it in a thread); :class:`PluginError` naming a
        file that cannot be read or holds no RSA certificate."""
        return cls(
            default=_load(default_path, "certificate_path") if default_path else (),
            regions={
                region: _load(path, f"region_certificate_paths.{region}")
                for region, path in region_paths.items()
            },
        )

    def for_region(self, region: str) -> tuple[x509.Certificate, ...]:
        """The certificates that may sign documents of ``region``."""
        certificates = self.regions.get(region, self.default)
        if not certificates:
            raise PermissionDeniedError(f'no AWS certificate is configured for region "{region}"')
        return certificates


def _decode(signature: str, name: str) -> bytes:
    try:
        return base64.b64decode("".join(signature.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError(f"failed to decode the {name} signature: not base64") from None


def _verify_pkcs7(document: str, signature: str, trusted: tuple[x509.Certificate, ...]) -> None:
    try:
        content = verify_signed_data(_decode(signature, "rsa2048"), trusted)
    except SignatureError as error:
        raise PermissionDeniedError(
            f"failed verification of instance identity cryptographic signature: {error}"
        ) from None
    if not hmac.compare_digest(content, document.encode()):
        raise PermissionDeniedError(
            "instance identity document does not match the verified PKCS7 content"
        )


def _verify_rsa(document: str, signature: str, trusted: tuple[x509.Certificate, ...]) -> None:
    raw = _decode(signature, "instance identity")
    for certificate in trusted:
        key = certificate.public_key()
        assert isinstance(key, rsa.RSAPublicKey)  # checked when loaded
        try:
            key.verify(raw, document.encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return
    raise PermissionDeniedError(
        "failed to verify the cryptographic signature: no configured AWS certificate verifies it"
    )


def verify_document(
    data: AttestationData, certificates: AwsCertificates
) -> InstanceIdentityDocument:
    """The document of ``data`` once its signature verifies; :class:`PermissionDeniedError`
    when it does not, :class:`InvalidArgumentError` when something cannot be read."""
    document = InstanceIdentityDocument.parse(data.document)
    if not (data.rsa2048 or data.signature):
        raise InvalidArgumentError("instance identity cryptographic signature is required")
    trusted = certificates.for_region(document.region)
    if data.rsa2048:
        _verify_pkcs7(data.document, data.rsa2048, trusted)
    else:
        _verify_rsa(data.document, data.signature, trusted)
    return document
