"""The agent half: presents the node's certificate chain and signs the server's challenges with
the certificate's private key.

Files are read once, at configure, and checked against each other: a key that is not the
certificate's fails the agent's start with the setting to fix rather than every attestation.
"""

from __future__ import annotations

__all__ = ["AgentX509PopAttestor"]

import asyncio
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pyspire_nodeattestor_x509pop.config import X509PopAgentConfig
from pyspire_nodeattestor_x509pop.protocol import PrivateKey, answer_challenge, encode_payload
from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import HostServices


@dataclass(frozen=True)
class _Identity:
    key: PrivateKey
    chain: tuple[bytes, ...]


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise PluginError(f"x509pop: {key}: cannot read {str(path)!r}: {error.strerror}") from None


def _certificates(path: Path, key: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path, key))
    except ValueError:
        raise PluginError(f"x509pop: {key}: {str(path)!r} holds no PEM certificate") from None


def _load(config: X509PopAgentConfig) -> _Identity:
    try:
        key = serialization.load_pem_private_key(
            _read(config.private_key_path, "private_key_path"), password=None
        )
    except (ValueError, TypeError):
        raise PluginError(
            f"x509pop: private_key_path: {str(config.private_key_path)!r} holds no "
            "unencrypted PEM private key"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PluginError(
            f"x509pop: private_key_path: a {type(key).__name__} cannot answer x509pop "
            "challenges; use an RSA or ECDSA key"
        )
    certificates = _certificates(config.certificate_path, "certificate_path")
    if config.intermediates_path is not None:
        certificates += _certificates(config.intermediates_path, "intermediates_path")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificates[0].public_key().public_bytes(der, spki) != key.public_key().public_bytes(
        der, spki
    ):
        raise PluginError(
            "x509pop: private_key_path does not hold the key of the first certificate of "
            "certificate_path"
        )
    return _Identity(key=key, chain=tuple(c.public_bytes(der) for c in certificates))


class AgentX509PopAttestor:
    """SPIRE's ``x509pop`` agent node attestor; see the module documentation."""

    def __init__(self) -> None:
        self._identity: _Identity | None = None

    async def configure(self, config: X509PopAgentConfig, host: HostServices) -> None:
        """Read and check the key and certificates; PluginError naming the setting."""
        self._identity = await asyncio.to_thread(_load, config)

    async def close(self) -> None:
        """Forget the key."""
        self._identity = None

    def _current(self) -> _Identity:
        if self._identity is None:
            raise PluginError("x509pop: used before configure")
        return self._identity

    async def attestation_payload(self) -> bytes:
        """``{"certificates": [...]}``: the node's certificate, then its intermediates."""
        return encode_payload(self._current().chain)

    async def answer_challenge(self, challenge: bytes) -> bytes:
        """The signed answer (RSA-PSS or ECDSA over the combined nonces)."""
        return await asyncio.to_thread(answer_challenge, self._current().key, challenge)
