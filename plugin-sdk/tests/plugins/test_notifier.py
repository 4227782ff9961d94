"""The notifier interface: events, "no opinion" and the veto, on a notifier that writes a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins import notifier
from pyspire_sdk.plugins.notifier import BundleLoaded, BundleUpdated, Notifier, NotifierEvent
from pyspire_sdk.spiffeid import TrustDomain

BUNDLE = Bundle(TrustDomain("example.org"), (X509Authority(b"root"),), sequence_number=1)


class FileNotifier:
    """Writes the bundle's sequence number to a file; vetoes start when it cannot write."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    def _write(self, event: BundleLoaded | BundleUpdated) -> None:
        try:
            self.path.write_text(json.dumps({"sequence": event.bundle.sequence_number}))
        except OSError as error:
            raise UnavailableError(f"bundle file {self.path}: {error.strerror}") from None

    async def notify(self, event: NotifierEvent) -> None:
        if isinstance(event, BundleUpdated):
            self._write(event)

    async def notify_and_advise(self, event: NotifierEvent) -> None:
        if isinstance(event, BundleLoaded):
            self._write(event)


def test_file_notifier_is_a_notifier() -> None:
    assert isinstance(FileNotifier(Path("x")), Notifier)


async def test_events_carry_the_bundle(tmp_path: Path) -> None:
    target = tmp_path / "bundle.json"
    sink = FileNotifier(target)

    await sink.notify_and_advise(BundleLoaded(BUNDLE))
    assert json.loads(target.read_text()) == {"sequence": 1}

    await sink.notify(BundleUpdated(BUNDLE.with_changes(x509_authorities=())))
    assert json.loads(target.read_text()) == {"sequence": 2}


async def test_an_unhandled_event_kind_is_no_opinion(tmp_path: Path) -> None:
    target = tmp_path / "bundle.json"
    sink = FileNotifier(target)
    await sink.notify(BundleLoaded(BUNDLE))
    await sink.notify_and_advise(BundleUpdated(BUNDLE))
    assert not target.exists()


async def test_notify_and_advise_vetoes_by_raising(tmp_path: Path) -> None:
    sink = FileNotifier(tmp_path / "missing-dir" / "bundle.json")
    with pytest.raises(UnavailableError, match="bundle file"):
        await sink.notify_and_advise(BundleLoaded(BUNDLE))


def test_events_are_frozen_and_compare_by_value() -> None:
    assert BundleUpdated(BUNDLE) == BundleUpdated(BUNDLE)
    events: list[NotifierEvent] = [BundleUpdated(BUNDLE), BundleLoaded(BUNDLE)]
    assert events[0] != events[1]
    with pytest.raises(AttributeError):
        BundleUpdated(BUNDLE).bundle = BUNDLE  # type: ignore[misc]


def test_hookspec_is_documented() -> None:
    hook = notifier.pyspire_notifiers
    assert hasattr(hook, "pyspire_spec")
    assert hook.__doc__ and "configured order" in hook.__doc__
