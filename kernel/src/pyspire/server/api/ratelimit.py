"""Per-client-address rate limits for expensive server calls (SPIRE's ``ratelimit`` block).

A token bucket per IP address: ``rate`` tokens per second, at most ``burst`` saved up. Time comes
from the injected clock, so tests advance a fake clock instead of sleeping. Buckets of addresses
that have been quiet long enough to be full again are dropped, so a scan from many addresses
cannot grow the table without bound.
"""

from __future__ import annotations

__all__ = ["ATTESTATION_PER_IP", "SIGNING_PER_IP", "PerIpRateLimiter", "ResourceExhaustedError"]

from dataclasses import dataclass

from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError, PyspireError

ATTESTATION_PER_IP = 1.0
"""Agent attestations allowed per second from one IP address (SPIRE's limit)."""

SIGNING_PER_IP = 500.0
"""Certificate signatures allowed per second from one IP address (SPIRE's limit)."""

_SWEEP_EVERY = 1024
"""How many calls between sweeps of idle buckets."""


class ResourceExhaustedError(PyspireError):
    """A caller went over a rate limit; retrying later succeeds."""

    grpc_status = "RESOURCE_EXHAUSTED"


@dataclass
class _Bucket:
    tokens: float
    updated: float


class PerIpRateLimiter:
    """Admits at most ``rate`` units per second per address, with bursts up to ``burst``.

    :meth:`check` either takes the tokens or raises :class:`ResourceExhaustedError`; a refused
    call takes nothing, so a client that backs off is admitted as soon as its bucket refills.
    An empty address (a unix-socket caller) is never limited.
    """

    def __init__(self, clock: Clock, rate: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise InvalidArgumentError(f"rate {rate} must be positive")
        capacity = float(burst) if burst is not None else max(rate, 1.0)
        if capacity < 1:
            raise InvalidArgumentError(f"burst {burst} must be at least 1")
        self._clock = clock
        self._rate = rate
        self._capacity = capacity
        self._buckets: dict[str, _Bucket] = {}
        self._calls = 0

    def __len__(self) -> int:
        """How many addresses have a bucket now."""
        return len(self._buckets)

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def check(self, address: str, count: int = 1, *, what: str = "request") -> None:
        """Take ``count`` tokens from ``address``'s bucket, or raise ResourceExhaustedError.

        ``count`` larger than the burst can never be admitted and is refused at once.
        """
        if not address:
            return
        now = self._now()
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(now)
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = _Bucket(tokens=self._capacity, updated=now)
            self._buckets[address] = bucket
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self._capacity, bucket.tokens + elapsed * self._rate)
            bucket.updated = now
        if bucket.tokens < count:
            raise ResourceExhaustedError(
                f"rejecting {what} from {address}: over the limit of {self._rate:g} per second"
            )
        bucket.tokens -= count

    def _sweep(self, now: float) -> None:
        refill_seconds = self._capacity / self._rate
        idle = [
            address
            for address, bucket in self._buckets.items()
            if now - bucket.updated >= refill_seconds
        ]
        for address in idle:
            del self._buckets[address]
