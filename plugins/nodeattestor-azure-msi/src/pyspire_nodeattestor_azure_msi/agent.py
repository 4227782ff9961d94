"""The agent half of ``azure_msi``: fetch a managed identity token from the VM's IMDS.

``GET <imds_endpoint>/metadata/identity/oauth2/token?api-version=2018-02-01&resource=<r>``
with ``Metadata: true``, as SPIRE's agent asks; the payload is ``{"token": "<access token>"}``.
There is no challenge.
"""

from __future__ import annotations

__all__ = ["AgentAzureMsiAttestor", "AgentAzureMsiConfig", "fetch_msi_token"]

import json
from dataclasses import dataclass

from pyspire_nodeattestor_azure_msi.names import (
    DEFAULT_IMDS_ENDPOINT,
    DEFAULT_RESOURCE_ID,
    IMDS_API_VERSION,
)
from pyspire_sdk.config import setting
from pyspire_sdk.errors import PermissionDeniedError, PluginError, UnavailableError
from pyspire_sdk.http import HttpClient, HttpError
from pyspire_sdk.plugin import HostServices


@dataclass(frozen=True, kw_only=True)
class AgentAzureMsiConfig:
    """The agent half's settings (SPIRE's key, and where IMDS answers)."""

    resource_id: str = setting(
        DEFAULT_RESOURCE_ID,
        description="the resource (audience) the MSI token is requested for; the server "
        "refuses tokens for resources it does not expect",
    )
    imds_endpoint: str = setting(
        DEFAULT_IMDS_ENDPOINT, description="base URL of the Instance Metadata Service"
    )


async def fetch_msi_token(http: HttpClient, imds_endpoint: str, resource: str) -> dict[str, object]:
    """The IMDS answer for a managed identity token for ``resource`` (``access_token``,
    ``expires_in``, ...); :class:`~pyspire_sdk.http.HttpError` when IMDS gives none."""
    response = await http.get(
        imds_endpoint.rstrip("/") + "/metadata/identity/oauth2/token",
        headers={"Metadata": "true"},
        params={"api-version": IMDS_API_VERSION, "resource": resource},
    )
    answer = response.json_object()
    token = answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise HttpError(response.method, response.url, "the answer has no access_token")
    return answer


class AgentAzureMsiAttestor:
    """Presents the VM's managed identity token."""

    def __init__(self) -> None:
        self._config = AgentAzureMsiConfig()
        self._http: HttpClient | None = None

    async def configure(self, config: AgentAzureMsiConfig, host: HostServices) -> None:
        """Keep the settings; IMDS is asked at each attestation."""
        self._config = config
        self._http = HttpClient()

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.close()

    async def attestation_payload(self) -> bytes:
        """``{"token": ...}`` with a fresh MSI token; :class:`UnavailableError` when IMDS
        gives none."""
        if self._http is None:
            raise PluginError("azure_msi: used before configure")
        try:
            answer = await fetch_msi_token(
                self._http, self._config.imds_endpoint, self._config.resource_id
            )
        except HttpError as error:
            raise UnavailableError(f"unable to fetch the MSI token: {error}") from None
        return json.dumps({"token": answer["access_token"]}).encode()

    async def answer_challenge(self, challenge: bytes) -> bytes:
        """azure_msi has no challenges; receiving one means the server speaks another
        protocol."""
        raise PermissionDeniedError("azure_msi attestation does not use challenges")
