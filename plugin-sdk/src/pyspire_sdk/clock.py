"""Time as an injected dependency.

Everything in pyspire that depends on time (CA rotation, SVID expiry, sync intervals) asks a
:class:`Clock`, never the wall clock, so tests drive it with
:class:`pyspire_sdk.testing.FakeClock` instead of sleeping.
"""

from __future__ import annotations

__all__ = ["Clock", "SystemClock", "utc"]

import asyncio
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


def utc(moment: datetime) -> datetime:
    """Return ``moment`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@runtime_checkable
class Clock(Protocol):
    """The source of the current time and of waiting."""

    def now(self) -> datetime:
        """The current time, an aware UTC datetime."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...


class SystemClock:
    """The real clock of the machine."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
