"""The one retry policy of the agent side: exponential backoff with optional jitter.

Whatever the agent retries against a server or an agent that is away or busy (its own
attestation and SVID rotation, a CLI watch of the Workload API) waits ``initial`` seconds after
the first failure, twice that after the second, and so on up to ``maximum``. With ``jitter`` each
wait is moved by up to that fraction of itself either way, so processes that failed together
(twenty agents refused by the server's attestation rate limit in the same second) do not all
come back in the same second again. Randomness comes from an injected :class:`random.Random`,
so tests are deterministic.
"""

from __future__ import annotations

__all__ = ["Backoff"]

import random

from pyspire_sdk.errors import InvalidArgumentError


class Backoff:
    """Delays after consecutive failures: ``initial``, ``2 * initial``, ... capped at
    ``maximum``, each multiplied by a factor drawn from ``[1 - jitter, 1 + jitter]``."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise InvalidArgumentError(
                f"backoff needs 0 < initial <= maximum, found initial={initial} maximum={maximum}"
            )
        if not 0.0 <= jitter < 1.0:
            raise InvalidArgumentError(f"backoff jitter {jitter} must be in [0, 1)")
        self._initial = initial
        self._maximum = maximum
        self._jitter = jitter
        self._rng = rng if rng is not None else random.SystemRandom()
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure and return the seconds to wait before the next attempt."""
        # The exponent is bounded so the float never overflows, however long the outage.
        delay = float(min(self._maximum, self._initial * 2.0 ** min(self.failures, 64)))
        self.failures += 1
        if self._jitter:
            delay *= 1.0 + self._rng.uniform(-self._jitter, self._jitter)
        return delay

    def reset(self) -> None:
        """Forget the failures: the attempt succeeded."""
        self.failures = 0
