"""Fixtures for CA tests: an in-process key manager and an in-memory CA store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyspire.ca.templates import BACKDATE, random_serial
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain


class MemoryCaStore:
    """The CA's view of a datastore, kept in memory (the datastore contract suite covers the
    real implementations of the same four methods)."""

    def __init__(self) -> None:
        self.journals: dict[str, bytes] = {}
        self.bundles: dict[TrustDomain, Bundle] = {}

    async def get_ca_journal(self, name: str) -> bytes | None:
        return self.journals.get(name)

    async def set_ca_journal(self, name: str, data: bytes) -> None:
        self.journals[name] = data

    async def update_bundle(
        self, trust_domain: TrustDomain, mutate: Callable[[Bundle | None], Bundle]
    ) -> Bundle:
        bundle = mutate(self.bundles.get(trust_domain))
        self.bundles[trust_domain] = bundle
        return bundle

    async def prune_bundle(self, trust_domain: TrustDomain, expires_before: datetime) -> bool:
        bundle = self.bundles.get(trust_domain)
        if bundle is None:
            return False
        x509_kept = tuple(
            a
            for a in bundle.x509_authorities
            if x509.load_der_x509_certificate(a.der).not_valid_after_utc >= expires_before
        )
        jwt_kept = tuple(
            a
            for a in bundle.jwt_authorities
            if a.expires_at is None or a.expires_at >= expires_before
        )
        if x509_kept == bundle.x509_authorities and jwt_kept == bundle.jwt_authorities:
            return False
        self.bundles[trust_domain] = replace(
            bundle,
            x509_authorities=x509_kept,
            jwt_authorities=jwt_kept,
            sequence_number=bundle.sequence_number + 1,
        )
        return True


SVID_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE"),
    ]
)


def svid_builder(
    *,
    spiffe_id: SpiffeId,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Certificate,
    now: datetime,
    ttl: timedelta,
    dns_names: Sequence[str] = (),
    subject: x509.Name | None = None,
    serial: int | None = None,
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.CertificateBuilder:
    """The reference construction of an SVID leaf with cryptography's builder: the DER
    encoder in pyspire.ca.svid_der must produce the same TBS bytes. An X509-SVID leaf for
    ``spiffe_id`` issued by ``issuer``, capped at the issuer's expiry, with ``extra_extensions``
    (value, critical) after the SVID's own."""
    not_after = min(now + ttl, issuer.not_valid_after_utc)
    if subject is None:
        subject = SVID_SUBJECT
        if dns_names:
            subject = x509.Name(
                [*SVID_SUBJECT, x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]
            )
    issuer_key_id = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(spiffe_id))]
    san += [x509.DNSName(name) for name in dns_names]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial or random_serial())
        .not_valid_before(max(now - BACKDATE, issuer.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key_id),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
    )
    for value, critical in extra_extensions:
        builder = builder.add_extension(value, critical=critical)
    return builder


@pytest.fixture
def ca_store() -> MemoryCaStore:
    return MemoryCaStore()


@pytest.fixture
async def key_manager(host_services: HostServices) -> AsyncIterator[InProcessKeyManager]:
    manager = InProcessKeyManager()
    await manager.configure(NoConfig(), host_services)
    yield manager
    await manager.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
