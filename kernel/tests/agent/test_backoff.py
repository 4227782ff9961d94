"""The agent's one retry policy: doubling delays, a cap, jitter from an injected source."""

from __future__ import annotations

import random

import pytest

from pyspire.agent.backoff import Backoff
from pyspire_sdk.errors import InvalidArgumentError


def test_delays_double_up_to_the_maximum_and_reset() -> None:
    backoff = Backoff(1.0, 10.0)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.failures == 6
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 1.0


def test_a_long_outage_never_overflows() -> None:
    backoff = Backoff(1.0, 60.0)
    backoff.failures = 10_000
    assert backoff.next_delay() == 60.0


def test_jitter_moves_each_delay_within_its_fraction() -> None:
    source = random.Random(7)
    backoff = Backoff(2.0, 2.0, jitter=0.5, rng=source)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(1.0 <= delay <= 3.0 for delay in delays)
    assert len(set(delays)) > 100, "the delays were not spread"


@pytest.mark.parametrize(
    ("initial", "maximum", "jitter"), [(0.0, 1.0, 0.0), (2.0, 1.0, 0.0), (1.0, 2.0, 1.0)]
)
def test_nonsense_settings_are_refused(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(InvalidArgumentError):
        Backoff(initial, maximum, jitter=jitter)
