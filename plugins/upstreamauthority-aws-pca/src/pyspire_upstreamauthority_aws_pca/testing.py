"""A loopback AWS Private CA for the tests of this plugin and of deployments using it.

moto's server mode implements ACM PCA only partly: it issues every certificate with the
subject alternative names of the CSR and nothing else (no ``basicConstraints``, no key usage)
for any template but the root and end-entity ones, and ignores ``Validity`` (a year from
issuance): what it issues for ``SubordinateCACertificate_PathLen0/V1`` is no CA. This module
answers the four calls the plugin makes in ACM PCA's JSON protocol (``X-Amz-Target:
ACMPrivateCA.<Action>``, errors as ``{"__type": ..., "message": ...}``) for one private CA
that signs for real: DescribeCertificateAuthority, IssueCertificate (the
``SubordinateCACertificate_PathLen<N>/V1`` templates, an ``ABSOLUTE`` validity not past the
CA's end, an ECDSA signing algorithm), GetCertificate (answering
``RequestInProgressException`` ``pending_polls`` times per certificate first, as an issuance
in progress does) and GetCertificateAuthorityCertificate; the actions in ``denied`` are
answered ``AccessDeniedException``::

    endpoint = PrivateCaEndpoint(clock, depth=2)
    async with serve_loopback(endpoint.routes()) as server:
        ...  # aws_pca with endpoint = server.url, certificate_authority_arn = endpoint.arn

Requests are not authenticated, but what each carried is kept (``calls``) so a test can check
the action, its input and the credentials it was signed with.
"""

from __future__ import annotations

__all__ = ["PrivateCaCall", "PrivateCaEndpoint"]

import base64
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyspire_sdk.clock import Clock
from pyspire_sdk.testing.loopback import Handler

_PEM = serialization.Encoding.PEM
_TEMPLATE = re.compile(r"arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen(\d)/V1")
_HASHES: Mapping[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "SHA256WITHECDSA": hashes.SHA256,
    "SHA384WITHECDSA": hashes.SHA384,
    "SHA512WITHECDSA": hashes.SHA512,
}
_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)

Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


class _RefusalError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class PrivateCaCall:
    """One call received: the action, its JSON input and the Authorization header."""

    action: str
    input: Mapping[str, Any]
    authorization: str
    security_token: str


