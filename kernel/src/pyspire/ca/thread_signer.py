"""Signing a batch of leaves in a worker thread, for a server without signing processes.

An ECDSA or RSA signature is the one step of a leaf that needs no Python: ``cryptography``
releases the GIL while OpenSSL signs. Handed to a worker thread a batch at a time, a batch's
signatures are made while the event loop goes on with TLS, HTTP/2 and the next batch's
templates, on the second core; and they skip the per-signature hops through the key manager's
interface, which cost about a third of a P-256 signature each. This takes only keys the key
manager hands over (:mod:`pyspire.ca.key_export`); a key that stays in a KMS is signed through
its key manager, as is a batch too small to pay for the hop to the thread.

The hop is paid in latency rather than CPU: a batch waits for the thread to be scheduled and
the loop for its answer, tens of microseconds on a quiet machine and milliseconds on an
oversubscribed one. A loop with many calls in flight (a burst) fills that wait with other
work; a lone small batch (a sync bringing a few SVIDs) signs where it is.
"""

from __future__ import annotations

__all__ = ["MIN_THREADED_BATCH", "ThreadSigner"]

import asyncio
from collections.abc import Sequence

from pyspire.ca import worker_jobs
from pyspire.ca.key_export import ExportedKeys
from pyspire.ca.signing import ManagedKey

MIN_THREADED_BATCH = 8
"""The fewest leaves signed in the thread: a smaller batch's signatures (about 30 µs each with
EC P-256) cost less than the hop's latency, and are made sooner where they are."""


class ThreadSigner:
    """Signs batches with exportable CA keys in a worker thread (a
    :class:`~pyspire.ca.x509svid.BatchSigner`)."""

    def __init__(self) -> None:
        self._keys = ExportedKeys()

    async def sign(self, key: ManagedKey, payloads: Sequence[bytes]) -> list[bytes] | None:
        """Each payload signed with ``key`` as its key manager would sign it, or None for a
        batch of fewer than :data:`MIN_THREADED_BATCH` or a key its key manager keeps (the
        caller then signs through the key manager)."""
        if len(payloads) < MIN_THREADED_BATCH:
            return None
        pkcs8 = await self._keys.pkcs8(key)
        if pkcs8 is None:
            return None
        return await asyncio.to_thread(
            worker_jobs.sign_payloads, pkcs8, key.hash_algorithm.value, payloads
        )
