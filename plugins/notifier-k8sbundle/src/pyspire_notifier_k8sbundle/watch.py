"""A list+watch of the objects of one collection labelled ``<label>=true``, as SPIRE's
k8sbundle watches webhook configurations and API services (client-go's informer semantics).

The collection is listed, every object handed to ``seen``, and watched from the list's
``resourceVersion``: ``ADDED`` and ``MODIFIED`` objects (one created labelled, or labelled
later) go to ``seen``; ``DELETED`` and ``BOOKMARK`` events only move the version on.
A watch the server ends (its ``timeoutSeconds``) is opened again from the last version; a 410
Gone (the version was compacted away) lists again; a connection that drops, or a request that
fails, watches again from the last version after a delay of :data:`WATCH_RETRY` on the host
clock, so an API server that is down is not hammered (the delays grow until an event arrives:
a watch refused at once, say for want of the ``watch`` permission, is not retried in a tight
loop of lists). The loop runs until cancelled.
"""

from __future__ import annotations

__all__ = ["WATCH_RETRY", "WATCH_SECONDS", "LabelledWatch"]

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from pyspire_notifier_k8sbundle.cabundles import Collection
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PyspireError, UnavailableError
from pyspire_sdk.kubernetes import CALL_TIMEOUT, KubernetesApiError, KubernetesClient

WATCH_RETRY = BackoffPolicy(initial=0.5, maximum=30.0)
"""How a failed list or watch is retried: 0.5 s, 1 s, 2 s, ... at most 30 s."""

WATCH_SECONDS = 290
"""How long the server is asked to keep one watch open before it ends it (``timeoutSeconds``);
a stream silent for longer than this and :data:`~pyspire_sdk.kubernetes.CALL_TIMEOUT` is taken
for a lost connection."""

_MAX_EVENT = 8 * 1024 * 1024
"""The longest watch event line accepted."""

Seen = Callable[[dict[str, Any]], Awaitable[None]]
"""Called with each labelled object listed, created, labelled or changed."""


class _ExpiredError(Exception):
    """The resource version watched from is too old (410 Gone): list again."""


class LabelledWatch:
    """The list+watch of ``collection`` through ``client``; see :meth:`run`."""

    def __init__(
        self,
        client: KubernetesClient,
        collection: Collection,
        seen: Seen,
        clock: Clock,
        logger: structlog.typing.FilteringBoundLogger,
        *,
        retry: BackoffPolicy = WATCH_RETRY,
    ) -> None:
        self._client = client
        self._collection = collection
        self._seen = seen
        self._clock = clock
        self._logger = logger.bind(collection=collection.path)
        self._retry = retry
        self._selector = ("labelSelector", f"{collection.label}=true")

    async def run(self) -> None:
        """List and watch until cancelled; failures are logged and retried, never raised."""
        import aiohttp

        backoff = Backoff(self._retry)
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version, backoff)
            except _ExpiredError:
                self._logger.info("watch expired, listing again")
                version = None
            except (PyspireError, OSError, TimeoutError, aiohttp.ClientError, ValueError) as error:
                delay = backoff.failed()
                self._logger.warning(
                    "watch of labelled objects failed", error=_describe(error), retry_in=delay
                )
                await self._clock.sleep(delay)

    async def _list(self) -> str:
        listed = await self._client.request("GET", self._collection.path, query=[self._selector])
        for item in listed.get("items") or []:
            await self._seen(item)
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, version: str, backoff: Backoff) -> str:
        """Follow one watch stream from ``version``; the last version seen when it ends."""
        import aiohttp

        api_client = await self._client.api_client()
        query = [
            self._selector,
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        timeout = aiohttp.ClientTimeout(
            connect=CALL_TIMEOUT, sock_connect=CALL_TIMEOUT, sock_read=WATCH_SECONDS + CALL_TIMEOUT
        )
        response = await api_client.call_api(
            self._collection.path,
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        async with response:
            if response.status == 410:
                raise _ExpiredError
            if not 200 <= response.status <= 299:
                raise KubernetesApiError(
                    f"watch of {self._collection.path} failed: HTTP {response.status} "
                    f"{response.reason}",
                    response.status,
                )
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    if line.strip():
                        version = await self._event(line, version)
                        backoff.succeeded()
                if len(pending) > _MAX_EVENT:
                    raise UnavailableError(f"watch of {self._collection.path}: event too large")
        return version

    async def _event(self, line: bytes, version: str) -> str:
        event = json.loads(line)
        found = event.get("object") if isinstance(event, dict) else None
        if not isinstance(found, dict):
            raise ValueError("a watch event without an object")
        kind = event.get("type")
        if kind == "ERROR":
            if found.get("code") == 410:
                raise _ExpiredError
            raise UnavailableError(
                f"watch of {self._collection.path} failed: {found.get('code')} "
                f"{found.get('reason')}"
            )
        metadata = found.get("metadata") or {}
        if kind in ("ADDED", "MODIFIED"):
            await self._seen(found)
        return str(metadata.get("resourceVersion") or version)


def _describe(error: BaseException) -> str:
    """Our errors say what failed; a transport error is named by its type (never a body)."""
    return str(error) if isinstance(error, PyspireError) else type(error).__name__
