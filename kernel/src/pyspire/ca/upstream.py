"""What the CA manager checks of a CA an upstream authority signed, before it is published or
used (SPIRE's ``X509CAValidator.ValidateUpstreamX509CA``).

An upstream that answers with a certificate for another key, a certificate that is no CA of
this trust domain, or a chain that does not reach the roots it returned would otherwise put
roots in the bundle that verify nothing the server signs: every SVID would fail at its
consumers while the server believed itself healthy. Refusing the answer keeps the current CA
in use (the rotation is retried) and names the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification

from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugins.upstream_authority import UpstreamX509CA
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.upstream_ca import CA_POLICY, EE_POLICY


@dataclass(frozen=True)
class AcceptedUpstreamCa:
    """The upstream's answer, parsed and checked: our CA and the intermediates above it."""

    certificate: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]


def _refuse(reason: str) -> PluginError:
    return PluginError(f"upstream authority: the X.509 CA it signed cannot be used: {reason}")


def _parse(minted: UpstreamX509CA) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    try:
        chain = [x509.load_der_x509_certificate(der) for der in minted.ca_chain]
        roots = [x509.load_der_x509_certificate(der) for der in minted.upstream_roots]
    except ValueError as error:
        raise _refuse(f"a certificate does not parse: {error}") from None
    return chain, roots


ExtensionT = TypeVar("ExtensionT", bound=x509.ExtensionType)


def _extension(ca: x509.Certificate, kind: type[ExtensionT], name: str) -> ExtensionT:
    try:
        return ca.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        raise _refuse(f"it lacks the {name} extension") from None
    except ValueError as error:
        raise _refuse(f"its {name} extension does not parse: {error}") from None


def _check_ca(ca: x509.Certificate, public_key_der: bytes, trust_domain: TrustDomain) -> None:
    held = ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if held != public_key_der:
        raise _refuse("it certifies another key than the one in the CSR")
    constraints = _extension(ca, x509.BasicConstraints, "basicConstraints")
    usage = _extension(ca, x509.KeyUsage, "keyUsage")
    names = _extension(ca, x509.SubjectAlternativeName, "subjectAltName")
    if not constraints.ca or not usage.key_cert_sign:
        raise _refuse("it is not a CA (basicConstraints CA:TRUE and keyCertSign are required)")
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [str(trust_domain.id)]:
        raise _refuse(f"its URI SANs are {uris}, not the trust domain's ID {trust_domain.id}")


def accept_upstream_ca(
    minted: UpstreamX509CA, *, public_key_der: bytes, trust_domain: TrustDomain, now: datetime
) -> AcceptedUpstreamCa:
    """``minted`` checked: a CA for ``public_key_der`` and ``trust_domain``, valid at ``now``
    and chaining through its intermediates to its roots; PluginError with the reason."""
    chain, roots = _parse(minted)
    ca = chain[0]
    _check_ca(ca, public_key_der, trust_domain)
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(roots))
        .time(now)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=EE_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(ca, chain[1:])
    except verification.VerificationError as error:
        reason = str(error).split(" (encountered processing", 1)[0]
        raise _refuse(f"it does not chain to the upstream roots: {reason}") from None
    return AcceptedUpstreamCa(certificate=ca, intermediates=tuple(chain[1:]))
