"""Bundle publishers get every new bundle once, never two calls at once, retried with backoff,
and a publisher that is down never holds up another."""

from __future__ import annotations

import asyncio
from typing import Any

from pyspire.catalog import NamedPlugin
from pyspire.server.publishing import BundlePublishing
from pyspire.telemetry.metrics import BUNDLE_PUBLISHED
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher
from pyspire_sdk.testing import FakeClock, RecordingMetrics

from .delivery import RETRY, bundle, running, settle, until


class RecordingPublisher:
    """Records what it published; fails the first ``failures`` calls; waits for ``gate``."""

    def __init__(self, name: str, *, failures: int = 0, gate: asyncio.Event | None = None) -> None:
        self.name = name
        self.failures = failures
        self.gate = gate
        self.published: list[Bundle] = []
        self.attempts = 0
        self.running = 0
        self.most_running = 0

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish_bundle(self, bundle: Bundle) -> None:
        self.attempts += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.failures:
                self.failures -= 1
                raise UnavailableError("bucket unreachable")
            self.published.append(bundle)
        finally:
            self.running -= 1

    @property
    def sequences(self) -> list[int]:
        return [bundle.sequence_number for bundle in self.published]


def publishing(
    *publishers: RecordingPublisher, clock: FakeClock, metrics: RecordingMetrics | None = None
) -> BundlePublishing:
    named: list[NamedPlugin[BundlePublisher]] = [NamedPlugin(p.name, p) for p in publishers]
    return BundlePublishing(named, clock=clock, metrics=metrics or RecordingMetrics(), retry=RETRY)


def count(metrics: RecordingMetrics, publisher: str, status: str) -> float:
    labels = (("publisher", publisher), ("status", status))
    return metrics.counters.get((BUNDLE_PUBLISHED, labels), 0)


async def test_every_publisher_publishes_each_new_bundle_once(fake_clock: FakeClock) -> None:
    s3, configmap = RecordingPublisher("aws_s3"), RecordingPublisher("k8s_configmap")
    metrics = RecordingMetrics()
    subject = publishing(s3, configmap, clock=fake_clock, metrics=metrics)
    subject.offer(bundle(1))  # the bundle at start, offered before the tasks run
    async with running(subject.run):
        await until(lambda: s3.sequences == configmap.sequences == [1])
        subject.offer(bundle(1))  # unchanged (the periodic re-read found nothing new)
        await settle()
        assert s3.attempts == 1
        subject.offer(bundle(2))
        await until(lambda: s3.sequences == configmap.sequences == [1, 2])
    assert count(metrics, "aws_s3", "ok") == 2


async def test_a_failed_publish_is_retried_with_backoff_and_the_newest_bundle(
    fake_clock: FakeClock,
) -> None:
    publisher = RecordingPublisher("aws_s3", failures=2)
    metrics = RecordingMetrics()
    subject = publishing(publisher, clock=fake_clock, metrics=metrics)
    async with running(subject.run):
        subject.offer(bundle(1))
        await until(lambda: publisher.attempts == 1)
        await fake_clock.advance(0.9)
        await settle()
        assert publisher.attempts == 1
        await fake_clock.advance(0.1)
        await until(lambda: publisher.attempts == 2)
        subject.offer(bundle(2))  # while the second failure waits out its two seconds
        await settle()
        assert publisher.attempts == 2  # a new bundle does not cut the backoff short
        await fake_clock.advance(2)
        await until(lambda: publisher.published != [])
        await settle()
    assert publisher.sequences == [2]
    assert count(metrics, "aws_s3", "error") == 2
    assert count(metrics, "aws_s3", "ok") == 1


async def test_one_publisher_is_never_called_twice_at_once(fake_clock: FakeClock) -> None:
    gate = asyncio.Event()
    publisher = RecordingPublisher("slow", gate=gate)
    subject = publishing(publisher, clock=fake_clock)
    async with running(subject.run):
        subject.offer(bundle(1))
        await until(lambda: publisher.running == 1)
        subject.offer(bundle(2))
        subject.offer(bundle(3))
        await settle()
        assert publisher.attempts == 1
        gate.set()
        await until(lambda: publisher.sequences == [1, 3])
        await settle()
    assert publisher.most_running == 1
    assert publisher.sequences == [1, 3]


async def test_a_publisher_that_is_down_does_not_hold_up_another(fake_clock: FakeClock) -> None:
    down, up = RecordingPublisher("down", failures=100), RecordingPublisher("up")
    subject = publishing(down, up, clock=fake_clock)
    async with running(subject.run):
        subject.offer(bundle(1))
        await until(lambda: up.sequences == [1])
        subject.offer(bundle(2))
        await until(lambda: up.sequences == [1, 2])
    assert down.published == []
