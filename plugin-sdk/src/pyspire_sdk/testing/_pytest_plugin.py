"""pytest plugin of the SDK, loaded automatically when ``pyspire-plugin-sdk`` is installed.

It provides the fixtures every contract suite builds on: ``fake_clock`` and ``host_services``,
``plugin_site`` for tests that install a plugin distribution
(:func:`~pyspire_sdk.testing.distributions.install_distribution`), and ``moto_server`` for
tests of plugins that call AWS (:mod:`pyspire_sdk.testing.aws`). The suites themselves are
classes to subclass (see :mod:`pyspire_sdk.testing`); they mark their own tests for
pytest-asyncio, so they run in its default strict mode as well as in auto mode.

In strict mode an ``async def`` fixture declared with plain ``pytest.fixture`` is not run by
anyone, and pytest stops with a generic message; for the tests of a contract suite this plugin
adds what to write instead.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.aws import MotoServer
from pyspire_sdk.testing.fake_clock import FakeClock
from pyspire_sdk.testing.host import make_host_services

_SUITE_PACKAGE = "pyspire_sdk.testing."


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
    :func:`~pyspire_sdk.testing.distributions.install_distribution`); the modules imported from
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


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's server on loopback as AWS (:class:`~pyspire_sdk.testing.aws.MotoServer`), one
    per test session. What a test makes there stays for the next tests (moto takes a second or
    more to set a region up again after a reset), so tests make resources of their own, with
    the IDs AWS gives them or names of their own, rather than expect an empty account."""
    with MotoServer() as server:
        yield server


def _in_contract_suite(request: pytest.FixtureRequest) -> bool:
    """Whether the requesting test belongs to a subclass of one of the SDK's contract suites."""
    test_class = request.cls
    return test_class is not None and any(
        klass.__module__.startswith(_SUITE_PACKAGE) for klass in test_class.__mro__[1:]
    )


def _is_async(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    """Name the fix when a contract suite's test needs an async fixture nobody runs."""
    try:
        return (yield)
    except pytest.fail.Exception as error:
        if not (_is_async(fixturedef.func) and _in_contract_suite(request)):
            raise
        message = error.msg
    pytest.fail(
        f"{message}\nfixture {fixturedef.argname!r} is an async function declared with "
        "@pytest.fixture, which pytest-asyncio runs only in auto mode: declare it with "
        '@pytest_asyncio.fixture (import pytest_asyncio), or set asyncio_mode = "auto"',
        pytrace=False,
    )
