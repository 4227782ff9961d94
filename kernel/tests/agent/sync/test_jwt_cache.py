"""JWT-SVIDs: cached per (entry, audiences), renewed at half-life, minted once at a time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.jwt_cache import JwtSvidCache, audience_key
from pyspire.agent.sync import SyncManager
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.model import JwtSvid, RegistrationEntry
from pyspire_sdk.testing import FakeClock

from .fakes import FakeServerApi, entry


@pytest.fixture
def web(server: FakeServerApi) -> RegistrationEntry:
    registered = entry("web")
    server.add(registered)
    return registered


async def test_second_request_is_a_cache_hit(
    server: FakeServerApi, cache: WorkloadCache, web: RegistrationEntry
) -> None:
    first = await cache.fetch_jwt_svid(web, ["b", "a"])
    second = await cache.fetch_jwt_svid(web, ["a", "b", "a"])
    assert second is first
    assert server.calls["new_jwt_svid"] == 1
    assert first.audience == ("b", "a")
    # Another audience set is another token.
    other = await cache.fetch_jwt_svid(web, ["a"])
    assert other.token != first.token
    assert server.calls["new_jwt_svid"] == 2


async def test_renewed_at_half_life(
    server: FakeServerApi, cache: WorkloadCache, web: RegistrationEntry, fake_clock: FakeClock
) -> None:
    first = await cache.fetch_jwt_svid(web, ["aud"])
    lifetime = first.expires_at - first.issued_at
    await fake_clock.advance(lifetime / 2 - timedelta(seconds=1))
    assert await cache.fetch_jwt_svid(web, ["aud"]) is first
    await fake_clock.advance(timedelta(seconds=1))
    renewed = await cache.fetch_jwt_svid(web, ["aud"])
    assert renewed.token != first.token
    assert renewed.issued_at == fake_clock.now()
    assert server.calls["new_jwt_svid"] == 2


async def test_concurrent_requests_share_one_mint(
    server: FakeServerApi, cache: WorkloadCache, web: RegistrationEntry
) -> None:
    server.jwt_gate = asyncio.Event()
    callers = [asyncio.create_task(cache.fetch_jwt_svid(web, ["aud"])) for _ in range(10)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert server.calls["new_jwt_svid"] == 1
    assert cache.jwt_svids.in_flight == 1
    server.jwt_gate.set()
    results = await asyncio.gather(*callers)
    assert {result.token for result in results} == {"token-1"}
    assert server.calls["new_jwt_svid"] == 1
    assert cache.jwt_svids.in_flight == 0


async def test_a_caller_that_gives_up_hands_the_mint_to_one_still_waiting(
    server: FakeServerApi, cache: WorkloadCache, web: RegistrationEntry
) -> None:
    server.jwt_gate = asyncio.Event()
    first = asyncio.create_task(cache.fetch_jwt_svid(web, ["aud"]))
    others = [asyncio.create_task(cache.fetch_jwt_svid(web, ["aud"])) for _ in range(3)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert server.calls["new_jwt_svid"] == 1
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    for _ in range(3):
        await asyncio.sleep(0)
    assert server.calls["new_jwt_svid"] == 2  # one waiting caller took the mint over
    assert cache.jwt_svids.in_flight == 1
    server.jwt_gate.set()
    results = await asyncio.gather(*others)
    assert len({svid.token for svid in results}) == 1
    assert len(cache.jwt_svids) == 1
    assert cache.jwt_svids.in_flight == 0


async def test_mint_errors_reach_every_caller_and_are_not_cached(
    server: FakeServerApi, cache: WorkloadCache, web: RegistrationEntry
) -> None:
    server.jwt_gate = asyncio.Event()
    server.jwt_error = UnavailableError("server away")
    callers = [asyncio.create_task(cache.fetch_jwt_svid(web, ["aud"])) for _ in range(3)]
    await asyncio.sleep(0)
    server.jwt_gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, UnavailableError) for result in results)
    assert len(cache.jwt_svids) == 0
    server.jwt_gate = None
    server.jwt_error = None
    assert (await cache.fetch_jwt_svid(web, ["aud"])).token == "token-1"


async def test_entry_revision_change_or_removal_drops_tokens(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, web: RegistrationEntry
) -> None:
    await manager.sync_now()
    first = await cache.fetch_jwt_svid(web, ["aud"])
    updated = server.bump("web")
    # Asked with the updated entry: the old token is not handed out.
    renewed = await cache.fetch_jwt_svid(updated, ["aud"])
    assert renewed.token != first.token

    await manager.sync_now()
    assert len(cache.jwt_svids) == 1
    del server.entries["web"]
    await manager.sync_now()
    assert len(cache.jwt_svids) == 0


async def test_cache_is_bounded_least_recently_used_first(fake_clock: FakeClock) -> None:
    jwt_cache = JwtSvidCache(fake_clock, max_size=2)
    minted: list[str] = []
    registered = entry("web")

    def minter(name: str):  # type: ignore[no-untyped-def]
        async def mint() -> JwtSvid:
            minted.append(name)
            now = fake_clock.now()
            return JwtSvid(
                spiffe_id=registered.spiffe_id,
                token=name,
                audience=(name,),
                expires_at=now + timedelta(minutes=5),
                issued_at=now,
            )

        return mint

    await jwt_cache.get(registered, ["a"], minter("a"))
    await jwt_cache.get(registered, ["b"], minter("b"))
    await jwt_cache.get(registered, ["a"], minter("a"))  # a is now the most recent
    await jwt_cache.get(registered, ["c"], minter("c"))  # evicts b
    assert len(jwt_cache) == 2
    await jwt_cache.get(registered, ["a"], minter("a"))
    await jwt_cache.get(registered, ["b"], minter("b"))
    assert minted == ["a", "b", "c", "b"]
    await jwt_cache.close()


async def test_no_task_outlives_its_caller_and_a_closed_cache_keeps_nothing(
    server: FakeServerApi, fake_clock: FakeClock, web: RegistrationEntry
) -> None:
    cache = WorkloadCache(server, fake_clock)
    server.jwt_gate = asyncio.Event()
    before = asyncio.all_tasks()
    caller = asyncio.create_task(cache.fetch_jwt_svid(web, ["aud"]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert cache.jwt_svids.in_flight == 1
    assert asyncio.all_tasks() - before == {caller}  # the mint runs in its caller's task
    await cache.close()
    server.jwt_gate.set()
    await caller  # the caller still gets its token; the closed cache does not keep it
    assert len(cache.jwt_svids) == 0
    assert cache.jwt_svids.in_flight == 0
    with pytest.raises(InvalidArgumentError, match="closed"):
        await cache.fetch_jwt_svid(web, ["aud"])


def test_audience_key_rules() -> None:
    assert audience_key(["b", "a", "b"]) == ("a", "b")
    with pytest.raises(InvalidArgumentError, match="audience must be specified"):
        audience_key([])
    with pytest.raises(InvalidArgumentError, match="empty value"):
        audience_key(["a", ""])


def test_jwt_cache_refuses_a_zero_bound(fake_clock: FakeClock) -> None:
    with pytest.raises(InvalidArgumentError, match="max_size must be at least 1"):
        JwtSvidCache(fake_clock, max_size=0)
