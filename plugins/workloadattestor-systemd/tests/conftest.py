"""A private D-Bus daemon for the whole test session, or a skip saying why there is none, and a
fake systemd on it for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from pyspire_workloadattestor_systemd.testing import (
    FakeSystemd,
    PrivateBus,
    dbus_unavailable_reason,
)


@pytest.fixture(scope="session")
def private_bus() -> Iterator[PrivateBus]:
    reason = dbus_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    bus = PrivateBus()
    try:
        bus.start()
    except RuntimeError as error:
        pytest.skip(str(error)[-2000:])
    try:
        yield bus
    finally:
        bus.close()


@pytest_asyncio.fixture
async def fake_systemd(private_bus: PrivateBus) -> AsyncIterator[FakeSystemd]:
    async with FakeSystemd(private_bus.address) as systemd:
        yield systemd
