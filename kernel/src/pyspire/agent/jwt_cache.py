"""JWT-SVIDs the agent has minted, kept until half their lifetime has passed.

A workload asking for a JWT-SVID usually asks again with the same audience shortly after, and
each mint is a round trip to the server. So the agent keeps each JWT-SVID under its entry and its
(sorted, de-duplicated) audiences, and hands the same token out until half of its lifetime has
passed, as SPIRE does. A token is also dropped when its entry's revision changes, since the entry
(its SPIFFE ID, its JWT TTL) decides what the token says.

Concurrent requests for the same key share one mint (single flight): the first caller runs it in
its own task, the others wait for its outcome. No task is started here, so every mint belongs to
the call that asked for it and ends with it: should that caller give up (the workload hung up),
its mint is cancelled and one of the callers still waiting runs the mint in its place.
"""

from __future__ import annotations

__all__ = ["DEFAULT_JWT_SVID_CACHE_MAX_SIZE", "JwtSvidCache", "audience_key"]

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from pyspire.agent.tainted import jwt_key_id
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import JwtSvid, RegistrationEntry

DEFAULT_JWT_SVID_CACHE_MAX_SIZE = 1000
"""SPIRE's default ``jwt_svid_cache_max_size``."""

_Key = tuple[str, tuple[str, ...]]


def audience_key(audience: Sequence[str]) -> tuple[str, ...]:
    """The cache key of an audience list: sorted and de-duplicated, so order does not matter.

    Raises :class:`InvalidArgumentError` when the list is empty or names an empty audience.
    """
    if not audience:
        raise InvalidArgumentError("audience must be specified")
    if any(not value for value in audience):
        raise InvalidArgumentError("audience must not contain an empty value")
    return tuple(sorted(set(audience)))


class _Flight:
    """One mint in progress and, once it ends, its outcome for the callers waiting on it."""

    __slots__ = ("done", "error", "svid")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.svid: JwtSvid | None = None
        self.error: Exception | None = None


@dataclass(frozen=True, slots=True)
class _Cached:
    svid: JwtSvid
    revision: int


class JwtSvidCache:
    """A bounded, least-recently-used map of (entry id, audiences) to a JWT-SVID.

    Guarantees: a token is handed out only while ``now`` is before its half-life (the midpoint of
    ``issued_at`` and ``expires_at``) and while its entry keeps the revision it was minted for;
    at most ``max_size`` tokens are kept (the least recently used one goes first); at most one
    mint per key is in flight at any time.
    """

    def __init__(self, clock: Clock, *, max_size: int = DEFAULT_JWT_SVID_CACHE_MAX_SIZE) -> None:
        if max_size < 1:
            raise InvalidArgumentError(f"max_size must be at least 1, found {max_size}")
        self._clock = clock
        self._max_size = max_size
        self._tokens: OrderedDict[_Key, _Cached] = OrderedDict()
        self._in_flight: dict[_Key, _Flight] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def in_flight(self) -> int:
        """How many mints are running now."""
        return len(self._in_flight)

    async def get(
        self,
        entry: RegistrationEntry,
        audience: Sequence[str],
        mint: Callable[[], Awaitable[JwtSvid]],
    ) -> JwtSvid:
        """The cached JWT-SVID for ``entry`` and ``audience`` if still fresh, else a new one.

        ``mint`` is called (at most once per key at a time) when there is no fresh token; its
        errors reach every caller waiting on it and nothing is cached then.
        """
        if self._closed:
            raise InvalidArgumentError("jwt svid cache is closed")
        key: _Key = (entry.id, audience_key(audience))
        cached = self._tokens.get(key)
        if cached is not None:
            if cached.revision == entry.revision_number and self._fresh(cached.svid):
                self._tokens.move_to_end(key)
                return cached.svid
            del self._tokens[key]
        while True:
            flight = self._in_flight.get(key)
            if flight is None:
                return await self._lead(key, entry.revision_number, mint)
            await flight.done.wait()
            if flight.svid is not None:
                return flight.svid
            if flight.error is not None:
                raise flight.error
            # The caller running the mint gave up before it ended: run it here instead.

    async def _lead(
        self, key: _Key, revision: int, mint: Callable[[], Awaitable[JwtSvid]]
    ) -> JwtSvid:
        flight = _Flight()
        self._in_flight[key] = flight
        try:
            svid = flight.svid = await mint()
        except Exception as error:
            flight.error = error
            raise
        finally:
            del self._in_flight[key]
            flight.done.set()
        if not self._closed:
            self._tokens[key] = _Cached(svid, revision)
            self._tokens.move_to_end(key)
            while len(self._tokens) > self._max_size:
                self._tokens.popitem(last=False)
        return svid

    def _fresh(self, svid: JwtSvid) -> bool:
        half_life = svid.issued_at + (svid.expires_at - svid.issued_at) / 2
        return self._clock.now() < half_life

    def retain(self, revisions: Mapping[str, int]) -> None:
        """Drop tokens of entries not in ``revisions`` (entry id → current revision number) or
        minted for another revision of their entry."""
        stale = [
            key for key, cached in self._tokens.items() if revisions.get(key[0]) != cached.revision
        ]
        for key in stale:
            del self._tokens[key]

    def drop_signed_by(self, key_ids: Collection[str]) -> int:
        """Drop every token signed by one of ``key_ids`` (tainted JWT keys); returns how many.
        The next request for them mints a new token with the active key."""
        if not key_ids:
            return 0
        dropped = [
            key for key, cached in self._tokens.items() if jwt_key_id(cached.svid.token) in key_ids
        ]
        for key in dropped:
            del self._tokens[key]
        return len(dropped)

    def forget(self, entry_ids: Collection[str]) -> None:
        """Drop every token of these entries."""
        if not entry_ids:
            return
        for key in [key for key in self._tokens if key[0] in entry_ids]:
            del self._tokens[key]

    def clear(self) -> None:
        """Drop every cached token (mints in flight still finish for their callers)."""
        self._tokens.clear()

    async def close(self) -> None:
        """Drop every token; later calls fail. Mints in flight belong to their callers, whose
        owners (the Workload API's calls) end them; what they mint is no longer kept."""
        self._closed = True
        self._tokens.clear()
