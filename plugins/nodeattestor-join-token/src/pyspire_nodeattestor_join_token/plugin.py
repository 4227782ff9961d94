"""The ``join_token`` node attestor, both halves, and their registrations.

The agent sends the token as the attestation payload; the server consumes it through the host's
join-token store (one transaction: a replay finds nothing) and checks its expiry. The token
becomes the last segment of the agent ID, so it must be a valid path segment.
"""

from __future__ import annotations

__all__ = [
    "PLUGIN_NAME",
    "AgentJoinTokenAttestor",
    "AgentJoinTokenConfig",
    "ServerJoinTokenAttestor",
    "pyspire_agent_node_attestors",
    "pyspire_server_node_attestors",
]

from dataclasses import dataclass

from pyspire_sdk.config import setting
from pyspire_sdk.errors import (
    InvalidArgumentError,
    InvalidSpiffeIdError,
    NotFoundError,
    PermissionDeniedError,
    PluginError,
)
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import (
    HostServices,
    JoinTokenStore,
    NoConfig,
    PluginRegistration,
    hookimpl,
)
from pyspire_sdk.plugins.node_attestor import (
    AgentNodeAttestor,
    Challenger,
    ServerNodeAttestor,
    agent_id,
)

PLUGIN_NAME = "join_token"
MAX_TOKEN_BYTES = 256


class ServerJoinTokenAttestor:
    """Verifies join tokens: known, unused, unexpired."""

    def __init__(self) -> None:
        self._host: HostServices | None = None
        self._tokens: JoinTokenStore | None = None

    async def configure(self, config: NoConfig, host: HostServices) -> None:
        """Needs the host's join-token store, which only a server provides."""
        if host.join_tokens is None:
            raise PluginError("join_token: the host provides no join-token store (server only)")
        self._host = host
        self._tokens = host.join_tokens

    async def close(self) -> None:
        """Nothing to release."""

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        """Consume the token in ``payload`` and return the agent ID it grants."""
        if self._host is None or self._tokens is None:
            raise PluginError("join_token: used before configure")
        token = _decode(payload)
        try:
            agent = agent_id(self._host.trust_domain, PLUGIN_NAME, token)
        except InvalidSpiffeIdError:
            raise InvalidArgumentError(
                "join token has characters not allowed in a SPIFFE ID path segment"
            ) from None
        try:
            record = await self._tokens.consume(token)
        except NotFoundError:
            raise PermissionDeniedError(
                "join token does not exist or has already been used"
            ) from None
        if record.expires_at <= self._host.clock.now():
            raise PermissionDeniedError("join token expired")
        self._host.logger.info("join token consumed", agent_id=str(agent))
        return AttestationResult(agent_id=agent, can_reattest=False)


def _decode(payload: bytes) -> str:
    if not payload:
        raise InvalidArgumentError("join token is missing from the attestation payload")
    if len(payload) > MAX_TOKEN_BYTES:
        raise InvalidArgumentError(f"join token is longer than {MAX_TOKEN_BYTES} bytes")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError("join token is not valid UTF-8") from None


@dataclass(frozen=True, kw_only=True)
class AgentJoinTokenConfig:
    """The agent half's settings."""

    token: str = setting(
        "",
        description="the join token; filled from the agent's join_token / -joinToken when empty",
        secret=True,
    )


class AgentJoinTokenAttestor:
    """Presents the configured join token; there is no challenge to answer."""

    def __init__(self) -> None:
        self._token = ""

    async def configure(self, config: AgentJoinTokenConfig, host: HostServices) -> None:
        """Keep the token (it may be empty when the agent resumes with a stored SVID)."""
        self._token = config.token

    async def close(self) -> None:
        """Forget the token."""
        self._token = ""

    async def attestation_payload(self) -> bytes:
        """The token itself; PluginError when none was configured."""
        if not self._token:
            raise PluginError(
                "join_token: no join token configured (set join_token or pass -joinToken)"
            )
        return self._token.encode("utf-8")

    async def answer_challenge(self, challenge: bytes) -> bytes:
        """join_token has no challenges; receiving one means the server speaks another protocol."""
        raise PermissionDeniedError("join_token attestation does not use challenges")


@hookimpl
def pyspire_server_node_attestors() -> list[PluginRegistration[NoConfig, ServerNodeAttestor]]:
    """Offer the server half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=NoConfig,
            factory=ServerJoinTokenAttestor,
            description="one-time join tokens created by an operator",
        )
    ]


@hookimpl
def pyspire_agent_node_attestors() -> list[
    PluginRegistration[AgentJoinTokenConfig, AgentNodeAttestor]
]:
    """Offer the agent half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=AgentJoinTokenConfig,
            factory=AgentJoinTokenAttestor,
            description="presents a one-time join token",
        )
    ]
