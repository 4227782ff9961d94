"""pytest plugin of the SDK, loaded automatically when ``pyspire-plugin-sdk`` is installed.

It provides the fixtures every contract suite builds on: ``fake_clock`` and ``host_services``,
and ``plugin_site`` for tests that install a plugin distribution
(:func:`~pyspire_sdk.testing.distribution.install_distribution`). The suites themselves are
classes to subclass (see :mod:`pyspire_sdk.testing`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
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


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory on ``sys.path`` where a test installs distributions (see
    :func:`~pyspire_sdk.testing.distribution.install_distribution`); the modules imported from
    it are forgotten afterwards, so the next test imports its own."""
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    before = set(sys.modules)
    yield directory
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if module is not None and str(directory) in str(getattr(module, "__file__", "")):
            del sys.modules[name]
