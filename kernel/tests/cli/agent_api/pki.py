"""Real certificates, keys and signed JWTs for the agent's ``api`` commands, and an identity source
a test drives: what the Workload API serves, without a server or a sync manager."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyspire.agent.identities import Identity, Snapshot
from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.clock import Clock
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
FOREIGN = TrustDomain("foreign.test")
AGENT_ID = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/t")
MY_UID = Selector("unix", f"uid:{os.getuid()}")

_USAGE = {
    "digital_signature": False,
    "content_commitment": False,
    "key_encipherment": False,
    "data_encipherment": False,
    "key_agreement": False,
    "key_cert_sign": False,
    "crl_sign": False,
    "encipher_only": False,
    "decipher_only": False,
}


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


@dataclass
class CertificateAuthority:
    """A self-signed CA of one trust domain issuing X509-SVIDs shaped like SPIRE's."""

    trust_domain: TrustDomain
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    certificate: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain.name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(**{**_USAGE, "key_cert_sign": True, "crl_sign": True}),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{self.trust_domain.name}")]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def der(self) -> bytes:
        return _der(self.certificate)

    def issue(self, spiffe_id: SpiffeId, *, hint: str = "") -> X509Svid:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC).replace(microsecond=0)
        not_after = now + timedelta(hours=1)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(seconds=10))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    **{
                        **_USAGE,
                        "digital_signature": True,
                        "key_encipherment": True,
                        "key_agreement": True,
                    }
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return X509Svid(
            spiffe_id=spiffe_id,
            cert_chain=(_der(certificate),),
            expires_at=not_after,
            private_key=key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            hint=hint,
        )


@dataclass
class JwtKey:
    """The JWT signing key of a trust domain."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    kid: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def authority(self) -> JwtAuthority:
        return JwtAuthority(
            key_id=self.kid,
            public_key=self.key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})


class Pki:
    """Our trust domain's CA and JWT key, and a federated trust domain's CA."""

    def __init__(self) -> None:
        self.ca = CertificateAuthority(TD)
        self.foreign_ca = CertificateAuthority(FOREIGN)
        self.jwt = JwtKey()

    def bundle(self) -> Bundle:
        return Bundle(
            trust_domain=TD,
            x509_authorities=(X509Authority(self.ca.der),),
            jwt_authorities=(self.jwt.authority,),
            sequence_number=1,
        )

    def foreign_bundle(self) -> Bundle:
        return Bundle(
            trust_domain=FOREIGN,
            x509_authorities=(X509Authority(self.foreign_ca.der),),
            sequence_number=1,
        )

    def identity(self, entry: RegistrationEntry) -> Identity:
        return Identity(entry=entry, svid=self.ca.issue(entry.spiffe_id, hint=entry.hint))


def make_entry(
    path: str,
    *,
    selectors: Sequence[Selector] = (MY_UID,),
    hint: str = "",
    federates_with: Sequence[TrustDomain] = (),
    age: int = 0,
) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=SpiffeId.parse(f"spiffe://{TD.name}{path}"),
        parent_id=AGENT_ID,
        selectors=tuple(selectors),
        id=path.strip("/").replace("/", "-"),
        hint=hint,
        federates_with=tuple(federates_with),
        created_at=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=age),
    )


class FakeIdentitySource:
    """An identity source whose snapshot a test replaces; JWT-SVIDs are really signed."""

    def __init__(self, pki: Pki, clock: Clock, snapshot: Snapshot) -> None:
        self.pki = pki
        self.clock = clock
        self._snapshot = snapshot
        self._changed = asyncio.Event()

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def publish(self, **changes: Any) -> Snapshot:
        """The next revision with ``changes``; every open stream sees it."""
        self._snapshot = replace(self._snapshot, revision=self._snapshot.revision + 1, **changes)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._snapshot

    async def watch(self) -> AsyncIterator[Snapshot]:
        seen = -1
        while True:
            changed = self._changed
            if self._snapshot.revision != seen:
                seen = self._snapshot.revision
                yield self._snapshot
                continue
            await changed.wait()

    async def fetch_jwt_svid(self, entry: RegistrationEntry, audience: Sequence[str]) -> JwtSvid:
        now = self.clock.now()
        expires = now + timedelta(minutes=5)
        token = self.pki.jwt.sign(
            {
                "sub": str(entry.spiffe_id),
                "aud": list(audience),
                "exp": int(expires.timestamp()),
                "iat": int(now.timestamp()),
            }
        )
        return JwtSvid(
            spiffe_id=entry.spiffe_id,
            token=token,
            audience=tuple(audience),
            expires_at=expires,
            issued_at=now,
            hint=entry.hint,
        )
