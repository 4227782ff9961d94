"""The name cache in front of the account databases: reuse for the TTL on the injected clock,
negative answers, the size bound, and concurrent use from worker threads."""

from __future__ import annotations

import grp
import os
import pwd
import threading
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from pyspire_workloadattestor_unix.accounts import (
    NAME_CACHE_SIZE,
    NAME_CACHE_TTL,
    AccountDirectory,
    CachedAccounts,
    SystemAccounts,
)

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.testing import FakeClock


@dataclass
class CountingAccounts:
    """Names by ID that count how often each ID was asked."""

    users: dict[int, str] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)
    asked: list[tuple[str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def user_name(self, uid: int) -> str | None:
        with self._lock:
            self.asked.append(("user", uid))
        return self.users.get(uid)

    def group_name(self, gid: int) -> str | None:
        with self._lock:
            self.asked.append(("group", gid))
        return self.groups.get(gid)


def test_the_cache_is_an_account_directory(fake_clock: FakeClock) -> None:
    assert isinstance(CachedAccounts(SystemAccounts(), fake_clock), AccountDirectory)
    assert timedelta(0) < NAME_CACHE_TTL <= timedelta(minutes=1), "names must stay recent"
    assert NAME_CACHE_SIZE >= 1


async def test_names_are_reused_until_the_ttl_has_passed(fake_clock: FakeClock) -> None:
    directory = CountingAccounts(users={1000: "alice"}, groups={100: "users"})
    cache = CachedAccounts(directory, fake_clock, ttl=timedelta(seconds=5))

    assert cache.user_name(1000) == "alice"
    assert cache.group_name(100) == "users"
    directory.users[1000] = "bob"
    directory.groups[100] = "staff"
    await fake_clock.advance(timedelta(seconds=4.999))
    assert (cache.user_name(1000), cache.group_name(100)) == ("alice", "users")
    assert directory.asked == [("user", 1000), ("group", 100)]

    await fake_clock.advance(timedelta(milliseconds=1))
    assert (cache.user_name(1000), cache.group_name(100)) == ("bob", "staff")
    assert len(directory.asked) == 4


async def test_an_id_without_a_name_is_remembered_too(fake_clock: FakeClock) -> None:
    directory = CountingAccounts()
    cache = CachedAccounts(directory, fake_clock)

    assert cache.user_name(4242) is None
    directory.users[4242] = "late"
    assert cache.user_name(4242) is None
    assert directory.asked == [("user", 4242)]

    await fake_clock.advance(NAME_CACHE_TTL)
    assert cache.user_name(4242) == "late"


def test_users_and_groups_with_the_same_id_are_kept_apart(fake_clock: FakeClock) -> None:
    cache = CachedAccounts(CountingAccounts(users={7: "user7"}, groups={7: "group7"}), fake_clock)

    assert (cache.user_name(7), cache.group_name(7)) == ("user7", "group7")
    assert (cache.user_name(7), cache.group_name(7)) == ("user7", "group7")


def test_the_oldest_answer_makes_room_beyond_the_size_bound(fake_clock: FakeClock) -> None:
    directory = CountingAccounts(users={1: "one", 2: "two", 3: "three"})
    cache = CachedAccounts(directory, fake_clock, max_entries=2)

    for uid in (1, 2, 3):
        cache.user_name(uid)
    directory.asked.clear()
    assert [cache.user_name(uid) for uid in (2, 3)] == ["two", "three"]
    assert directory.asked == []

    assert cache.user_name(1) == "one"
    assert directory.asked == [("user", 1)]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ttl": timedelta(0)}, "ttl must be positive"),
        ({"ttl": timedelta(seconds=-1)}, "ttl must be positive"),
        ({"max_entries": 0}, "max_entries must be at least 1"),
    ],
)
def test_impossible_settings_are_invalid(
    fake_clock: FakeClock, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        CachedAccounts(SystemAccounts(), fake_clock, **settings)  # type: ignore[arg-type]


def test_system_names_come_through_the_cache(fake_clock: FakeClock) -> None:
    cache = CachedAccounts(SystemAccounts(), fake_clock)
    uid, gid = os.geteuid(), os.getegid()

    try:
        expected_user: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        expected_user = None
    try:
        expected_group: str | None = grp.getgrgid(gid).gr_name
    except KeyError:
        expected_group = None

    assert cache.user_name(uid) == expected_user
    assert cache.group_name(gid) == expected_group
    assert cache.directory.user_name(uid) == expected_user


def test_concurrent_lookups_from_many_threads_agree(fake_clock: FakeClock) -> None:
    directory = CountingAccounts(users={uid: f"user{uid}" for uid in range(64)})
    cache = CachedAccounts(directory, fake_clock, max_entries=16)
    wrong: list[tuple[int, str | None]] = []
    start = threading.Barrier(8)

    def look_up() -> None:
        start.wait()
        for round_number in range(200):
            uid = round_number % 64
            name = cache.user_name(uid)
            if name != f"user{uid}":
                wrong.append((uid, name))

    threads = [threading.Thread(target=look_up) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not any(thread.is_alive() for thread in threads)
    assert wrong == []
