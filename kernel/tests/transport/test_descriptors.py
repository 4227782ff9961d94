"""Raising the open-files limit to what a server's connections need."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from pyspire.transport.descriptors import raise_open_files_limit


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
