"""The server half: checks the host certificate as an SSH client checks a host, then the agent's
possession of the host key.

The certificate is checked the way Go's ``ssh.CertChecker`` (and so SPIRE) checks a host
certificate: it must be of type host, name at least one principal, be signed by one of the
configured certificate authorities with a signature that verifies, carry no critical option,
and be valid at the server's clock (``valid_after <= now < valid_before``). With
``canonical_domain`` its first principal must lie in that domain. Then the agent signs a fresh
challenge with the host key. Nothing is stored, so a refusal leaves nothing behind.
"""

from __future__ import annotations

__all__ = ["ServerSshPopAttestor"]

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from pyspire_nodeattestor_sshpop import ssh
from pyspire_nodeattestor_sshpop.config import PLUGIN_NAME, SshPopServerConfig
from pyspire_nodeattestor_sshpop.protocol import decode_answer, decode_payload, encode_challenge
from pyspire_sdk.agent_path import AgentPathTemplate
from pyspire_sdk.challenge import combined_digest, new_nonce
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError, PluginError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import Challenger
from pyspire_sdk.spiffeid import SpiffeId

_FOREVER = 2**64 - 1


def _load_authorities(config: SshPopServerConfig) -> frozenset[bytes]:
    found = ssh.parse_authorities(config.cert_authorities, "cert_authorities")
    path = config.cert_authorities_path
    if path is not None:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not text"
            raise PluginError(
                f"sshpop: cert_authorities_path: cannot read {str(path)!r}: {reason}"
            ) from None
        from_file = ssh.parse_authorities(text.splitlines(), f"cert_authorities_path {str(path)!r}")
        if not from_file:
            raise PluginError(f"sshpop: cert_authorities_path: {str(path)!r} holds no key")
        found += from_file
    return frozenset(found)


@dataclass(frozen=True)
class _Checked:
    certificate: serialization.SSHCertificate
    blob: bytes
    hostname: str


def _moment(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _check(
    blob: bytes, authorities: frozenset[bytes], canonical_domain: str, now: datetime
) -> _Checked:
    """The certificate checks, in Go's order; CPU work (a signature), worth a thread."""
    certificate = ssh.certificate_from_blob(blob)
    principals = [p.decode("utf-8", "replace") for p in certificate.valid_principals]
    if not principals:
        raise PermissionDeniedError("the host certificate names no principal")
    if certificate.type != serialization.SSHCertificateType.HOST:
        raise PermissionDeniedError(
            "the certificate is a user certificate; sshpop needs a host certificate"
        )
    if ssh.key_blob(certificate.signature_key()) not in authorities:
        raise PermissionDeniedError(
            "the host certificate is not signed by a trusted certificate authority"
        )
    try:
        certificate.verify_cert_signature()
    except InvalidSignature:
        raise PermissionDeniedError("the host certificate's signature does not verify") from None
    if certificate.critical_options:
        option = sorted(certificate.critical_options)[0].decode("utf-8", "replace")
        raise PermissionDeniedError(f"the host certificate has a critical option {option!r}")
    seconds = int(now.timestamp())
    if seconds < certificate.valid_after:
        raise PermissionDeniedError(
            f"the host certificate is not valid before {_moment(certificate.valid_after)}"
        )
    if certificate.valid_before != _FOREVER and seconds >= certificate.valid_before:
        raise PermissionDeniedError(
            f"the host certificate expired at {_moment(certificate.valid_before)}"
        )
    hostname = principals[0]
    if canonical_domain:
        suffix = "." + canonical_domain
        if not hostname.endswith(suffix):
            raise PermissionDeniedError(
                f"the certificate's principal {hostname!r} is not in domain {suffix!r}"
            )
        hostname = hostname.removesuffix(suffix)
    return _Checked(certificate=certificate, blob=blob, hostname=hostname)


class ServerSshPopAttestor:
    """SPIRE's ``sshpop`` server node attestor; see the module documentation."""

    def __init__(self) -> None:
        self._host: HostServices | None = None
        self._config = SshPopServerConfig()
        self._authorities: frozenset[bytes] = frozenset()
        self._template: AgentPathTemplate | None = None

    async def configure(self, config: SshPopServerConfig, host: HostServices) -> None:
        """Read the CA keys; PluginError naming the setting that holds a bad one."""
        try:
            authorities = await asyncio.to_thread(_load_authorities, config)
            template = config.template
        except InvalidArgumentError as error:
            raise PluginError(f"sshpop: {error}") from None
        if not authorities:
            raise PluginError("sshpop: cert_authorities: no certificate authority to trust")
        self._host, self._config = host, config
        self._authorities, self._template = authorities, template

    async def close(self) -> None:
        """Forget the configuration."""
        self._host = self._template = None
        self._authorities = frozenset()

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        """Check the host certificate, then the agent's signature of a fresh challenge."""
        host, template = self._host, self._template
        if host is None or template is None:
            raise PluginError("sshpop: used before configure")
        return await self._attest(host, template, payload, challenge)

    async def _attest(
        self,
        host: HostServices,
        template: AgentPathTemplate,
        payload: bytes,
        challenge: Challenger,
    ) -> AttestationResult:
        blob = decode_payload(payload)
        checked = await asyncio.to_thread(
            _check, blob, self._authorities, self._config.canonical_domain, host.clock.now()
        )
        server_nonce = new_nonce()
        agent_nonce, signature = decode_answer(await challenge(encode_challenge(server_nonce)))
        try:
            digest = combined_digest(server_nonce, agent_nonce)
        except InvalidArgumentError as error:
            raise PermissionDeniedError(
                f"challenge response verification failed: {error}"
            ) from None
        public_key = checked.certificate.public_key()
        await asyncio.to_thread(ssh.verify, public_key, digest, signature)
        return AttestationResult(
            agent_id=self._agent_id(template, checked), selector_values=(), can_reattest=True
        )

    def _agent_id(self, template: AgentPathTemplate, checked: _Checked) -> SpiffeId:
        assert self._host is not None
        certificate = checked.certificate
        facts = {
            "PluginName": PLUGIN_NAME,
            "Fingerprint": ssh.fingerprint(checked.blob),
            "Hostname": checked.hostname,
            "KeyId": certificate.key_id.decode("utf-8", "replace"),
            "Serial": certificate.serial,
            "ValidPrincipals": [p.decode("utf-8", "replace") for p in certificate.valid_principals],
        }
        try:
            return template.agent_id(self._host.trust_domain, facts)
        except InvalidArgumentError as error:
            raise PermissionDeniedError(f"cannot name the agent: {error}") from None
