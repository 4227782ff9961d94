"""The agent half: listens for the length of each attestation, tells the server where, and
serves the server's nonce there once it arrives.

The listener is the attestation scope's: opened before the payload (which carries its port)
and closed once the server has answered, whatever the answer (see
:class:`~pyspire_sdk.plugins.node_attestor.ScopedAgentNodeAttestor`). aiohttp is imported only
when a scope opens.
"""

from __future__ import annotations

__all__ = ["AgentHttpChallengeAttestor"]

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from pyspire_nodeattestor_http_challenge.config import HttpChallengeAgentConfig
from pyspire_nodeattestor_http_challenge.protocol import (
    ACKNOWLEDGEMENT,
    AttestationData,
    decode_challenge,
    encode_payload,
    hostname_problem,
)
from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import HostServices

if TYPE_CHECKING:
    from pyspire_nodeattestor_http_challenge.listener import ChallengeListener


class AgentHttpChallengeAttestor:
    """SPIRE's ``http_challenge`` agent node attestor; see the module documentation."""

    def __init__(self) -> None:
        self._config: HttpChallengeAgentConfig | None = None
        self._hostname = ""
        self._listener: ChallengeListener | None = None

    async def configure(self, config: HttpChallengeAgentConfig, host: HostServices) -> None:
        """Settle the host name (this host's when unset)."""
        hostname = config.hostname or socket.gethostname()
        problem = hostname_problem(hostname)
        if problem is not None:
            raise PluginError(f"http_challenge: hostname: {problem}")
        self._config, self._hostname = config, hostname

    async def close(self) -> None:
        """Nothing outlives an attestation; forget the settings."""
        self._config = None

    @contextlib.asynccontextmanager
    async def _scope(self, config: HttpChallengeAgentConfig) -> AsyncIterator[None]:
        from pyspire_nodeattestor_http_challenge.listener import serve_challenge

        if self._listener is not None:
            raise PluginError("http_challenge: an attestation is already under way")
        async with serve_challenge(config.port, config.agentname) as listener:
            self._listener = listener
            try:
                yield
            finally:
                self._listener = None

    def attestation_scope(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Listen for the length of one attestation; UnavailableError when the port is taken."""
        if self._config is None:
            raise PluginError("http_challenge: used before configure")
        return self._scope(self._config)

    def _current(self) -> tuple[HttpChallengeAgentConfig, ChallengeListener]:
        if self._config is None:
            raise PluginError("http_challenge: used before configure")
        if self._listener is None:
            raise PluginError(
                "http_challenge: no attestation scope is open; the host must enter "
                "attestation_scope() around the attestation"
            )
        return self._config, self._listener

    async def attestation_payload(self) -> bytes:
        """Where the server is to fetch the challenge: host name, agent name, port."""
        config, listener = self._current()
        return encode_payload(
            AttestationData(
                hostname=self._hostname,
                agentname=config.agentname,
                port=config.advertised_port or listener.port,
            )
        )

    async def answer_challenge(self, challenge: bytes) -> bytes:
        """Serve the nonce; acknowledge as SPIRE's agent does."""
        _, listener = self._current()
        listener.serve(decode_challenge(challenge))
        return ACKNOWLEDGEMENT
