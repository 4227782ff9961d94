"""Bundle publishers: put the server's trust bundle somewhere others can fetch it.

The host calls :meth:`BundlePublisher.publish_bundle` with the current bundle at start and after
every change. It also reads the bundle again periodically, so a change it was not told of
(made by another server sharing the datastore) is published too. A publish that failed is
retried with the SDK's backoff (:mod:`pyspire_sdk.backoff`), with the newest bundle, until it
succeeds, so a publisher whose store was down catches up. The host remembers the bundle each
publisher last published successfully and does not offer it an unchanged one again. Mirrors
SPIRE's ``BundlePublisher.PublishBundle``.
"""

from __future__ import annotations

__all__ = [
    "BundlePublisher",
    "PublishedBundleMemo",
    "pyspire_bundle_publishers",
]

import asyncio
from typing import Any, Protocol, runtime_checkable

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.plugin import Plugin, PluginRegistration, hookspec


@runtime_checkable
class BundlePublisher(Plugin, Protocol):
    """Publishes the trust bundle to one destination (a file, an object store, a config map).

    Guarantees the host relies on:

    - ``publish_bundle`` is idempotent: publishing a bundle equal to the last one published
      succeeds without rewriting the destination (see :class:`PublishedBundleMemo`).
    - When it returns, the destination holds ``bundle`` (or a newer one); a failure raises
      :class:`~pyspire_sdk.errors.UnavailableError` (destination unreachable, retried later) or
      :class:`~pyspire_sdk.errors.PermissionDeniedError` (credentials refused), which the host
      logs and counts without stopping the server.
    - Calls for one publisher never overlap; the host serializes them.
    """

    async def publish_bundle(self, bundle: Bundle) -> None:
        """Make ``bundle`` the published trust bundle of its trust domain."""
        ...


class PublishedBundleMemo:
    """Remembers the last bundle a publisher wrote, so unchanged bundles are not rewritten.

    Use it around the write::

        async def publish_bundle(self, bundle):
            async with self._memo.publishing(bundle) as changed:
                if changed:
                    await self._write(bundle)

    The bundle is remembered only when the block finishes without an exception, so a failed
    write is retried on the next call. Blocks are serialized by an internal lock, which keeps
    the comparison and the write together.
    """

    def __init__(self) -> None:
        self._last: Bundle | None = None
        self._lock = asyncio.Lock()

    @property
    def last(self) -> Bundle | None:
        """The bundle last published successfully, ``None`` before the first."""
        return self._last

    def is_unchanged(self, bundle: Bundle) -> bool:
        """True when ``bundle`` equals the bundle last published successfully."""
        return self._last is not None and self._last == bundle

    def publishing(self, bundle: Bundle) -> _Publishing:
        """An async context manager yielding whether ``bundle`` needs to be written."""
        return _Publishing(self, bundle)

    def forget(self) -> None:
        """Forget the last bundle, so the next one is written whatever it holds."""
        self._last = None


class _Publishing:
    def __init__(self, memo: PublishedBundleMemo, bundle: Bundle) -> None:
        self._memo = memo
        self._bundle = bundle

    async def __aenter__(self) -> bool:
        await self._memo._lock.acquire()
        return not self._memo.is_unchanged(self._bundle)

    async def __aexit__(self, exc_type: object, exc: object, traceback: object) -> None:
        try:
            if exc_type is None:
                self._memo._last = self._bundle
        finally:
            self._memo._lock.release()


@hookspec
def pyspire_bundle_publishers() -> list[PluginRegistration[Any, BundlePublisher]]:  # type: ignore[empty-body]
    """Return the bundle publishers this plugin module provides.

    A server runs any number of them. Return ``[]`` when the module provides none. The hook is
    synchronous and must not do I/O.
    """
