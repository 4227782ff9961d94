"""pytest plugin of the SDK, loaded automatically when ``pyspire-plugin-sdk`` is installed.

It provides the fixtures every contract suite builds on: ``fake_clock`` and ``host_services``.
The suites themselves are classes to subclass (see :mod:`pyspire_sdk.testing`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.fake_clock import FakeClock
from pyspire_sdk.testing.host import make_host_services


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock at 2030-01-01T00:00:00Z that moves only with ``await fake_clock.advance(...)``."""
    return FakeClock()


@pytest.fixture
def host_services(tmp_path: Path, fake_clock: FakeClock) -> HostServices:
    """Host services for trust domain ``example.org`` on the fake clock, data in ``tmp_path``."""
    return make_host_services(tmp_path, clock=fake_clock)
