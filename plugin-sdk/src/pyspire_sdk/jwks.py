"""A JWK Set published over HTTPS, fetched when needed and kept fresh.

Identity providers (Google, Microsoft Entra, any OpenID Connect issuer) publish the keys their
tokens are signed with as a JWK Set and rotate them. :class:`RemoteJwks` keeps the last set it
fetched and fetches again when it is older than ``refresh_interval``, or sooner when a token
names a key ID the set does not have (a key the provider just started using), but never more
often than every ``min_refresh_interval``: tokens with made-up key IDs cannot turn the verifier
into a flood of requests. Concurrent callers share one fetch. When a refresh fails, the last
good set stays in use (and the failure is logged); with none yet, the caller gets
:class:`~pyspire_sdk.errors.UnavailableError`.

The location is a URL, or an OpenID Connect issuer whose discovery document names it
(:func:`openid_jwks_uri`). Time comes from the injected clock.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MIN_REFRESH_INTERVAL",
    "DEFAULT_REFRESH_INTERVAL",
    "RemoteJwks",
    "openid_jwks_uri",
]

import asyncio
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta

import structlog

from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.http import HttpClient, HttpError, redacted_url
from pyspire_sdk.jwk import JwkSet, parse_jwk_set
from pyspire_sdk.jwt import MAX_TOKEN_BYTES, ClaimRules, ParsedJwt, parse_jwt, verify_jwt

DEFAULT_REFRESH_INTERVAL = timedelta(hours=1)
"""How long a fetched set is used before it is fetched again."""

DEFAULT_MIN_REFRESH_INTERVAL = timedelta(seconds=30)
"""The least time between two fetches, whatever key IDs tokens name."""

_WELL_KNOWN = "/.well-known/openid-configuration"


async def openid_jwks_uri(http: HttpClient, issuer: str) -> str:
    """The ``jwks_uri`` of an OpenID Connect issuer, from its discovery document
    (``<issuer>/.well-known/openid-configuration``). Raises
    :class:`~pyspire_sdk.http.HttpError` when the document cannot be had or names none."""
    url = issuer.rstrip("/") + _WELL_KNOWN
    document = (await http.get(url)).json_object()
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise HttpError("GET", url, "the discovery document has no jwks_uri")
    return jwks_uri


class RemoteJwks:
    """The JWK Set at ``location``: a URL, or an async function that finds the URL (called
    at each fetch, so a discovery document is followed when it changes)."""

    def __init__(
        self,
        http: HttpClient,
        location: str | Callable[[], Awaitable[str]],
        clock: Clock,
        *,
        refresh_interval: timedelta = DEFAULT_REFRESH_INTERVAL,
        min_refresh_interval: timedelta = DEFAULT_MIN_REFRESH_INTERVAL,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        if min_refresh_interval > refresh_interval:
            raise ValueError("min_refresh_interval must not exceed refresh_interval")
        self._http = http
        self._location = location
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._min_refresh_interval = min_refresh_interval
        self._logger = logger if logger is not None else structlog.get_logger()
        self._keys: JwkSet | None = None
        self._fetched_at: datetime | None = None
        self._attempted_at: datetime | None = None
        self._fetching = asyncio.Lock()
        self.fetches = 0
        """How many fetches were attempted (for tests and metrics)."""

    async def keys(self, key_id: str | None = None) -> JwkSet:
        """The current set; fetched first when it is stale, or when it lacks ``key_id`` and
        the last fetch is older than ``min_refresh_interval``."""
        if not self._wants_fetch(key_id):
            if self._keys is None:
                raise UnavailableError("no key set fetched yet")
            return self._keys
        async with self._fetching:
            if self._wants_fetch(key_id):
                await self._fetch()
            if self._keys is None:
                raise UnavailableError("no key set fetched yet")
            return self._keys

    def _wants_fetch(self, key_id: str | None) -> bool:
        now = self._clock.now()
        if self._keys is None or self._fetched_at is None:
            return self._attempted_at is None or (
                now - self._attempted_at >= self._min_refresh_interval
            )
        if now - self._fetched_at >= self._refresh_interval:
            return self._attempted_at is None or (
                now - self._attempted_at >= self._min_refresh_interval
            )
        if key_id is not None and not self._keys.find(key_id):
            last = self._attempted_at or self._fetched_at
            return now - last >= self._min_refresh_interval
        return False

    async def _fetch(self) -> None:
        self._attempted_at = self._clock.now()
        self.fetches += 1
        url = ""
        try:
            url = self._location if isinstance(self._location, str) else await self._location()
            document = (await self._http.get(url)).json()
            keys = parse_jwk_set(document)
        except (HttpError, InvalidArgumentError) as error:
            if self._keys is None:
                raise UnavailableError(f"cannot fetch the key set: {error}") from None
            self._logger.warning(
                "key set refresh failed; keeping the last one",
                url=redacted_url(url),
                error=str(error),
            )
            return
        if not keys.keys:
            message = f"the key set at {redacted_url(url)} has no usable signature key"
            if self._keys is None:
                raise UnavailableError(message)
            self._logger.warning(message + "; keeping the last one")
            return
        self._keys = keys
        self._fetched_at = self._attempted_at

    async def verify(
        self,
        token: str | bytes,
        *,
        algorithms: Collection[str],
        rules: ClaimRules,
        header_fields: Collection[str] | None = None,
        max_bytes: int = MAX_TOKEN_BYTES,
    ) -> ParsedJwt:
        """:func:`~pyspire_sdk.jwt.verify_jwt` against this set at the clock's time; a token
        whose key ID the set lacks gets one early refresh (see above) before it is refused.
        Raises a :class:`~pyspire_sdk.jwt.InvalidJwtError` for a refused token and
        :class:`~pyspire_sdk.errors.UnavailableError` when there are no keys to verify with."""
        parsed = parse_jwt(
            token, algorithms=algorithms, header_fields=header_fields, max_bytes=max_bytes
        )
        keys = await self.keys(parsed.key_id)
        return verify_jwt(
            token,
            keys,
            algorithms=algorithms,
            rules=rules,
            now=self._clock.now(),
            header_fields=header_fields,
            max_bytes=max_bytes,
        )
