"""The bundle publisher interface and PublishedBundleMemo, on a publisher writing a real file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins import bundle_publisher
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher, PublishedBundleMemo
from pyspire_sdk.spiffeid import TrustDomain

BUNDLE = Bundle(TrustDomain("example.org"), (X509Authority(b"root"),), sequence_number=1)


class FilePublisher:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0
        self.fail_next = False
        self._memo = PublishedBundleMemo()

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish_bundle(self, bundle: Bundle) -> None:
        async with self._memo.publishing(bundle) as changed:
            if changed:
                await asyncio.sleep(0)
                if self.fail_next:
                    self.fail_next = False
                    raise UnavailableError("bundle file is not writable")
                payload = {
                    "sequence": bundle.sequence_number,
                    "roots": len(bundle.x509_authorities),
                }
                await asyncio.to_thread(self.path.write_text, json.dumps(payload))
                self.writes += 1


def test_file_publisher_is_a_bundle_publisher() -> None:
    assert isinstance(FilePublisher(Path("x")), BundlePublisher)


async def test_publishing_an_unchanged_bundle_writes_once(tmp_path: Path) -> None:
    publisher = FilePublisher(tmp_path / "bundle.json")
    await publisher.publish_bundle(BUNDLE)
    await publisher.publish_bundle(BUNDLE)
    assert publisher.writes == 1

    newer = BUNDLE.with_changes(x509_authorities=(X509Authority(b"r1"), X509Authority(b"r2")))
    await publisher.publish_bundle(newer)
    assert publisher.writes == 2
    assert json.loads((tmp_path / "bundle.json").read_text()) == {"sequence": 2, "roots": 2}


async def test_a_failed_write_is_retried_next_time(tmp_path: Path) -> None:
    publisher = FilePublisher(tmp_path / "bundle.json")
    publisher.fail_next = True
    with pytest.raises(UnavailableError):
        await publisher.publish_bundle(BUNDLE)
    assert publisher.writes == 0

    await publisher.publish_bundle(BUNDLE)
    assert publisher.writes == 1


async def test_concurrent_publishes_of_one_bundle_write_once(tmp_path: Path) -> None:
    publisher = FilePublisher(tmp_path / "bundle.json")
    await asyncio.gather(*(publisher.publish_bundle(BUNDLE) for _ in range(10)))
    assert publisher.writes == 1


def test_memo_tracks_the_last_bundle() -> None:
    memo = PublishedBundleMemo()
    assert memo.last is None
    assert not memo.is_unchanged(BUNDLE)


async def test_memo_forget_makes_the_next_publish_write() -> None:
    memo = PublishedBundleMemo()
    async with memo.publishing(BUNDLE) as changed:
        assert changed
    assert memo.last == BUNDLE
    assert memo.is_unchanged(BUNDLE)
    async with memo.publishing(BUNDLE) as changed:
        assert not changed
    memo.forget()
    async with memo.publishing(BUNDLE) as changed:
        assert changed


def test_hookspec_is_documented() -> None:
    hook = bundle_publisher.pyspire_bundle_publishers
    assert hasattr(hook, "pyspire_spec")
    assert hook.__doc__ and "Return" in hook.__doc__
