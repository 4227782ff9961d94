"""The server runtime wires notifiers and bundle publishers to the CA: they hear of the bundle
at start, and of the next CA the rotation publishes, on a fake clock; a notifier's veto stops
the start before any listener opens and closes every plugin. Every plugin reads the same bundle
through its host's ``trust_bundle``."""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pyspire.ca.rotation import ROTATION_INTERVAL
from pyspire.catalog import Discovery
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.server.notifications import NotifierVetoError
from pyspire.server.runtime import ServerRuntime
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import FailedPreconditionError
from pyspire_sdk.plugin import HostServices, NoConfig, PluginRegistration, hookimpl
from pyspire_sdk.plugins.notifier import BundleLoaded, BundleUpdated, NotifierEvent
from pyspire_sdk.testing import FakeClock

from .delivery import until

CA_TTL = timedelta(minutes=2)


class MemoryNotifier:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.told: list[NotifierEvent] = []
        self.closed = False
        self.host: HostServices | None = None

    async def configure(self, config: Any, host: HostServices) -> None:
        self.host = host

    async def close(self) -> None:
        self.closed = True

    async def notify_and_advise(self, event: NotifierEvent) -> None:
        if self.refuse:
            raise FailedPreconditionError("nowhere to put the bundle")
        self.told.append(event)

    async def notify(self, event: NotifierEvent) -> None:
        self.told.append(event)


class MemoryPublisher:
    def __init__(self) -> None:
        self.published: list[Bundle] = []

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish_bundle(self, bundle: Bundle) -> None:
        self.published.append(bundle)


class Made:
    """The plugin objects the catalog made, so the test can look at them."""

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.notifiers: list[MemoryNotifier] = []
        self.publishers: list[MemoryPublisher] = []

    def notifier(self) -> MemoryNotifier:
        self.notifiers.append(MemoryNotifier(self.refuse))
        return self.notifiers[-1]

    def publisher(self) -> MemoryPublisher:
        self.publishers.append(MemoryPublisher())
        return self.publishers[-1]

    def module(self) -> types.ModuleType:
        module = types.ModuleType("memory_bundle_plugins")
        module.pyspire_notifiers = hookimpl(  # type: ignore[attr-defined]
            lambda: [PluginRegistration("memory", NoConfig, self.notifier)]
        )
        module.pyspire_bundle_publishers = hookimpl(  # type: ignore[attr-defined]
            lambda: [PluginRegistration("memory", NoConfig, self.publisher)]
        )
        return module


def runtime_for(tmp_path: Path, made: Made, clock: FakeClock) -> ServerRuntime:
    document = {
        "server": {
            "trust_domain": "example.org",
            "data_dir": str(tmp_path / "data"),
            "bind_address": "127.0.0.1",
            "bind_port": 0,
            "socket_path": str(tmp_path / "admin" / "api.sock"),
            "ca_ttl": "2m",
            "default_x509_svid_ttl": "20s",
            "default_jwt_svid_ttl": "20s",
            "plugins": {
                "datastore": {"sqlite": {}},
                "key_manager": {"memory": {}},
                "node_attestor": {"join_token": {}},
                "notifier": {"memory": {}},
                "bundle_publisher": {"memory": {}},
            },
        }
    }
    installed = Discovery.load()
    discovery = Discovery([*installed, *Discovery.from_modules(made.module())])
    return ServerRuntime(load_document(SERVER_SCHEMA, document), discovery, clock=clock)


@pytest.fixture
async def started(
    tmp_path: Path, fake_clock: FakeClock
) -> AsyncIterator[tuple[ServerRuntime, Made]]:
    made = Made(refuse=False)
    runtime = runtime_for(tmp_path, made, fake_clock)
    task = asyncio.create_task(runtime.run())
    await until(lambda: runtime.ready.is_set() or task.done())
    if task.done():
        task.result()
    try:
        yield runtime, made
    finally:
        runtime.stop()
        await asyncio.wait_for(task, timeout=30)


async def advance_until(clock: FakeClock, condition: Callable[[], bool], steps: int = 30) -> None:
    """Step the clock one rotation interval at a time until ``condition`` holds. The CA's loop
    reads the datastore from a worker thread, so after each step it is given a moment of real
    time to finish and sleep again before the next step."""
    for _ in range(steps):
        if condition():
            return
        await clock.advance(ROTATION_INTERVAL)
        with contextlib.suppress(AssertionError):
            await until(condition, within=0.5)
    raise AssertionError(f"the condition never held within {steps} rotation intervals")


def x509_count(event: NotifierEvent) -> int:
    return len(event.bundle.x509_authorities)


async def test_notifiers_and_publishers_hear_of_the_loaded_bundle_and_the_next_ca(
    started: tuple[ServerRuntime, Made], fake_clock: FakeClock
) -> None:
    _, made = started
    [notifier], [publisher] = made.notifiers, made.publishers
    [loaded] = notifier.told
    assert isinstance(loaded, BundleLoaded) and x509_count(loaded) == 1
    await until(lambda: publisher.published == [loaded.bundle])

    # Half the CA's lifetime later the rotation prepares the next CA and publishes it.
    await fake_clock.advance(CA_TTL / 2)
    await advance_until(fake_clock, lambda: any(x509_count(e) == 2 for e in notifier.told))
    update = next(event for event in notifier.told if x509_count(event) == 2)
    assert isinstance(update, BundleUpdated)
    assert update.bundle.sequence_number > loaded.bundle.sequence_number
    await until(lambda: publisher.published[-1] == update.bundle)


async def test_plugins_read_the_servers_own_bundle_through_their_host(
    started: tuple[ServerRuntime, Made], fake_clock: FakeClock
) -> None:
    _, made = started
    [notifier] = made.notifiers
    assert notifier.host is not None and notifier.host.trust_bundle is not None
    [loaded] = notifier.told
    assert await notifier.host.trust_bundle.current_bundle() == loaded.bundle

    await fake_clock.advance(CA_TTL / 2)
    await advance_until(fake_clock, lambda: any(x509_count(e) == 2 for e in notifier.told))
    update = next(event for event in notifier.told if x509_count(event) == 2)
    assert await notifier.host.trust_bundle.current_bundle() == update.bundle


async def test_a_veto_stops_the_start_before_the_listeners_and_closes_the_plugins(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    made = Made(refuse=True)
    runtime = runtime_for(tmp_path, made, fake_clock)
    with pytest.raises(
        NotifierVetoError,
        match=r'notifier "memory" refused the trust bundle loaded at start: nowhere to put',
    ):
        await runtime.run()
    assert not runtime.ready.is_set()
    assert runtime.listening is None
    assert not (tmp_path / "admin" / "api.sock").exists()
    assert made.notifiers[0].closed
    assert made.publishers[0].published == []
