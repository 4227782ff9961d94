"""The ``journal_file`` bundle publisher: writes the bundle as a SPIFFE bundle document and journals
every publish; may fail the first few."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.config import setting
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.files import write_private_file
from pyspire_sdk.plugin import HostServices, PluginRegistration, hookimpl
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher, PublishedBundleMemo
from pyspire_testplugins.journal import bundle_facts, record


@dataclass(frozen=True, kw_only=True)
class FilePublisherConfig:
    bundle_path: Path = setting(description="where the SPIFFE bundle document is written")
    journal_path: Path = setting(description="file every publish is appended to")
    fail_first: int = setting(0, description="how many publishes to fail first")


class FilePublisher:
    async def configure(self, config: FilePublisherConfig, host: HostServices) -> None:
        self.config = config
        self.failures_left = config.fail_first
        self.memo = PublishedBundleMemo()

    async def close(self) -> None:
        return None

    async def publish_bundle(self, bundle: Bundle) -> None:
        async with self.memo.publishing(bundle) as changed:
            if not changed:
                return
            if self.failures_left:
                self.failures_left -= 1
                await record(self.config.journal_path, event="failed", **bundle_facts(bundle))
                raise UnavailableError("the bucket is pretending to be down")
            document = bundle.to_spiffe_json().encode()
            await asyncio.to_thread(write_private_file, self.config.bundle_path, document)
            await record(self.config.journal_path, event="published", **bundle_facts(bundle))


@hookimpl
def pyspire_bundle_publishers() -> list[PluginRegistration[Any, BundlePublisher]]:
    return [
        PluginRegistration(
            name="journal_file",
            config_type=FilePublisherConfig,
            factory=FilePublisher,
            description="writes the bundle to a file (tests only)",
        )
    ]
