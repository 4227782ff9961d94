"""The agent half of ``aws_iid``: read the instance identity document and its signatures from
the instance metadata service.

IMDSv2 first, as AWS SDKs do: ``PUT <endpoint>/latest/api/token`` for a session token, sent
with every read as ``X-aws-ec2-metadata-token``; a metadata service that answers the PUT with
403, 404 or 405 does not offer sessions, and the reads go without one (IMDSv1). Then
``GET <endpoint>/latest/dynamic/instance-identity/{document,signature,rsa2048}``; the payload is
SPIRE's JSON of the three. There is no challenge. Each request is bounded by the SDK's HTTP
client (10 s, 16 KiB).
"""

from __future__ import annotations

__all__ = ["DEFAULT_METADATA_ENDPOINT", "AgentAwsIidAttestor", "AgentAwsIidConfig"]

from dataclasses import dataclass

from pyspire_nodeattestor_aws_iid.identity import AttestationData
from pyspire_sdk.config import setting
from pyspire_sdk.errors import PermissionDeniedError, PluginError, UnavailableError
from pyspire_sdk.http import HttpClient, HttpError
from pyspire_sdk.plugin import HostServices

DEFAULT_METADATA_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 21600
MAX_RESPONSE_BYTES = 16 * 1024
_NO_SESSIONS = (403, 404, 405)


@dataclass(frozen=True, kw_only=True)
class AgentAwsIidConfig:
    """The agent half's settings (SPIRE's key)."""

    ec2_metadata_endpoint: str = setting(
        "",
        description="base URL of the instance metadata service; empty: "
        f"{DEFAULT_METADATA_ENDPOINT}",
    )


def metadata_base(endpoint: str) -> str:
    """The URL under which ``/latest/...`` lives; SPIRE's documented form, which ends in
    ``/latest``, names the same service."""
    base = (endpoint or DEFAULT_METADATA_ENDPOINT).rstrip("/")
    return base.removesuffix("/latest")


class AgentAwsIidAttestor:
    """Presents the instance identity document and its signatures."""

    def __init__(self) -> None:
        self._base = DEFAULT_METADATA_ENDPOINT
        self._http: HttpClient | None = None

    async def configure(self, config: AgentAwsIidConfig, host: HostServices) -> None:
        """Keep the endpoint; the metadata service is asked at each attestation."""
        self._base = metadata_base(config.ec2_metadata_endpoint)
        if self._http is not None:
            await self._http.close()
        self._http = HttpClient(max_response_bytes=MAX_RESPONSE_BYTES)

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.close()

    async def _session_token(self, http: HttpClient) -> str | None:
        response = await http.request(
            "PUT",
            f"{self._base}/latest/api/token",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
            expect_ok=False,
        )
        if response.status in _NO_SESSIONS:
            return None
        if response.status != 200 or not response.body.strip():
            raise HttpError("PUT", response.url, f"HTTP {response.status}: no session token")
        return response.body.decode("ascii", "replace").strip()

    async def _read(self, http: HttpClient, name: str, token: str | None) -> str:
        headers = {"X-aws-ec2-metadata-token": token} if token else {}
        url = f"{self._base}/latest/dynamic/instance-identity/{name}"
        response = await http.get(url, headers=headers)
        try:
            return response.body.decode()
        except UnicodeDecodeError:
            raise HttpError("GET", url, "the answer is not UTF-8 text") from None

    async def attestation_payload(self) -> bytes:
        """The document and both signatures as SPIRE's JSON; :class:`UnavailableError` when
        the metadata service does not give them."""
        if self._http is None:
            raise PluginError("aws_iid: used before configure")
        try:
            token = await self._session_token(self._http)
            document = await self._read(self._http, "document", token)
            signature = await self._read(self._http, "signature", token)
            rsa2048 = await self._read(self._http, "rsa2048", token)
        except HttpError as error:
            raise UnavailableError(
                f"unable to read the instance identity document: {error}"
            ) from None
        return AttestationData(document, signature, rsa2048).to_payload()

    async def answer_challenge(self, challenge: bytes) -> bytes:
        """aws_iid has no challenges; receiving one means the server speaks another protocol."""
        raise PermissionDeniedError("aws_iid attestation does not use challenges")