def _ca(name: str, issuer: Issuer | None, start: datetime, ttl: timedelta) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Private CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - timedelta(days=1))
        .not_valid_after(start + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


@dataclass
class PrivateCaEndpoint:
    """One private CA, ``depth`` levels under a root (0: the private CA is the root), valid
    for ``ttl`` from the clock's now; ``status`` is what DescribeCertificateAuthority says."""

    clock: Clock
    depth: int = 1
    ttl: timedelta = timedelta(days=30)
    status: str = "ACTIVE"
    signing_algorithm: str = "SHA256WITHECDSA"
    region: str = "us-east-1"
    account_id: str = "123456789012"
    pending_polls: int = 0
    denied: frozenset[str] = frozenset()
    """Actions answered ``AccessDeniedException``, as to a caller without the permission."""
    arn: str = ""
    authority: list[Issuer] = field(default_factory=list)
    """The private CA first, then each issuer above it up to the root."""
    calls: list[PrivateCaCall] = field(default_factory=list)
    _issued: dict[str, str] = field(default_factory=dict)
    _polls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        now = self.clock.now()
        root_ttl = self.ttl if self.depth == 0 else timedelta(days=3650)
        chain: list[Issuer] = [_ca("private root", None, now, root_ttl)]
        for level in range(self.depth):
            last = level == self.depth - 1
            name = "private CA" if last else f"private intermediate {level + 1}"
            chain.append(_ca(name, chain[-1], now, self.ttl if last else timedelta(days=365)))
        self.authority = list(reversed(chain))
        self.arn = (
            f"arn:aws:acm-pca:{self.region}:{self.account_id}:certificate-authority/"
            f"{secrets.token_hex(16)}"
        )

    @property
    def certificate(self) -> x509.Certificate:
        """The private CA's certificate."""
        return self.authority[0][0]

    @property
    def root(self) -> x509.Certificate:
        return self.authority[-1][0]

    def routes(self) -> list[tuple[str, str, Handler]]:
        """The route to serve with :func:`pyspire_sdk.testing.loopback.serve_loopback`."""
        return [("POST", "/", self._handle)]

    async def _handle(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        action = target.removeprefix("ACMPrivateCA.")
        body = json.loads(await request.read() or b"{}")
        self.calls.append(
            PrivateCaCall(
                action,
                body,
                request.headers.get("Authorization", ""),
                request.headers.get("X-Amz-Security-Token", ""),
            )
        )
        actions = {
            "DescribeCertificateAuthority": self._describe,
            "IssueCertificate": self._issue,
            "GetCertificate": self._get_certificate,
            "GetCertificateAuthorityCertificate": self._get_ca_certificate,
        }
        try:
            if action not in actions:
                raise _RefusalError("InvalidAction", f"{target!r} is not served here")
            if action in self.denied:
                raise _RefusalError("AccessDeniedException", f"not authorized to {action}")
            if body.get("CertificateAuthorityArn") != self.arn:
                raise _RefusalError("ResourceNotFoundException", "no such certificate authority")
            answer = actions[action](body)
        except _RefusalError as refusal:
            return _json({"__type": refusal.kind, "message": str(refusal)}, status=400)
        return _json(answer)

    def _describe(self, body: Mapping[str, Any]) -> dict[str, Any]:
        certificate = self.certificate
        return {
            "CertificateAuthority": {
                "Arn": self.arn,
                "Status": self.status,
                "Type": "ROOT" if self.depth == 0 else "SUBORDINATE",
                "NotBefore": certificate.not_valid_before_utc.timestamp(),
                "NotAfter": certificate.not_valid_after_utc.timestamp(),
                "CertificateAuthorityConfiguration": {
                    "KeyAlgorithm": "EC_prime256v1",
                    "SigningAlgorithm": self.signing_algorithm,
                    "Subject": {"CommonName": "private CA"},
                },
            }
        }

    def _issue(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.status != "ACTIVE":
            raise _RefusalError("InvalidStateException", f"the CA is {self.status}")
        template = _TEMPLATE.fullmatch(str(body.get("TemplateArn", "")))
        if template is None:
            raise _RefusalError("ValidationException", f"template {body.get('TemplateArn')!r}")
        algorithm = _HASHES.get(str(body.get("SigningAlgorithm", "")))
        if algorithm is None:
            raise _RefusalError("ValidationException", "the signing algorithm does not fit the key")
        try:
            csr = x509.load_pem_x509_csr(base64.b64decode(body.get("Csr", "")))
        except ValueError:
            raise _RefusalError("MalformedCSRException", "the CSR does not parse") from None
        not_after = self._validity(body.get("Validity") or {})
        certificate = self._sign(csr, int(template.group(1)), not_after, algorithm())
        certificate_arn = f"{self.arn}/certificate/{secrets.token_hex(16)}"
        self._issued[certificate_arn] = certificate.public_bytes(_PEM).decode()
        self._polls[certificate_arn] = 0
        return {"CertificateArn": certificate_arn}

    def _validity(self, validity: Mapping[str, Any]) -> datetime:
        if validity.get("Type") != "ABSOLUTE":
            raise _RefusalError("ValidationException", "only ABSOLUTE validity is served here")
        not_after = datetime.fromtimestamp(int(validity.get("Value", 0)), UTC)
        if not_after > self.certificate.not_valid_after_utc:
            raise _RefusalError(
                "ValidationException", "the validity exceeds the certificate authority's"
            )
        if not_after <= self.clock.now():
            raise _RefusalError("ValidationException", "the validity ends in the past")
        return not_after

    def _sign(
        self,
        csr: x509.CertificateSigningRequest,
        path_length: int,
        not_after: datetime,
        algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512,
    ) -> x509.Certificate:
        issuer, key = self.authority[0]
        public = csr.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(issuer.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.clock.now().replace(microsecond=0))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                critical=False,
            )
        )
        try:
            names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            builder = builder.add_extension(names.value, critical=names.critical)
        except x509.ExtensionNotFound:
            pass
        return builder.sign(key, algorithm)

    def _get_certificate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        certificate_arn = str(body.get("CertificateArn", ""))
        if certificate_arn not in self._issued:
            raise _RefusalError("ResourceNotFoundException", "no such certificate")
        if self._polls[certificate_arn] < self.pending_polls:
            self._polls[certificate_arn] += 1
            raise _RefusalError("RequestInProgressException", "the certificate is being issued")
        chain = "".join(c.public_bytes(_PEM).decode() for c, _ in self.authority)
        return {"Certificate": self._issued[certificate_arn], "CertificateChain": chain}

    def _get_ca_certificate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        answer = {"Certificate": self.certificate.public_bytes(_PEM).decode()}
        if self.depth > 0:
            answer["CertificateChain"] = "".join(
                c.public_bytes(_PEM).decode() for c, _ in self.authority[1:]
            )
        return answer


def _json(document: Mapping[str, Any], *, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(document).encode(),
        content_type="application/x-amz-json-1.1",
    )
