"""The server half: checks where the agent says it can be reached, sends a nonce, and fetches the
nonce back from ``http://<hostname>:<port>/...``: only a process that listens there (on a port
below 1024, a privileged one) can serve it.

Order of checks, each refusing with its reason: the payload parses; the port is the required
one and, unless allowed, below 1024; the agent name and the host name are valid and the host
name matches ``allowed_dns_patterns``; the agent acknowledges the challenge as SPIRE's agent
does; the fetched text is the nonce. The agent is ``http_challenge/<hostname>``. With ``tofu``
the result is not reattestable, so the server admits each host name once (its agent renews
after that) and refuses a second attestation of it; without ``tofu`` the host attests again
whenever it proves the name again.
"""

from __future__ import annotations

__all__ = ["ServerHttpChallengeAttestor"]

import hmac
import re
from typing import TYPE_CHECKING

from pyspire_nodeattestor_http_challenge.config import (
    PLUGIN_NAME,
    ROOT_PORTS,
    HttpChallengeServerConfig,
)
from pyspire_nodeattestor_http_challenge.protocol import (
    ACKNOWLEDGEMENT,
    AttestationData,
    agent_name_problem,
    challenge_url,
    decode_payload,
    encode_challenge,
    hostname_problem,
    new_nonce_text,
)
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError, PluginError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import Challenger, agent_id

if TYPE_CHECKING:
    from pyspire_nodeattestor_http_challenge.fetch import ChallengeFetcher


class ServerHttpChallengeAttestor:
    """SPIRE's ``http_challenge`` server node attestor; see the module documentation."""

    def __init__(self) -> None:
        self._host: HostServices | None = None
        self._config = HttpChallengeServerConfig()
        self._patterns: tuple[re.Pattern[str], ...] = ()
        self._fetcher: ChallengeFetcher | None = None

    async def configure(self, config: HttpChallengeServerConfig, host: HostServices) -> None:
        """Compile the patterns and open the HTTP client (aiohttp is imported only now, so a
        process that does not use this attestor never loads it)."""
        from pyspire_nodeattestor_http_challenge.fetch import ChallengeFetcher

        try:
            patterns = tuple(re.compile(pattern) for pattern in config.allowed_dns_patterns)
        except re.error as error:
            raise PluginError(f"http_challenge: allowed_dns_patterns: {error}") from None
        self._host, self._config, self._patterns = host, config, patterns
        self._fetcher = ChallengeFetcher()

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._fetcher is not None:
            await self._fetcher.close()
            self._fetcher = None
        self._host = None

    def _check(self, data: AttestationData) -> None:
        config = self._config
        if config.required_port is not None and data.port != config.required_port:
            raise InvalidArgumentError(
                f"port {data.port} is not allowed to be used by this server (required_port "
                f"is {config.required_port})"
            )
        if not 0 < data.port <= 65535:
            raise InvalidArgumentError(f"payload.port {data.port} is not a TCP port")
        if not config.allow_non_root_ports and data.port >= ROOT_PORTS:
            raise InvalidArgumentError(
                f"port {data.port} is not allowed to be >= {ROOT_PORTS} (allow_non_root_ports "
                "is false)"
            )
        problem = agent_name_problem(data.agentname)
        if problem is not None:
            raise InvalidArgumentError(problem)
        problem = hostname_problem(data.hostname)
        if problem is not None:
            raise PermissionDeniedError(problem)
        if self._patterns and not any(p.search(data.hostname) for p in self._patterns):
            raise PermissionDeniedError(
                f"hostname {data.hostname!r} is not allowed to attest: it matches none of "
                "allowed_dns_patterns"
            )

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        """Check the payload, send the nonce, fetch it back from the agent's host."""
        host, fetcher = self._host, self._fetcher
        if host is None or fetcher is None:
            raise PluginError("http_challenge: used before configure")
        return await self._attest(host, fetcher, payload, challenge)

    async def _attest(
        self,
        host: HostServices,
        fetcher: ChallengeFetcher,
        payload: bytes,
        challenge: Challenger,
    ) -> AttestationResult:
        data = decode_payload(payload)
        self._check(data)
        nonce = new_nonce_text()
        answer = await challenge(encode_challenge(nonce))
        if answer != ACKNOWLEDGEMENT:
            raise InvalidArgumentError(
                "challenge response is not the acknowledgement (a newline) SPIRE's agent sends"
            )
        url = challenge_url(data)
        served = await fetcher.fetch(url)
        if not hmac.compare_digest(served.encode(), nonce.encode()):
            raise PermissionDeniedError(
                f"challenge verification failed: {url} did not answer the expected nonce"
            )
        return AttestationResult(
            agent_id=agent_id(host.trust_domain, PLUGIN_NAME, data.hostname),
            selector_values=(f"hostname:{data.hostname}",),
            can_reattest=not self._config.tofu,
        )
