"""Notifiers are told of the loaded bundle in order and may veto the start; each is told of
every update by its own task, in order, retried with backoff, never concurrently with itself."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyspire.catalog import NamedPlugin
from pyspire.server.notifications import BundleNotifications, NotifierVetoError
from pyspire.telemetry.metrics import NOTIFIER_NOTIFIED
from pyspire_sdk.errors import FailedPreconditionError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.notifier import BundleLoaded, BundleUpdated, Notifier, NotifierEvent
from pyspire_sdk.testing import FakeClock, RecordingMetrics

from .delivery import RETRY, bundle, running, settle, until


class RecordingNotifier:
    """Records what it is told; fails the first ``failures`` updates; waits for ``gate``."""

    def __init__(
        self,
        name: str,
        journal: list[str] | None = None,
        *,
        veto: Exception | None = None,
        failures: int = 0,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.journal = journal if journal is not None else []
        self.veto = veto
        self.failures = failures
        self.gate = gate
        self.told: list[NotifierEvent] = []
        self.attempts = 0
        self.running = 0
        self.most_running = 0
        self.cancelled = False

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    async def notify_and_advise(self, event: NotifierEvent) -> None:
        self.journal.append(f"advise {self.name}")
        if self.veto is not None:
            raise self.veto
        self.told.append(event)

    async def notify(self, event: NotifierEvent) -> None:
        self.attempts += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.failures:
                self.failures -= 1
                raise UnavailableError("the config map is unreachable")
            self.told.append(event)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.running -= 1

    @property
    def sequences(self) -> list[int]:
        return [event.bundle.sequence_number for event in self.told]


def notifications(
    *notifiers: RecordingNotifier, clock: FakeClock, metrics: RecordingMetrics | None = None
) -> BundleNotifications:
    named: list[NamedPlugin[Notifier]] = [NamedPlugin(n.name, n) for n in notifiers]
    return BundleNotifications(
        named, clock=clock, metrics=metrics or RecordingMetrics(), retry=RETRY
    )


def count(metrics: RecordingMetrics, notifier: str, event: str, status: str) -> float:
    labels = (("event", event), ("notifier", notifier), ("status", status))
    return metrics.counters.get((NOTIFIER_NOTIFIED, labels), 0)


async def test_bundle_loaded_reaches_every_notifier_in_configured_order(
    fake_clock: FakeClock,
) -> None:
    journal: list[str] = []
    first, second = RecordingNotifier("k8s", journal), RecordingNotifier("gcs", journal)
    metrics = RecordingMetrics()
    await notifications(first, second, clock=fake_clock, metrics=metrics).bundle_loaded(bundle(1))
    assert journal == ["advise k8s", "advise gcs"]
    assert first.told == second.told == [BundleLoaded(bundle(1))]
    assert count(metrics, "gcs", "bundle_loaded", "ok") == 1


async def test_a_notifier_that_refuses_the_loaded_bundle_stops_the_start_by_name(
    fake_clock: FakeClock,
) -> None:
    journal: list[str] = []
    refusing = RecordingNotifier(
        "k8sbundle", journal, veto=FailedPreconditionError("cannot write config map spire")
    )
    after = RecordingNotifier("gcs", journal)
    metrics = RecordingMetrics()
    with pytest.raises(
        NotifierVetoError,
        match=r'notifier "k8sbundle" refused the trust bundle loaded at start: '
        r"cannot write config map spire",
    ):
        await notifications(refusing, after, clock=fake_clock, metrics=metrics).bundle_loaded(
            bundle(1)
        )
    assert journal == ["advise k8sbundle"]  # the ones after it are not asked
    assert count(metrics, "k8sbundle", "bundle_loaded", "error") == 1


async def test_updates_reach_each_notifier_in_order(fake_clock: FakeClock) -> None:
    notifier = RecordingNotifier("k8s")
    subject = notifications(notifier, clock=fake_clock)
    async with running(subject.run):
        for sequence in (2, 3):
            subject.bundle_updated(bundle(sequence))
            await until(lambda s=sequence: notifier.sequences[-1:] == [s])  # type: ignore[misc]
    assert notifier.told == [BundleUpdated(bundle(2)), BundleUpdated(bundle(3))]


async def test_a_failed_update_is_logged_counted_and_retried_with_backoff(
    fake_clock: FakeClock,
) -> None:
    notifier = RecordingNotifier("k8s", failures=2)
    metrics = RecordingMetrics()
    subject = notifications(notifier, clock=fake_clock, metrics=metrics)
    async with running(subject.run):
        subject.bundle_updated(bundle(2))
        await until(lambda: notifier.attempts == 1)
        await fake_clock.advance(0.9)
        await settle()
        assert notifier.attempts == 1  # the first retry waits a whole second
        await fake_clock.advance(0.1)
        await until(lambda: notifier.attempts == 2)
        await fake_clock.advance(1.9)
        await settle()
        assert notifier.attempts == 2  # the second waits two
        await fake_clock.advance(0.1)
        await until(lambda: notifier.sequences == [2])
    assert count(metrics, "k8s", "bundle_updated", "error") == 2
    assert count(metrics, "k8s", "bundle_updated", "ok") == 1


async def test_a_retry_tells_the_newest_bundle_never_an_older_one(fake_clock: FakeClock) -> None:
    notifier = RecordingNotifier("k8s", failures=1)
    subject = notifications(notifier, clock=fake_clock)
    async with running(subject.run):
        subject.bundle_updated(bundle(2))
        await until(lambda: notifier.attempts == 1)
        subject.bundle_updated(bundle(3))  # arrives while the failed one waits for its retry
        await fake_clock.advance(1)
        await until(lambda: notifier.told != [])
        await settle()
    assert notifier.sequences == [3]


async def test_a_failing_notifier_does_not_hold_up_another(fake_clock: FakeClock) -> None:
    failing = RecordingNotifier("down", failures=100)
    healthy = RecordingNotifier("up")
    subject = notifications(failing, healthy, clock=fake_clock)
    async with running(subject.run):
        subject.bundle_updated(bundle(2))
        await until(lambda: healthy.sequences == [2])
        subject.bundle_updated(bundle(3))
        await until(lambda: healthy.sequences == [2, 3])
    assert failing.told == []


async def test_a_busy_notifier_is_never_called_twice_at_once(fake_clock: FakeClock) -> None:
    gate = asyncio.Event()
    notifier = RecordingNotifier("slow", gate=gate)
    subject = notifications(notifier, clock=fake_clock)
    async with running(subject.run):
        subject.bundle_updated(bundle(2))
        await until(lambda: notifier.running == 1)
        subject.bundle_updated(bundle(3))
        subject.bundle_updated(bundle(4))
        await settle()
        assert notifier.attempts == 1
        gate.set()
        await until(lambda: notifier.sequences == [2, 4])
        await settle()
    assert notifier.most_running == 1
    assert notifier.sequences == [2, 4]  # in order; 3 was superseded while it waited


async def test_stopping_cancels_a_notifier_in_the_middle_of_a_call(fake_clock: FakeClock) -> None:
    notifier = RecordingNotifier("slow", gate=asyncio.Event())
    subject = notifications(notifier, clock=fake_clock)
    async with running(subject.run) as task:
        subject.bundle_updated(bundle(2))
        await until(lambda: notifier.running == 1)
    assert task.cancelled()
    assert notifier.cancelled and notifier.running == 0
