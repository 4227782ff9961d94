"""Certificates and requests signed through a key manager verify like in-process ones."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.ca.authorities import X509CA, JwtKey
from pyspire.ca.jwt import mint_jwt_svid
from pyspire.ca.signing import ManagedKey, sign_certificate, sign_csr
from pyspire.ca.templates import CaSubject, ca_builder, ca_csr_builder
from pyspire.ca.x509svid import mint_x509_svid
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.plugins.key_manager import HashAlgorithm, KeyType
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock

TD = TrustDomain("example.org")


async def managed(key_manager: InProcessKeyManager, key_type: KeyType) -> ManagedKey:
    return ManagedKey(key_manager, await key_manager.generate_key(f"k-{key_type}", key_type))


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
async def test_remotely_signed_ca_verifies_with_cryptography_and_openssl(
    key_manager: InProcessKeyManager, fake_clock: FakeClock, tmp_path: Path, key_type: KeyType
) -> None:
    key = await managed(key_manager, key_type)
    builder = ca_builder(
        trust_domain=TD,
        template=CaSubject().ca_template(timedelta(hours=24)),
        public_key=key.load_public_key(),  # type: ignore[arg-type]
        now=fake_clock.now(),
    )
    certificate = await sign_certificate(builder, key)
    certificate.verify_directly_issued_by(certificate)
    held = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert held == key.public_key.der
    pem = tmp_path / "ca.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    attime = str(int(fake_clock.now().timestamp()) + 60)
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-attime", attime, "-CAfile", pem, pem],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_signature_from_another_key_does_not_verify(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    """A certificate naming key A but signed by key B must fail: the signature really is the
    managed key's, not the throwaway's or anyone else's."""
    key_a = await managed(key_manager, KeyType.EC_P256)
    key_b = ManagedKey(key_manager, await key_manager.generate_key("b", KeyType.EC_P256))
    builder = ca_builder(
        trust_domain=TD,
        template=CaSubject().ca_template(timedelta(hours=1)),
        public_key=key_a.load_public_key(),  # type: ignore[arg-type]
        now=fake_clock.now(),
    )
    mismatched = await sign_certificate(builder, key_b)
    with pytest.raises(InvalidSignature):
        mismatched.verify_directly_issued_by(mismatched)


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.RSA_2048])
async def test_csr_carries_the_managed_key_and_a_valid_signature(
    key_manager: InProcessKeyManager, key_type: KeyType
) -> None:
    key = await managed(key_manager, key_type)
    csr = x509.load_der_x509_csr(
        await sign_csr(
            ca_csr_builder(trust_domain=TD, template=CaSubject().ca_template(timedelta(hours=1))),
            key,
        )
    )
    assert csr.is_signature_valid
    held = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert held == key.public_key.der
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]


class _RecordsMessages(InProcessKeyManager):
    """Signs as any in-process key manager and records how it was asked to."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[bytes] = []
        self.digests = 0

    async def sign_message(
        self, key_id: str, message: bytes, hash_algorithm: HashAlgorithm
    ) -> bytes:
        self.messages.append(message)
        return await super().sign_message(key_id, message, hash_algorithm)

    async def sign_digest(
        self, key_id: str, digest: bytes, hash_algorithm: HashAlgorithm, *, rsa_pss: bool = False
    ) -> bytes:
        self.digests += 1
        return await super().sign_digest(key_id, digest, hash_algorithm, rsa_pss=rsa_pss)


class _DigestsOnly:
    """A key manager that signs digests only (no ``sign_message``): the host hashes for it."""

    def __init__(self, inner: InProcessKeyManager) -> None:
        self.inner = inner
        self.digests = 0

    async def sign_digest(
        self, key_id: str, digest: bytes, hash_algorithm: HashAlgorithm, *, rsa_pss: bool = False
    ) -> bytes:
        self.digests += 1
        return await self.inner.sign_digest(key_id, digest, hash_algorithm, rsa_pss=rsa_pss)


async def test_the_whole_message_goes_to_a_key_manager_that_signs_messages(
    host_services: HostServices, fake_clock: FakeClock
) -> None:
    """Every signature the CA makes (its own certificate, an X509-SVID with several DNS names,
    a JWT-SVID with several audiences) is asked for as the whole message, and each message is
    far below the 4 KiB a KMS signs whole."""
    recorder = _RecordsMessages()
    await recorder.configure(NoConfig(), host_services)
    key = ManagedKey(recorder, await recorder.generate_key("ca", KeyType.RSA_4096))
    builder = ca_builder(
        trust_domain=TD,
        template=CaSubject().ca_template(timedelta(hours=24)),
        public_key=key.load_public_key(),  # type: ignore[arg-type]
        now=fake_clock.now(),
    )
    ca = X509CA(await sign_certificate(builder, key), key)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    await mint_x509_svid(
        ca,
        spiffe_id=SpiffeId.parse("spiffe://example.org/" + "w" * 200),
        public_key=leaf_key.public_key(),
        ttl=timedelta(hours=1),
        now=fake_clock.now(),
        dns_names=tuple(f"name-{index}.example.org" for index in range(10)),
    )
    jwt_key = JwtKey(kid="k" * 32, key=key, not_before=fake_clock.now(), not_after=ca.not_after)
    token, _ = await mint_jwt_svid(
        jwt_key,
        spiffe_id=SpiffeId.parse("spiffe://example.org/" + "w" * 200),
        audience=tuple(f"audience-{index}" for index in range(10)),
        ttl=timedelta(minutes=5),
        now=fake_clock.now(),
    )
    assert recorder.digests == len(recorder.messages) == 3
    assert recorder.messages[-1] == token.rsplit(".", 1)[0].encode()
    assert max(len(message) for message in recorder.messages) < 2048
    await recorder.close()


async def test_a_key_manager_without_message_signing_gets_the_digest(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    digests_only = _DigestsOnly(key_manager)
    public = await key_manager.generate_key("ca", KeyType.EC_P256)
    key = ManagedKey(digests_only, public)  # type: ignore[arg-type]
    builder = ca_builder(
        trust_domain=TD,
        template=CaSubject().ca_template(timedelta(hours=24)),
        public_key=key.load_public_key(),  # type: ignore[arg-type]
        now=fake_clock.now(),
    )
    certificate = await sign_certificate(builder, key)
    certificate.verify_directly_issued_by(certificate)
    assert digests_only.digests == 1
