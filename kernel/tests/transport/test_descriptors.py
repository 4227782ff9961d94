"""Raising the open-files limit to what a server's connections need."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from pyspire.transport.descriptors import connections_within, raise_open_files_limit
from pyspire.transport.limits import ConnectionLimits


@pytest.fixture
def limit() -> Iterator[tuple[int, int]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield soft, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_rises_up_to_the_hard_limit(limit: tuple[int, int]) -> None:
    _, hard = limit
    if hard == resource.RLIM_INFINITY or hard < 256:
        pytest.skip("needs a finite hard limit of at least 256")
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    assert raise_open_files_limit(200) == 200
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (200, hard)
    assert raise_open_files_limit(hard + 1000) == hard
    assert raise_open_files_limit(150) == hard, "never lowered"


def test_a_listener_keeps_no_more_connections_than_files_allow() -> None:
    limits = ConnectionLimits(max_connections=16384, max_unverified_per_address=64)
    assert connections_within(limits, 20000, 768) is limits
    fitted = connections_within(limits, 4096, 768)
    assert fitted.max_connections == 4096 - 768
    assert fitted.max_unverified_per_address == 64
    assert connections_within(limits, 100, 768).max_connections == 1
