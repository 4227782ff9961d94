"""The one retry policy: exponential delays with jitter, capped.

Every loop in pyspire that retries something that failed (a sync with the server, an
attestation refused by a rate limit, a bundle publisher whose destination is down, a plugin's
call to a cloud API) waits by this policy, so behaviour under an outage is the same everywhere
and is tuned in one place. Jitter spreads many clients that failed together (a server restart
seen by ten thousand agents) so they do not come back in lockstep; it only ever shortens a
delay, so ``maximum`` is a true upper bound and a server that is down is never hammered faster
than the policy says.
"""

from __future__ import annotations

__all__ = ["Backoff", "BackoffPolicy"]

import random
import secrets
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait after the n-th consecutive failure.

    The delay after ``failures`` failures (counting from 1) is
    ``min(maximum, initial * multiplier ** (failures - 1))``, shortened by up to ``jitter``
    of itself at random: with ``jitter = 0.5`` a 10 s delay becomes 5 to 10 s.
    """

    initial: float
    maximum: float
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not self.initial > 0:
            raise ValueError(f"initial must be a positive number of seconds, got {self.initial}")
        if not self.maximum >= self.initial:
            raise ValueError(f"maximum ({self.maximum}) must be at least initial ({self.initial})")
        if not self.multiplier >= 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def ceiling(self, failures: int) -> float:
        """The delay after ``failures`` failures before jitter (``failures`` >= 1)."""
        exponent = max(0, failures - 1)
        if self.multiplier == 1:
            return self.initial
        # Stop growing once past the cap, so huge failure counts never overflow.
        delay = self.initial
        for _ in range(exponent):
            delay *= self.multiplier
            if delay >= self.maximum:
                return self.maximum
        return min(self.maximum, delay)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """A jittered delay after ``failures`` failures, in ``[ceiling*(1-jitter), ceiling]``."""
        ceiling = self.ceiling(failures)
        draw = rng.random() if rng is not None else secrets.randbelow(1 << 53) / (1 << 53)
        return ceiling * (1.0 - self.jitter * draw)


class Backoff:
    """The failure count of one retry loop, and its next delay under a :class:`BackoffPolicy`.

    Call :meth:`failed` after each failure to learn how long to wait, :meth:`succeeded` after
    a success to start over. ``rng`` makes the jitter reproducible in tests.
    """

    def __init__(self, policy: BackoffPolicy, *, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; the seconds to wait before the next attempt."""
        self.failures += 1
        return self.policy.delay(self.failures, self._rng)

    def succeeded(self) -> None:
        """Forget the failures: the next failure waits ``initial`` again."""
        self.failures = 0

    def peek(self) -> float:
        """The un-jittered delay the next failure would bring, for messages (``retry_in``)."""
        return self.policy.ceiling(self.failures + 1)
