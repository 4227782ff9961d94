"""The server's fetch of an agent's challenge, through the SDK's bounded HTTP client.

One client per configured attestor. The SDK's bounds are what this fetch needs: redirects are
not followed and proxies named in the environment are not used (the host name itself must
answer), the whole fetch is bounded by :data:`FETCH_TIMEOUT`, and an answer longer than
:data:`~pyspire_nodeattestor_http_challenge.protocol.MAX_NONCE_TEXT` bytes is refused unread.
"""

from __future__ import annotations

__all__ = ["FETCH_TIMEOUT", "ChallengeFetcher"]


from pyspire_nodeattestor_http_challenge.protocol import MAX_NONCE_TEXT
from pyspire_sdk.errors import PermissionDeniedError
from pyspire_sdk.http import HttpClient, HttpError, HttpStatusError

FETCH_TIMEOUT = 10.0
"""Seconds one fetch may take, connection included (SPIRE's bound)."""


class ChallengeFetcher:
    """Fetches challenges; :meth:`close` ends its connections."""

    def __init__(self, timeout: float = FETCH_TIMEOUT) -> None:
        self._client = HttpClient(
            timeout=timeout,
            connect_timeout=timeout,
            max_response_bytes=MAX_NONCE_TEXT,
        )

    async def fetch(self, url: str) -> str:
        """The text at ``url``, stripped; PermissionDeniedError saying why it could not be had
        (no answer, another status than 200, an answer too long to be a nonce)."""
        try:
            response = await self._client.get(url, headers={"User-Agent": "pyspire-server"})
        except HttpStatusError as error:
            raise PermissionDeniedError(
                f"challenge verification failed: {url} answered HTTP {error.status}"
            ) from None
        except HttpError as error:
            raise PermissionDeniedError(
                f"challenge verification failed: cannot fetch {error.url}: {error.reason}"
            ) from None
        if response.status != 200:
            raise PermissionDeniedError(
                f"challenge verification failed: {url} answered HTTP {response.status}"
            )
        return response.body.decode("utf-8", "replace").strip()

    async def close(self) -> None:
        """Close the client and its connections."""
        await self._client.close()
