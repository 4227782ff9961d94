"""The ``journal`` notifier: writes every event it is told to a journal file; may refuse the
server's start, or fail the first few updates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspire_sdk.config import setting
from pyspire_sdk.errors import FailedPreconditionError, UnavailableError
from pyspire_sdk.plugin import HostServices, PluginRegistration, hookimpl
from pyspire_sdk.plugins.notifier import BundleLoaded, BundleUpdated, Notifier, NotifierEvent
from pyspire_testplugins.journal import bundle_facts, record


@dataclass(frozen=True, kw_only=True)
class JournalNotifierConfig:
    journal_path: Path = setting(description="file the events are appended to, one per line")
    refuse_start: str = setting("", description="when set, refuse the loaded bundle with this")
    fail_updates: int = setting(0, description="how many bundle updates to fail first")


class JournalNotifier:
    async def configure(self, config: JournalNotifierConfig, host: HostServices) -> None:
        self.config = config
        self.failures_left = config.fail_updates

    async def close(self) -> None:
        return None

    async def notify_and_advise(self, event: NotifierEvent) -> None:
        if not isinstance(event, BundleLoaded):
            return
        if self.config.refuse_start:
            raise FailedPreconditionError(self.config.refuse_start)
        await record(self.config.journal_path, event="bundle_loaded", **bundle_facts(event.bundle))

    async def notify(self, event: NotifierEvent) -> None:
        if not isinstance(event, BundleUpdated):
            return
        if self.failures_left:
            self.failures_left -= 1
            await record(self.config.journal_path, event="failed", **bundle_facts(event.bundle))
            raise UnavailableError("the journal is pretending to be down")
        await record(self.config.journal_path, event="bundle_updated", **bundle_facts(event.bundle))


@hookimpl
def pyspire_notifiers() -> list[PluginRegistration[Any, Notifier]]:
    return [
        PluginRegistration(
            name="journal",
            config_type=JournalNotifierConfig,
            factory=JournalNotifier,
            description="writes notifier events to a file (tests only)",
        )
    ]
