"""An upstream PKI for the end-to-end tests of upstream authorities: a root, an intermediate
and the signing CA under it, made with ``cryptography`` around the wall clock."""

from __future__ import annotations

__all__ = ["Issuer", "UpstreamPki", "make_ca", "openssl_verify"]

import shutil
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEM = serialization.Encoding.PEM

Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]

_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def make_ca(name: str, issuer: Issuer | None, ttl: timedelta) -> Issuer:
    """A CA certificate named ``name``, signed by ``issuer`` (self-signed without one), valid
    from an hour ago for ``ttl``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


class UpstreamPki:
    """``root`` signs ``intermediate``, which signs ``signer``, the CA that signs the server's
    CA; as PEM: ``cert_pem`` (the signer, then the intermediate), ``key_pem`` (the signer's
    key, PKCS#8) and ``bundle_pem`` (the root)."""

    def __init__(self) -> None:
        self.root = make_ca("upstream root", None, timedelta(days=3650))
        self.intermediate = make_ca("upstream intermediate", self.root, timedelta(days=365))
        self.signer = make_ca("upstream signer", self.intermediate, timedelta(days=30))
        self.cert_pem = self.signer[0].public_bytes(PEM) + self.intermediate[0].public_bytes(PEM)
        self.key_pem = self.signer[1].private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.bundle_pem = self.root[0].public_bytes(PEM)


def openssl_verify(
    directory: Path,
    leaf: x509.Certificate,
    untrusted: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> subprocess.CompletedProcess[str] | None:
    """``openssl verify`` of ``leaf`` through ``untrusted`` against ``roots`` alone (no
    ``-partial_chain``), its files written in ``directory``; None when openssl is missing."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    files = {"leaf": [leaf], "untrusted": list(untrusted), "roots": list(roots)}
    for name, certificates in files.items():
        (directory / f"{name}.pem").write_bytes(b"".join(c.public_bytes(PEM) for c in certificates))
    return subprocess.run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(directory / "roots.pem"),
            "-untrusted",
            str(directory / "untrusted.pem"),
            str(directory / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
