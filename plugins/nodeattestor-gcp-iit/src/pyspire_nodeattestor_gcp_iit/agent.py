"""The agent half of ``gcp_iit``: fetch the instance identity token from the metadata service.

``GET http://<identity_token_host>/computeMetadata/v1/instance/service-accounts/<account>/
identity?audience=spire-gcp-node-attestor&format=full`` with ``Metadata-Flavor: Google``, as
SPIRE's agent asks; the token is the attestation payload. There is no challenge.
"""

from __future__ import annotations

__all__ = ["AgentGcpIitAttestor", "AgentGcpIitConfig", "identity_token_url"]

from dataclasses import dataclass
from urllib.parse import quote

from pyspire_nodeattestor_gcp_iit.identity import TOKEN_AUDIENCE
from pyspire_sdk.config import setting
from pyspire_sdk.errors import PermissionDeniedError, PluginError, UnavailableError
from pyspire_sdk.http import HttpClient, HttpError
from pyspire_sdk.plugin import HostServices

DEFAULT_IDENTITY_TOKEN_HOST = "metadata.google.internal"  # noqa: S105 - a host name
MAX_TOKEN_BYTES = 16 * 1024


@dataclass(frozen=True, kw_only=True)
class AgentGcpIitConfig:
    """The agent half's settings (SPIRE's keys)."""

    identity_token_host: str = setting(
        DEFAULT_IDENTITY_TOKEN_HOST,
        description="host (and port) of the metadata service the token is fetched from",
    )
    service_account: str = setting(
        "default", description="the service account whose identity token is fetched"
    )


def identity_token_url(host: str, service_account: str) -> str:
    """The metadata service URL of the identity token (query included)."""
    return (
        f"http://{host}/computeMetadata/v1/instance/service-accounts/"
        f"{quote(service_account, safe='@.')}/identity?audience={TOKEN_AUDIENCE}&format=full"
    )


class AgentGcpIitAttestor:
    """Presents the instance identity token."""

    def __init__(self) -> None:
        self._config = AgentGcpIitConfig()
        self._http: HttpClient | None = None

    async def configure(self, config: AgentGcpIitConfig, host: HostServices) -> None:
        """Keep the settings; the metadata service is asked at each attestation."""
        self._config = config
        self._http = HttpClient(max_response_bytes=MAX_TOKEN_BYTES)

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.close()

    async def attestation_payload(self) -> bytes:
        """A fresh identity token; :class:`UnavailableError` when the metadata service does
        not give one."""
        if self._http is None:
            raise PluginError("gcp_iit: used before configure")
        url = identity_token_url(self._config.identity_token_host, self._config.service_account)
        try:
            response = await self._http.get(url, headers={"Metadata-Flavor": "Google"})
        except HttpError as error:
            raise UnavailableError(f"unable to retrieve the identity token: {error}") from None
        token = response.body.strip()
        if not token:
            raise UnavailableError("unable to retrieve the identity token: the answer is empty")
        return token

    async def answer_challenge(self, challenge: bytes) -> bytes:
        """gcp_iit has no challenges; receiving one means the server speaks another protocol."""
        raise PermissionDeniedError("gcp_iit attestation does not use challenges")
