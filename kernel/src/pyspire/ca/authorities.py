"""The signing authorities the CA holds: an X.509 CA and a JWT signing key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.ca.signing import ManagedKey
from pyspire.ca.svid_der import SvidTemplate
from pyspire.der import signature_algorithm_der


@dataclass(frozen=True)
class X509CA:
    """Our X.509 CA certificate, the key that signs with it, and the intermediates between it
    and an upstream root (empty when the CA is self-signed or signed by the root directly)."""

    certificate: x509.Certificate
    key: ManagedKey
    upstream_chain: tuple[x509.Certificate, ...] = ()
    upstream_signed: bool = False

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @cached_property
    def key_identifier(self) -> bytes:
        """The CA's subject key identifier: the authority key identifier of what it signs."""
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ski.value.digest

    @property
    def authority_id(self) -> str:
        """The hex subject key identifier: how operators and the journal name this CA."""
        return self.key_identifier.hex()

    @cached_property
    def upstream_authority_id(self) -> str:
        """The hex authority key ID of an upstream-signed CA: the subject key ID of the
        upstream CA that signed it; empty for a self-signed CA."""
        if not self.upstream_signed:
            return ""
        try:
            aki = self.certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        except x509.ExtensionNotFound:
            return ""
        return (aki.value.key_identifier or b"").hex()

    @cached_property
    def subject_der(self) -> bytes:
        """The CA's subject Name in DER: the issuer of what it signs."""
        return self.certificate.subject.public_bytes()

    @cached_property
    def signature_algorithm_der(self) -> bytes:
        """The AlgorithmIdentifier (DER) of signatures this CA's key makes."""
        return signature_algorithm_der(self.key.key_type)

    @cached_property
    def svid_template(self) -> SvidTemplate:
        """The issuer-fixed parts of the X509-SVID leaves this CA signs, encoded once."""
        return SvidTemplate.of(
            signature_algorithm=self.signature_algorithm_der,
            issuer=self.subject_der,
            authority_key_id=self.key_identifier,
        )

    @cached_property
    def der(self) -> bytes:
        """The CA certificate in DER."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def chain_der(self) -> tuple[bytes, ...]:
        """Certificates that follow a leaf we sign: our CA when it is an intermediate, then the
        upstream intermediates. A self-signed CA is not sent (it is in the bundle)."""
        if not self.upstream_signed:
            return ()
        return self._chain_der

    @cached_property
    def _chain_der(self) -> tuple[bytes, ...]:
        return (
            self.der,
            *(cert.public_bytes(serialization.Encoding.DER) for cert in self.upstream_chain),
        )


@dataclass(frozen=True)
class JwtKey:
    """A JWT signing key, published in the bundle under ``kid``, good until ``not_after``."""

    kid: str
    key: ManagedKey
    not_after: datetime
    not_before: datetime
