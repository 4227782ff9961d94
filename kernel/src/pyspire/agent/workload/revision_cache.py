"""What the workload-facing APIs build from one snapshot revision, kept for every caller that
asks the same thing at that revision.

Many workloads (and many Envoys) on one agent see the same identities: the Workload API's
X509SVIDResponse and the Secret Discovery Service's secrets are built and encoded once per
revision and key, not once per caller. A revision names the whole content of the agent cache
(SVIDs, keys, bundles, entries), so a value kept for the current revision is never stale, and
moving to another revision drops everything kept for the previous one.
"""

from __future__ import annotations

__all__ = ["RevisionCache"]

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RevisionCache(Generic[K, V]):
    """Values of one snapshot revision, by key (typically the entry IDs a caller matches: every
    caller whose selectors match the same entries gets the same value).

    At most ``size`` keys are kept, the oldest making room. Values may hold the SVIDs' private
    keys, as the snapshot does; they live only in this process's memory and only as long as
    their revision is current.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size: must be at least 1, got {size}")
        self._size = size
        self._revision: int | None = None
        self._values: OrderedDict[K, V] = OrderedDict()

    def get(self, revision: int, key: K) -> V | None:
        """The value kept for ``key`` at ``revision``, or None."""
        if revision != self._revision:
            return None
        return self._values.get(key)

    def put(self, revision: int, key: K, value: V) -> None:
        """Keep ``value`` for ``key`` at ``revision``; another revision than the current one
        replaces it (and drops what it kept)."""
        if revision != self._revision:
            self._revision = revision
            self._values.clear()
        self._values[key] = value
        while len(self._values) > self._size:
            self._values.popitem(last=False)
