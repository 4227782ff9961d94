"""The server's fetch of an agent's challenge, with aiohttp's client.

One session per configured attestor, so connections and the resolver are shared, but no
connection is kept: every fetch opens its own (an agent's listener lives for one attestation).
Redirects are not followed, proxies named in the environment are not used (the host name itself
must answer), the whole fetch is bounded by :data:`FETCH_TIMEOUT`, and at most
:data:`~pyspire_nodeattestor_http_challenge.protocol.MAX_NONCE_TEXT` bytes of the answer are
read.
"""

from __future__ import annotations

__all__ = ["FETCH_TIMEOUT", "ChallengeFetcher"]


import aiohttp

from pyspire_nodeattestor_http_challenge.protocol import MAX_NONCE_TEXT
from pyspire_sdk.errors import PermissionDeniedError

FETCH_TIMEOUT = 10.0
"""Seconds one fetch may take, connection included (SPIRE's bound)."""

MAX_CONCURRENT_FETCHES = 100


class ChallengeFetcher:
    """Fetches challenges; :meth:`close` ends its session."""

    def __init__(self, timeout: float = FETCH_TIMEOUT) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(force_close=True, limit=MAX_CONCURRENT_FETCHES),
                trust_env=False,
                headers={"User-Agent": "pyspire-server"},
            )
        return self._session

    async def fetch(self, url: str) -> str:
        """The text at ``url``, stripped; PermissionDeniedError saying why it could not be had
        (no answer, another status than 200)."""
        try:
            async with self._open().get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise PermissionDeniedError(
                        f"challenge verification failed: {url} answered HTTP {response.status}"
                    )
                body = b""
                while len(body) < MAX_NONCE_TEXT:
                    chunk = await response.content.read(MAX_NONCE_TEXT - len(body))
                    if not chunk:
                        break
                    body += chunk
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            raise PermissionDeniedError(
                f"challenge verification failed: cannot fetch {url}: {reason}"
            ) from None
        return body.decode("utf-8", "replace").strip()

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
