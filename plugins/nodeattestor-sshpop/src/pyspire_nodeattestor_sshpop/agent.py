"""The agent half: presents the host certificate and signs the server's challenges with the host
key, as SPIRE's sshpop agent does.

The key and certificate are read once, at configure, and checked against each other, so a
mismatch stops the agent with the setting to fix rather than failing every attestation.
"""

from __future__ import annotations

__all__ = ["AgentSshPopAttestor"]

import asyncio
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pyspire_nodeattestor_sshpop import ssh
from pyspire_nodeattestor_sshpop.config import SshPopAgentConfig
from pyspire_nodeattestor_sshpop.protocol import decode_challenge, encode_answer, encode_payload
from pyspire_sdk.challenge import combined_digest, new_nonce
from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import HostServices


@dataclass(frozen=True)
class _Host:
    key: ssh.SshPrivateKey
    certificate_blob: bytes


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise PluginError(f"sshpop: {key}: cannot read {str(path)!r}: {error.strerror}") from None


def _private_key(data: bytes, path: Path) -> ssh.SshPrivateKey:
    key: object
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise PluginError(
                f"sshpop: host_key_path: {str(path)!r} holds no unencrypted private key"
            ) from None
    if not isinstance(
        key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise PluginError(f"sshpop: host_key_path: a {type(key).__name__} is not supported")
    return key


def _load(config: SshPopAgentConfig) -> _Host:
    key = _private_key(_read(config.host_key_path, "host_key_path"), config.host_key_path)
    try:
        certificate = serialization.load_ssh_public_identity(
            _read(config.host_cert_path, "host_cert_path")
        )
    except (ValueError, UnsupportedAlgorithm):
        raise PluginError(
            f"sshpop: host_cert_path: {str(config.host_cert_path)!r} holds no SSH certificate"
        ) from None
    if not isinstance(certificate, serialization.SSHCertificate):
        raise PluginError(
            f"sshpop: host_cert_path: {str(config.host_cert_path)!r} holds a public key, not "
            "a certificate"
        )
    if ssh.key_blob(certificate.public_key()) != ssh.key_blob(key.public_key()):
        raise PluginError("sshpop: host_key_path does not hold the key of host_cert_path")
    return _Host(key=key, certificate_blob=ssh.key_blob(certificate))


def _answer(key: ssh.SshPrivateKey, challenge: bytes) -> bytes:
    agent_nonce = new_nonce()
    digest = combined_digest(decode_challenge(challenge), agent_nonce)
    return encode_answer(agent_nonce, ssh.sign(key, digest))


class AgentSshPopAttestor:
    """SPIRE's ``sshpop`` agent node attestor; see the module documentation."""

    def __init__(self) -> None:
        self._host: _Host | None = None

    async def configure(self, config: SshPopAgentConfig, host: HostServices) -> None:
        """Read and check the host key and certificate; PluginError naming the setting."""
        self._host = await asyncio.to_thread(_load, config)

    async def close(self) -> None:
        """Forget the key."""
        self._host = None

    def _current(self) -> _Host:
        if self._host is None:
            raise PluginError("sshpop: used before configure")
        return self._host

    async def attestation_payload(self) -> bytes:
        """``{"Certificate": ...}``: the host certificate."""
        return encode_payload(self._current().certificate_blob)

    async def answer_challenge(self, challenge: bytes) -> bytes:
        """The host key's signature of the combined nonces, with the agent's nonce."""
        return await asyncio.to_thread(_answer, self._current().key, challenge)
