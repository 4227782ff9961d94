"""A remote JWK Set: cached, refreshed on age and on unknown key IDs (bounded), kept on failure."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.http import HttpClient
from pyspire_sdk.jwks import RemoteJwks, openid_jwks_uri
from pyspire_sdk.jwt import ClaimRules, UnknownKeyError
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.loopback import LoopbackServer, serve_loopback
from pyspire_sdk.testing.tokens import TokenIssuer

RULES = ClaimRules(audiences=("spire",))


class Provider:
    """An identity provider on loopback: discovery document and key set, switchable off."""

    def __init__(self) -> None:
        self.issuer = TokenIssuer()
        self.up = True
        self.document: Any = None

    async def jwks(self, request: web.Request) -> web.Response:
        if not self.up:
            raise web.HTTPServiceUnavailable()
        return web.json_response(self.document or self.issuer.jwks())

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"jwks_uri": f"{request.scheme}://{request.host}/keys"})

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", "/keys", self.jwks),
            ("GET", "/tenant/.well-known/openid-configuration", self.discovery),
        ]


def token(issuer: TokenIssuer, clock: FakeClock, **header: Any) -> str:
    now = clock.now().timestamp()
    return issuer.issue({"aud": "spire", "exp": now + 300}, **header)


def fetched(server: LoopbackServer) -> int:
    return sum(1 for request in server.requests if request.path == "/keys")


async def test_keys_are_cached_and_refreshed_when_stale(fake_clock: FakeClock) -> None:
    provider = Provider()
    async with serve_loopback(provider.routes()) as server, HttpClient() as http:
        jwks = RemoteJwks(http, server.url + "/keys", fake_clock)
        for _ in range(3):
            await jwks.verify(
                token(provider.issuer, fake_clock), algorithms=("RS256",), rules=RULES
            )
        assert fetched(server) == 1
        await fake_clock.advance(timedelta(minutes=59))
        await jwks.keys()
        assert fetched(server) == 1
        await fake_clock.advance(timedelta(minutes=1))
        await jwks.keys()
        assert fetched(server) == 2


async def test_a_rotated_key_is_found_by_an_early_refresh(fake_clock: FakeClock) -> None:
    provider = Provider()
    async with serve_loopback(provider.routes()) as server, HttpClient() as http:
        jwks = RemoteJwks(http, server.url + "/keys", fake_clock)
        await jwks.keys()
        await fake_clock.advance(timedelta(seconds=30))
        provider.issuer.rotate()
        parsed = await jwks.verify(
            token(provider.issuer, fake_clock), algorithms=("RS256",), rules=RULES
        )
        assert parsed.key_id == provider.issuer.key_id
        assert fetched(server) == 2


async def test_made_up_key_ids_cannot_flood_the_provider(fake_clock: FakeClock) -> None:
    provider = Provider()
    async with serve_loopback(provider.routes()) as server, HttpClient() as http:
        jwks = RemoteJwks(http, server.url + "/keys", fake_clock)
        for number in range(20):
            forged = token(provider.issuer, fake_clock, key_id=f"made-up-{number}")
            with pytest.raises(UnknownKeyError, match=f"made-up-{number}"):
                await jwks.verify(forged, algorithms=("RS256",), rules=RULES)
        assert fetched(server) == 1
        await fake_clock.advance(timedelta(seconds=30))
        with pytest.raises(UnknownKeyError):
            await jwks.verify(
                token(provider.issuer, fake_clock, key_id="x"), algorithms=("RS256",), rules=RULES
            )
        assert fetched(server) == 2


async def test_a_failed_refresh_keeps_the_last_set(fake_clock: FakeClock) -> None:
    provider = Provider()
    async with serve_loopback(provider.routes()) as server, HttpClient() as http:
        jwks = RemoteJwks(http, server.url + "/keys", fake_clock)
        await jwks.keys()
        provider.up = False
        await fake_clock.advance(timedelta(hours=2))
        await jwks.verify(token(provider.issuer, fake_clock), algorithms=("RS256",), rules=RULES)
        assert fetched(server) == 2
        provider.document = {"keys": []}
        provider.up = True
        await fake_clock.advance(timedelta(hours=2))
        await jwks.verify(token(provider.issuer, fake_clock), algorithms=("RS256",), rules=RULES)
        assert fetched(server) == 3


async def test_without_any_set_the_caller_is_told_why(fake_clock: FakeClock) -> None:
    provider = Provider()
    provider.up = False
    async with serve_loopback(provider.routes()) as server, HttpClient() as http:
        jwks = RemoteJwks(http, server.url + "/keys", fake_clock)
        with pytest.raises(
            UnavailableError, match=r"cannot fetch the key set: GET .*/keys: HTTP 503"
        ):
            await jwks.keys()
        with pytest.raises(UnavailableError, match="no key set fetched yet"):
            await jwks.keys()
        assert fetched(server) == 1
        provider.up = True
        provider.document = {"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}
        await fake_clock.advance(timedelta(seconds=30))
        with pytest.raises(UnavailableError, match="no usable signature key"):
            await jwks.keys()


async def test_the_location_can_come_from_openid_discovery(fake_clock: FakeClock) -> None:
    provider = Provider()
    async with serve_loopback(provider.routes()) as server, HttpClient() as http:
        assert await openid_jwks_uri(http, server.url + "/tenant/") == server.url + "/keys"
        jwks = RemoteJwks(http, lambda: openid_jwks_uri(http, server.url + "/tenant"), fake_clock)
        await jwks.verify(token(provider.issuer, fake_clock), algorithms=("RS256",), rules=RULES)
        with pytest.raises(UnavailableError, match="openid-configuration: HTTP 404"):
            await openid_jwks_uri(http, server.url + "/other")


def test_the_minimum_interval_cannot_exceed_the_refresh_interval(fake_clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="min_refresh_interval"):
        RemoteJwks(
            HttpClient(), "https://x/keys", fake_clock, min_refresh_interval=timedelta(hours=2)
        )
