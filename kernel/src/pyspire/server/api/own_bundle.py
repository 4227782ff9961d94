"""Our trust bundle's GetBundle answer, encoded once per bundle revision.

Every agent asks for our bundle at every sync, and it changes a few times a day. So the answer
to the agent's request (no output mask) is kept as its encoding, as SPIRE keeps the bundle it
serves: read again from the datastore at most once per :data:`BUNDLE_READ_INTERVAL` (SPIRE's
datastore cache keeps it one second), and at once after the trust epoch moved
(:attr:`~pyspire.server.context.ServerContext.trust_epoch`: this server wrote the bundle, or its
CA changed) or :meth:`KeptBundle.forget` was called. The bytes are encoded again (and their
digest, :func:`~pyspire.proto.bundle_digest.answer_digest`, taken again) only when the bundle
read differs from the one they encode. Callers that arrive while a read is under way wait for
that read instead of starting their own, so a thousand agents syncing at once cost one datastore
read. :class:`KeptBundle` keeps any one trust domain's bundle this way (a federated one may be
absent); :class:`OwnBundleReply` is our own, which must exist.
"""

from __future__ import annotations

__all__ = ["BUNDLE_READ_INTERVAL", "KeptAnswer", "KeptBundle", "OwnBundleReply"]

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspire.proto.bundle_digest import answer_digest
from pyspire.server.context import ServerContext
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import NotFoundError

BUNDLE_READ_INTERVAL = timedelta(seconds=1)
"""How long a read of a bundle answers before the datastore is read again."""


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """A bundle's answer as kept: its encoding (None: no bundle is stored) and the digest of
    that encoding."""

    encoded: bytes | None
    digest: bytes


@dataclass(frozen=True, slots=True)
class _Read:
    at: datetime
    epoch: int
    bundle: Bundle | None
    answer: KeptAnswer


class KeptBundle:
    """One trust domain's encoded bundle, kept as described in the module documentation.

    ``read`` reads the bundle (None when there is none) and ``encode`` writes it; the answer
    is shared by every caller, and no method awaits anything but ``read``.
    """

    def __init__(
        self,
        context: ServerContext,
        read: Callable[[], Awaitable[Bundle | None]],
        encode: Callable[[Bundle], bytes],
    ) -> None:
        self._context = context
        self._read_bundle = read
        self._encode = encode
        self._last: _Read | None = None
        self._lock = asyncio.Lock()
        self.reads = 0
        """How many times the bundle was read (for tests)."""
        self.encodings = 0
        """How many times the bundle was encoded (for tests: once per revision)."""

    def forget(self) -> None:
        """Read the bundle again at the next call (this server just wrote it)."""
        self._last = None

    def _fresh(self) -> KeptAnswer | None:
        last = self._last
        context = self._context
        if last is None or last.epoch != context.trust_epoch:
            return None
        if context.clock.now() - last.at >= BUNDLE_READ_INTERVAL:
            return None
        return last.answer

    async def answer(self) -> KeptAnswer:
        """The current bundle's answer."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        async with self._lock:
            fresh = self._fresh()  # read meanwhile by the caller that held the lock
            if fresh is not None:
                return fresh
            return await self._read()

    async def _read(self) -> KeptAnswer:
        context = self._context
        now, epoch = context.clock.now(), context.trust_epoch
        self.reads += 1
        bundle = await self._read_bundle()
        last = self._last
        if last is not None and last.bundle == bundle:
            answer = last.answer
        elif bundle is None:
            answer = KeptAnswer(None, answer_digest(None))
        else:
            encoded = self._encode(bundle)
            self.encodings += 1
            answer = KeptAnswer(encoded, answer_digest(encoded))
        self._last = _Read(now, epoch, bundle, answer)
        return answer


class OwnBundleReply(KeptBundle):
    """Our trust domain's bundle, kept: GetBundle's answer to agents."""

    async def encoded(self) -> bytes:
        """The current bundle's encoding; NotFound when no bundle is stored."""
        encoded = (await self.answer()).encoded
        if encoded is None:
            raise NotFoundError("bundle not found")
        return encoded
