"""The per-address token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from pyspire.server.api import ratelimit
from pyspire.server.api.ratelimit import PerIpRateLimiter, ResourceExhaustedError
from pyspire.transport.calls import status_for
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.testing import FakeClock


async def test_one_per_second_per_address(fake_clock: FakeClock) -> None:
    limiter = PerIpRateLimiter(fake_clock, 1.0)
    limiter.check("10.0.0.1")
    with pytest.raises(ResourceExhaustedError, match=r"^rejecting request from 10.0.0.1: over"):
        limiter.check("10.0.0.1")
    limiter.check("10.0.0.2")
    await fake_clock.advance(0.5)
    with pytest.raises(ResourceExhaustedError):
        limiter.check("10.0.0.1")
    await fake_clock.advance(0.5)
    limiter.check("10.0.0.1")


async def test_bursts_and_batches(fake_clock: FakeClock) -> None:
    limiter = PerIpRateLimiter(fake_clock, 500.0)
    limiter.check("a", 400)
    with pytest.raises(ResourceExhaustedError):
        limiter.check("a", 101)
    limiter.check("a", 100)
    with pytest.raises(ResourceExhaustedError):
        limiter.check("b", 501)
    await fake_clock.advance(10)
    limiter.check("a", 500)


def test_unix_socket_callers_are_not_limited(fake_clock: FakeClock) -> None:
    limiter = PerIpRateLimiter(fake_clock, 1.0)
    for _ in range(10):
        limiter.check("")
    assert len(limiter) == 0


async def test_idle_buckets_are_dropped(fake_clock: FakeClock) -> None:
    limiter = PerIpRateLimiter(fake_clock, 1.0)
    for index in range(1000):
        limiter.check(f"10.0.{index // 256}.{index % 256}")
    assert len(limiter) == 1000
    await fake_clock.advance(2)
    for _ in range(30):
        limiter.check("10.9.9.9")
        await fake_clock.advance(1)
    assert len(limiter) < 10


def test_bad_settings_are_refused(fake_clock: FakeClock) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^rate 0 must be positive$"):
        PerIpRateLimiter(fake_clock, 0)
    with pytest.raises(InvalidArgumentError, match=r"^burst 0 must be at least 1$"):
        PerIpRateLimiter(fake_clock, 1, burst=0)


def test_the_error_is_resource_exhausted() -> None:
    assert status_for(ResourceExhaustedError("x")).name == "RESOURCE_EXHAUSTED"
    assert ratelimit.ATTESTATION_PER_IP == 1.0
