"""The server half: verifies the agent's certificate chain, then its possession of the key.

Order of checks, each refusing with its reason: the payload parses and keeps to the limits;
the chain verifies against the trusted CAs (the CA files, or the server's own bundle in
``spiffe`` mode) at the server's clock and the certificate may sign; with
``verify_client_ip``, the agent's address is one of the certificate's IP SANs; the agent
answers a fresh challenge with a signature of the certificate's key; in ``spiffe`` mode the
certificate is an X509-SVID under ``svid_prefix``. Only then is the agent named, from the
agent path template. Nothing is stored by the attestor, so a refusal leaves nothing behind.
"""

from __future__ import annotations

__all__ = ["ServerX509PopAttestor"]

import asyncio
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509 import verification

from pyspire_nodeattestor_x509pop import chain as chains
from pyspire_nodeattestor_x509pop.config import PLUGIN_NAME, X509PopServerConfig
from pyspire_nodeattestor_x509pop.protocol import decode_payload, new_challenge, verify_answer
from pyspire_sdk.agent_path import AgentPathTemplate
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError, PluginError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import Challenger, current_peer
from pyspire_sdk.spiffeid import SpiffeId


def _load_authorities(paths: tuple[Path, ...]) -> list[x509.Certificate]:
    found: list[x509.Certificate] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise PluginError(
                f"x509pop: cannot read the CA bundle {str(path)!r}: {error.strerror}"
            ) from None
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise PluginError(
                f"x509pop: the CA bundle {str(path)!r} holds no PEM certificate"
            ) from None
        found.extend(certificates)
    return found


@dataclass(frozen=True)
class _Configured:
    config: X509PopServerConfig
    host: HostServices
    template: AgentPathTemplate
    store: verification.Store | None
    """The trusted CAs in ``external_pki`` mode; ``None`` in ``spiffe`` mode."""


class ServerX509PopAttestor:
    """SPIRE's ``x509pop`` server node attestor; see the module documentation."""

    def __init__(self) -> None:
        self._configured: _Configured | None = None
        self._bundle_store: tuple[Bundle, verification.Store] | None = None

    async def configure(self, config: X509PopServerConfig, host: HostServices) -> None:
        """Load the CA files (``external_pki``) or check the server gives its bundle
        (``spiffe``); PluginError naming the file or the missing host service."""
        store: verification.Store | None = None
        if config.mode == "external_pki":
            paths = (
                (config.ca_bundle_path,)
                if config.ca_bundle_path is not None
                else config.ca_bundle_paths
            )
            authorities = await asyncio.to_thread(_load_authorities, paths)
            try:
                store = chains.trust_store(authorities)
            except InvalidArgumentError as error:
                raise PluginError(f"x509pop: {error} in ca_bundle_path(s)") from None
        elif host.trust_bundle is None:
            raise PluginError(
                "x509pop: spiffe mode needs the server's trust bundle, which this host does "
                "not provide"
            )
        try:
            template = config.template
        except InvalidArgumentError as error:
            raise PluginError(f"x509pop: agent_path_template: {error}") from None
        self._configured = _Configured(config=config, host=host, template=template, store=store)

    async def close(self) -> None:
        """Forget the configuration."""
        self._configured = None
        self._bundle_store = None

    async def _store(self, configured: _Configured) -> verification.Store:
        if configured.store is not None:
            return configured.store
        assert configured.host.trust_bundle is not None  # checked by configure
        bundle = await configured.host.trust_bundle.current_bundle()
        cached = self._bundle_store
        if cached is not None and cached[0] is bundle:
            return cached[1]
        try:
            store = chains.trust_store(a.certificate() for a in bundle.x509_authorities)
        except InvalidArgumentError:
            raise PermissionDeniedError(
                "the server's trust bundle has no X.509 authority to verify with"
            ) from None
        self._bundle_store = (bundle, store)
        return store

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        """Verify the agent's certificate and its possession of the key; name the agent."""
        configured = self._configured
        if configured is None:
            raise PluginError("x509pop: used before configure")
        return await self._attest(configured, payload, challenge)

    async def _attest(
        self, configured: _Configured, payload: bytes, challenge: Challenger
    ) -> AttestationResult:
        config, host = configured.config, configured.host
        presented = chains.parse_chain(
            decode_payload(payload),
            max_intermediates=config.max_intermediates,
            max_rsa_key_size=config.max_rsa_key_size,
        )
        store = await self._store(configured)
        verified = await asyncio.to_thread(chains.verify_chain, presented, store, host.clock.now())
        if config.verify_client_ip:
            _check_client_ip(verified.leaf)
        public_key = presented.public_key
        message, server_nonce = new_challenge(public_key)
        answer = await challenge(message)
        await asyncio.to_thread(verify_answer, public_key, server_nonce, answer)
        agent = self._agent_id(configured, presented, verified)
        return AttestationResult(
            agent_id=agent,
            selector_values=_selector_values(verified, host.trust_domain.name),
            can_reattest=True,
        )

    @staticmethod
    def _agent_id(
        configured: _Configured, presented: chains.Presented, verified: chains.Verified
    ) -> SpiffeId:
        config, trust_domain = configured.config, configured.host.trust_domain
        trimmed = ""
        if config.mode == "spiffe":
            path = chains.spiffe_path(verified.leaf)
            if path is None:
                raise PermissionDeniedError(
                    "spiffe mode: the certificate is no X509-SVID (it has no spiffe:// URI SAN)"
                )
            prefix = config.exchange_prefix
            if not path.startswith(prefix):
                raise PermissionDeniedError(
                    f"spiffe mode: the X509-SVID's path {path!r} is not under svid_prefix "
                    f"{prefix!r}"
                )
            trimmed = path[len(prefix) :]
        facts = {
            "PluginName": PLUGIN_NAME,
            "Fingerprint": chains.fingerprint(presented.leaf_der),
            "TrustDomain": trust_domain.name,
            "Subject": {"CommonName": chains.common_name(verified.leaf)},
            "SerialNumberHex": chains.serial_number_hex(verified.leaf.serial_number),
            "SVIDPathTrimmed": trimmed,
            "URISanSelectors": chains.san_selectors(verified.leaf, trust_domain.name),
        }
        try:
            return configured.template.agent_id(trust_domain, facts)
        except InvalidArgumentError as error:
            raise PermissionDeniedError(f"cannot name the agent: {error}") from None


def _check_client_ip(leaf: x509.Certificate) -> None:
    address = current_peer().address
    if address is None:
        raise PermissionDeniedError(
            "verify_client_ip is on, but the server does not know the agent's address"
        )
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        raise PermissionDeniedError(
            f"verify_client_ip: the agent's address {address!r} is not an IP address"
        ) from None
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    if client not in chains.ip_addresses(leaf):
        raise PermissionDeniedError(
            f"client IP {client} does not match any IP SAN of the agent's certificate"
        )


def _selector_values(verified: chains.Verified, trust_domain: str) -> tuple[str, ...]:
    leaf = verified.leaf
    values: list[str] = []
    name = chains.common_name(leaf)
    if name:
        values.append(f"subject:cn:{name}")
    for authority in verified.chain[1:]:
        values.append(f"ca:fingerprint:{chains.fingerprint(authority)}")
    values.append(f"serialnumber:{chains.serial_number_hex(leaf.serial_number)}")
    for key, value in chains.san_selectors(leaf, trust_domain).items():
        values.append(f"san:{key}:{value}")
    return tuple(dict.fromkeys(values))
