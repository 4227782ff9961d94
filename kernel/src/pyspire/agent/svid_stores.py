"""Delivering stored SVIDs to their SVID store plugins, and removing them there.

:class:`SvidStoreDelivery` works through what :class:`~pyspire.agent.stored_svids.StoredSvidCache`
says the stores lack: ``put_x509_svid`` for new and rotated SVIDs (and after bundle changes),
``delete_x509_svid`` for targets no entry addresses any more. Each configured store has its own
lane (a task of the delivery's task group), so a store that hangs or is down delays only its
own SVIDs. A lane wakes when the cache changes and otherwise sleeps until its next retry.

Outcomes of one call:

- success: the cache records it (and the targets file is rewritten when the set of targets
  holding our SVIDs changed). A put's target is on file *before* the store is called: an agent
  stopped after the plugin wrote the SVID but before the call returned still deletes it once
  its entry is gone;
- :class:`~pyspire_sdk.errors.InvalidArgumentError`: the store does not understand the entry's
  metadata. A put is not retried until the SVID changes (the next rotation) or the entry is
  corrected; a delete counts as done, as in SPIRE (nothing can have been stored there);
- anything else (:class:`~pyspire_sdk.errors.UnavailableError`, a permission error, a plugin
  bug): retried by the one backoff policy (:data:`STORE_RETRY`), per target; the first failure
  is logged as a warning, the next ones at debug level, the recovery at info level.
"""

from __future__ import annotations

__all__ = ["STORE_RETRY", "SvidStoreDelivery"]

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import structlog

from pyspire.agent.stored_svids import (
    DeleteSvid,
    PutSvid,
    StoredSvidCache,
    StoreOperation,
    StoreTarget,
)
from pyspire.agent.stored_targets import StoredTargetsFile
from pyspire.waiting import sleep_or_wake
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugins.svid_store import SvidStore

STORE_RETRY = BackoffPolicy(initial=1.0, maximum=60.0)
"""Retry delays of a failed put or delete: 1 s, 2 s, 4 s, ... up to a minute, jittered. A
stored SVID is renewed at half its lifetime, so even a long outage of a store leaves it time to
receive the renewed SVID before the old one expires."""

_log = structlog.get_logger("pyspire.agent.svid_stores")


@dataclass
class _Retry:
    backoff: Backoff
    at: datetime


class SvidStoreDelivery:
    """Keeps the SVID stores in step with a :class:`StoredSvidCache`; see the module
    documentation. ``stores`` maps each configured store's name to its plugin; ``targets``
    (optional) keeps the delivered targets across restarts; ``rng`` draws the retry jitter."""

    def __init__(
        self,
        cache: StoredSvidCache,
        stores: Mapping[str, SvidStore],
        clock: Clock,
        *,
        targets: StoredTargetsFile | None = None,
        policy: BackoffPolicy = STORE_RETRY,
        rng: random.Random | None = None,
    ) -> None:
        self._cache = cache
        self._stores = dict(stores)
        self._clock = clock
        self._targets = targets
        self._policy = policy
        self._rng = rng

    async def run(self) -> None:
        """Deliver until cancelled: one lane per store, all owned by one task group."""
        async with anyio.create_task_group() as group:
            for name in sorted(self._stores):
                group.start_soon(self._lane, name, name=f"svid-store-{name}")

    async def _lane(self, name: str) -> None:
        store = self._stores[name]
        log = _log.bind(store=name)
        retries: dict[StoreTarget, _Retry] = {}
        wakeup = self._cache.subscribe()
        try:
            while True:
                wakeup.clear()
                pending = self._cache.pending(name)
                due = {operation.target for operation in pending}
                for target in retries.keys() - due:
                    del retries[target]
                for operation in pending:
                    retry = retries.get(operation.target)
                    if retry is not None and self._clock.now() < retry.at:
                        continue
                    if await self._apply(store, operation, retry, log):
                        retries.pop(operation.target, None)
                        continue
                    if retry is None:
                        retry = retries[operation.target] = _Retry(
                            Backoff(self._policy, rng=self._rng), self._clock.now()
                        )
                    retry.at = self._clock.now() + timedelta(seconds=retry.backoff.failed())
                next_retry = min((retry.at for retry in retries.values()), default=None)
                delay = (
                    None if next_retry is None else (next_retry - self._clock.now()).total_seconds()
                )
                await sleep_or_wake(self._clock, delay, wakeup)
        finally:
            self._cache.unsubscribe(wakeup)

    async def _apply(
        self,
        store: SvidStore,
        operation: StoreOperation,
        retry: _Retry | None,
        log: structlog.typing.FilteringBoundLogger,
    ) -> bool:
        """Run one operation; True when it needs no retry."""
        target = operation.target
        log = log.bind(metadata=list(target.metadata))
        if isinstance(operation, PutSvid):
            log = log.bind(entry_id=operation.entry_id, spiffe_id=str(operation.svid.spiffe_id))
        if isinstance(operation, PutSvid):
            # Written ahead: a target is on file before the store is asked to hold anything.
            self._cache.putting(operation)
            await self._save_targets()
        try:
            if isinstance(operation, PutSvid):
                await store.put_x509_svid(operation.svid)
            else:
                await store.delete_x509_svid(target.metadata)
        except InvalidArgumentError as error:
            if isinstance(operation, PutSvid):
                log.error(
                    "svid store refused the svid; retrying when it changes", reason=str(error)
                )
                self._cache.refused(operation)
            else:
                log.warning(
                    "svid store refused the delete; nothing is stored there", reason=str(error)
                )
                await self._record(operation)
            return True
        except Exception as error:  # any plugin failure is retried, never fatal
            failures = 1 if retry is None else retry.backoff.failures + 1
            (log.warning if failures == 1 else log.debug)(
                "svid store call failed; retrying with backoff",
                operation="put" if isinstance(operation, PutSvid) else "delete",
                error=str(error),
                error_type=type(error).__name__,
                failures=failures,
            )
            return False
        if retry is not None:
            log.info("svid store call succeeded again", failed_attempts=retry.backoff.failures)
        else:
            log.debug("svid stored" if isinstance(operation, PutSvid) else "stored svid deleted")
        await self._record(operation)
        return True

    async def _record(self, operation: PutSvid | DeleteSvid) -> None:
        self._cache.delivered(operation)
        await self._save_targets()

    async def _save_targets(self) -> None:
        if self._targets is None:
            return
        try:
            await self._targets.save(self._cache.delivered_targets())
        except OSError as error:
            _log.warning(
                "cannot keep the targets of stored svids for a restart",
                path=str(self._targets.path),
                error=str(error),
            )
