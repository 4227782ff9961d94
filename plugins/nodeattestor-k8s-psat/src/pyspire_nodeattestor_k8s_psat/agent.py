"""The agent half of ``k8s_psat``: read the projected service account token from its file.

The payload is ``{"cluster": "<cluster>", "token": "<token>"}``, as SPIRE's agent sends it.
The file is read at each attestation (the kubelet rotates it). There is no challenge.
"""

from __future__ import annotations

__all__ = ["DEFAULT_TOKEN_PATH", "AgentK8sPsatAttestor", "AgentK8sPsatConfig"]

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.config import setting
from pyspire_sdk.errors import PermissionDeniedError, UnavailableError
from pyspire_sdk.plugin import HostServices

DEFAULT_TOKEN_PATH = Path("/var/run/secrets/tokens/spire-agent")
MAX_TOKEN_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class AgentK8sPsatConfig:
    """The agent half's settings (SPIRE's keys)."""

    cluster: str = setting(
        description="name of the cluster, as a key of the server's `clusters` table"
    )
    token_path: Path = setting(
        DEFAULT_TOKEN_PATH, description="file of the projected service account token"
    )


def _read_token(path: Path) -> str:
    with path.open("rb") as handle:
        data = handle.read(MAX_TOKEN_BYTES + 1)
    if len(data) > MAX_TOKEN_BYTES:
        raise ValueError(f"longer than {MAX_TOKEN_BYTES} bytes")
    token = data.decode("ascii").strip()
    if not token:
        raise ValueError("the file is empty")
    return token


class AgentK8sPsatAttestor:
    """Presents the pod's projected service account token."""

    def __init__(self) -> None:
        self._config: AgentK8sPsatConfig | None = None

    async def configure(self, config: AgentK8sPsatConfig, host: HostServices) -> None:
        """Keep the settings; the token file is read at each attestation."""
        self._config = config

    async def close(self) -> None:
        """Nothing to release."""

    async def attestation_payload(self) -> bytes:
        """``{"cluster", "token"}``; :class:`UnavailableError` naming the file when it cannot
        be read."""
        if self._config is None:
            raise UnavailableError("k8s_psat: used before configure")
        path = self._config.token_path
        try:
            token = await asyncio.to_thread(_read_token, path)
        except (OSError, UnicodeDecodeError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            raise UnavailableError(
                f"unable to load the token from {str(path)!r}: {reason}"
            ) from None
        return json.dumps({"cluster": self._config.cluster, "token": token}).encode()

    async def answer_challenge(self, challenge: bytes) -> bytes:
        """k8s_psat has no challenges; receiving one means the server speaks another protocol."""
        raise PermissionDeniedError("k8s_psat attestation does not use challenges")
