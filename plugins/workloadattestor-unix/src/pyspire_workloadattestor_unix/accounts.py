"""User and group names for numeric IDs: the seam, the system databases behind it, and a
short-lived cache in front of them."""

from __future__ import annotations

__all__ = [
    "NAME_CACHE_SIZE",
    "NAME_CACHE_TTL",
    "AccountDirectory",
    "CachedAccounts",
    "SystemAccounts",
]

import grp
import pwd
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError

NAME_CACHE_TTL = timedelta(seconds=5)
"""How long a looked-up name (or the absence of one) is reused: a user or group renamed,
added or removed shows in selectors at most this long after the change."""

NAME_CACHE_SIZE = 1024
"""The most user IDs, and separately group IDs, whose names are remembered at once."""


@runtime_checkable
class AccountDirectory(Protocol):
    """Names users and groups by ID. Lookups may block (NSS may ask LDAP or SSSD), so the
    attestor calls them in a worker thread; they must be safe to call from several threads."""

    def user_name(self, uid: int) -> str | None:
        """The name of user ``uid``, or ``None`` when the user has no name."""
        ...

    def group_name(self, gid: int) -> str | None:
        """The name of group ``gid``, or ``None`` when the group has no name."""
        ...


class SystemAccounts:
    """The system's user and group databases (``/etc/passwd``, ``/etc/group`` and whatever
    else NSS is configured with), asked on every call so renamed accounts show at once."""

    def user_name(self, uid: int) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_name or None
        except (KeyError, OverflowError):
            return None

    def group_name(self, gid: int) -> str | None:
        try:
            return grp.getgrgid(gid).gr_name or None
        except (KeyError, OverflowError):
            return None


class CachedAccounts:
    """Remembers the answers of another :class:`AccountDirectory` for ``ttl`` on ``clock``.

    Every Workload API call attests its caller, and a busy agent asks the same few IDs many
    times a second; with NSS backed by LDAP or SSSD each lookup may be a network round trip.
    Names change rarely, so an answer, including "no name", is reused until ``ttl`` has passed
    on ``clock`` since it was looked up (:data:`NAME_CACHE_TTL` by default); a lookup after that
    asks ``directory`` again. At most ``max_entries`` user IDs and as many group IDs are kept;
    the oldest answer makes room for a new one, so memory stays bounded whatever IDs callers
    run as.

    Like any :class:`AccountDirectory` it may block (on a miss) and is safe to call from several
    threads: the cache is guarded by a lock that is never held while ``directory`` is asked.
    """

    def __init__(
        self,
        directory: AccountDirectory,
        clock: Clock,
        *,
        ttl: timedelta = NAME_CACHE_TTL,
        max_entries: int = NAME_CACHE_SIZE,
    ) -> None:
        if ttl <= timedelta(0):
            raise InvalidArgumentError(f"ttl must be positive, got {ttl}")
        if max_entries < 1:
            raise InvalidArgumentError(f"max_entries must be at least 1, got {max_entries}")
        self._directory = directory
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._users: dict[int, tuple[datetime, str | None]] = {}
        self._groups: dict[int, tuple[datetime, str | None]] = {}

    @property
    def directory(self) -> AccountDirectory:
        """The directory asked on a miss."""
        return self._directory

    def user_name(self, uid: int) -> str | None:
        return self._lookup(self._users, uid, self._directory.user_name)

    def group_name(self, gid: int) -> str | None:
        return self._lookup(self._groups, gid, self._directory.group_name)

    def _lookup(
        self,
        cache: dict[int, tuple[datetime, str | None]],
        key: int,
        ask: Callable[[int], str | None],
    ) -> str | None:
        now = self._clock.now()
        with self._lock:
            cached = cache.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        name = ask(key)
        with self._lock:
            cache.pop(key, None)
            while len(cache) >= self._max_entries:
                del cache[next(iter(cache))]
            cache[key] = (now + self._ttl, name)
        return name
