"""The one retry policy: exponential, capped, jitter that only shortens."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyspire_sdk.backoff import Backoff, BackoffPolicy


def test_delays_double_up_to_the_cap() -> None:
    policy = BackoffPolicy(initial=1, maximum=10, jitter=0)
    assert [policy.ceiling(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_huge_failure_counts_stay_at_the_cap() -> None:
    assert BackoffPolicy(initial=0.5, maximum=30).ceiling(10**6) == 30


@given(
    failures=st.integers(min_value=1, max_value=200),
    jitter=st.floats(min_value=0, max_value=1),
    seed=st.integers(),
)
def test_jitter_only_shortens(failures: int, jitter: float, seed: int) -> None:
    policy = BackoffPolicy(initial=0.25, maximum=60, jitter=jitter)
    delay = policy.delay(failures, random.Random(seed))
    ceiling = policy.ceiling(failures)
    assert ceiling * (1 - jitter) - 1e-9 <= delay <= ceiling


def test_jitter_spreads_clients_that_failed_together() -> None:
    policy = BackoffPolicy(initial=1, maximum=10, jitter=0.5)
    delays = {round(policy.delay(4), 6) for _ in range(50)}
    assert len(delays) > 40
    assert all(4 <= delay <= 8 for delay in delays)


def test_a_loop_starts_over_after_a_success() -> None:
    backoff = Backoff(BackoffPolicy(initial=1, maximum=100, jitter=0))
    assert [backoff.failed() for _ in range(3)] == [1, 2, 4]
    assert backoff.peek() == 8
    backoff.succeeded()
    assert backoff.failures == 0
    assert backoff.failed() == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"initial": 0, "maximum": 1}, "initial must be a positive"),
        ({"initial": 2, "maximum": 1}, r"maximum \(1\) must be at least initial \(2\)"),
        ({"initial": 1, "maximum": 2, "multiplier": 0.5}, "multiplier must be at least 1"),
        ({"initial": 1, "maximum": 2, "jitter": 1.5}, "jitter must be between 0 and 1"),
    ],
)
def test_nonsense_policies_are_refused(arguments: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackoffPolicy(**arguments)
