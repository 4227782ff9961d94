"""Hearing of changes made through other servers: ``LISTEN`` on a connection of its own.

Every transaction that appends change events sends ``NOTIFY`` on :data:`NOTIFY_CHANNEL` with
``<schema>:<last event id>``, and every one that writes a bundle ``<schema>:bundle`` (see
:mod:`pyspire_datastore_postgres.store`). The watch keeps one
connection outside the pools that listens on that channel and turns each notification about
its own schema into :attr:`~pyspire_sdk.plugins.datastore.ChangeSignal.CHANGED`. A connection
that is lost (the database restarted, a proxy dropped it, a network partition found by the
probe) is replaced under the one backoff policy, and the listener is told
:attr:`~pyspire_sdk.plugins.datastore.ChangeSignal.RESYNC`: notifications sent meanwhile are
gone, so the server reloads in full.
"""

from __future__ import annotations

__all__ = [
    "BUNDLE_PAYLOAD",
    "NOTIFY_CHANNEL",
    "PROBE_INTERVAL",
    "WATCH_RETRY",
    "ChangeWatch",
    "application_name",
]

import asyncio
from typing import Any

import asyncpg
import structlog

from pyspire_datastore_postgres.connection import ConnectionTarget
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.clock import Clock
from pyspire_sdk.plugins.datastore import ChangeListener, ChangeSignal

NOTIFY_CHANNEL = "pyspire_change_events"
"""The channel every commit that appended change events notifies, with the payload
``<schema>:<last event id>``, and every commit that wrote a bundle, with
``<schema>:``:data:`BUNDLE_PAYLOAD`."""

BUNDLE_PAYLOAD = "bundle"

PROBE_INTERVAL = 2.0
"""Seconds between checks that the listening connection still answers: a connection closed by
the database is noticed at once, one cut silently (a partition) within this time."""

WATCH_RETRY = BackoffPolicy(initial=0.5, maximum=30.0)
"""How a lost listening connection is replaced: 0.5 s, 1 s, 2 s, ... at most 30 s."""

_PROBE_TIMEOUT = 5.0


def application_name(schema: str) -> str:
    """What the listening connection calls itself (in ``pg_stat_activity``): the schema it
    watches, within PostgreSQL's 63 bytes."""
    return f"pyspire-watch:{schema}"[:63]


class ChangeWatch:
    """Listens for change notifications about one schema; see :meth:`run`."""

    def __init__(
        self,
        target: ConnectionTarget,
        schema: str,
        clock: Clock,
        logger: structlog.typing.FilteringBoundLogger,
        *,
        probe_interval: float = PROBE_INTERVAL,
        retry: BackoffPolicy = WATCH_RETRY,
    ) -> None:
        self._target = target
        self._schema = schema
        self._clock = clock
        self._logger = logger
        self._probe_interval = probe_interval
        self._retry = retry

    async def run(self, listener: ChangeListener) -> None:
        """Signal ``listener`` until cancelled (the contract of
        :meth:`~pyspire_sdk.plugins.datastore.WatchableDataStore.watch_changes`)."""
        backoff = Backoff(self._retry)
        established_before = False
        while True:
            try:
                connection = await self._listen(listener)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                delay = backoff.failed()
                if backoff.failures == 1:
                    self._logger.warning(
                        "change notifications unavailable",
                        error=self._target.scrub(str(error)),
                        retry_in=delay,
                    )
                await self._clock.sleep(delay)
                continue
            if backoff.failures:
                self._logger.info("change notifications restored", schema=self._schema)
            listener(ChangeSignal.RESYNC if established_before else ChangeSignal.CHANGED)
            established_before = True
            try:
                if await self._until_lost(connection):
                    backoff.succeeded()  # it lived: a later loss starts the delays over
            finally:
                await self._close(connection)
            delay = backoff.failed()
            self._logger.warning("change notifications lost", retry_in=delay)
            await self._clock.sleep(delay)

    async def _listen(self, listener: ChangeListener) -> asyncpg.Connection:
        connection = await asyncpg.connect(
            self._target.uri,
            timeout=_PROBE_TIMEOUT,
            server_settings={"application_name": application_name(self._schema)},
        )
        schema = self._schema

        def heard(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload.rpartition(":")[0] == schema:
                listener(ChangeSignal.CHANGED)

        try:
            await connection.add_listener(NOTIFY_CHANNEL, heard)
        except BaseException:
            connection.terminate()
            raise
        return connection

    async def _until_lost(self, connection: asyncpg.Connection) -> bool:
        """Return once ``connection`` is closed or stops answering the probe; whether it
        answered at least once."""
        answered = False
        while True:
            await self._clock.sleep(self._probe_interval)
            if connection.is_closed():
                return answered
            try:
                await connection.fetchval("SELECT 1", timeout=_PROBE_TIMEOUT)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return answered
            answered = True

    @staticmethod
    async def _close(connection: asyncpg.Connection) -> None:
        if connection.is_closed():
            return
        try:
            await asyncio.wait_for(connection.close(), timeout=_PROBE_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            connection.terminate()
