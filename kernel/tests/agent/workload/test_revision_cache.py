"""The cache of what the workload-facing APIs build from one snapshot revision."""

from __future__ import annotations

import pytest

from pyspire.agent.workload.revision_cache import RevisionCache
from pyspire.agent.workload.sds import SDS_CACHE_SIZE
from pyspire.agent.workload.service import X509_RESPONSE_CACHE_SIZE


def test_the_cache_keeps_one_revision_and_a_bounded_number_of_keys() -> None:
    cache: RevisionCache[tuple[str, ...], bytes] = RevisionCache(size=2)
    values = {name: name.encode() for name in ("a", "b", "c", "d")}

    cache.put(1, ("a",), values["a"])
    cache.put(1, ("b",), values["b"])
    assert cache.get(1, ("a",)) is values["a"]
    assert cache.get(2, ("a",)) is None, "another revision must not see these values"

    cache.put(1, ("c",), values["c"])
    assert cache.get(1, ("a",)) is None, "the oldest key makes room"
    assert cache.get(1, ("c",)) is values["c"]

    cache.put(2, ("d",), values["d"])
    assert cache.get(1, ("b",)) is None
    assert cache.get(2, ("b",)) is None, "a new revision drops what the old one kept"
    assert cache.get(2, ("d",)) is values["d"]


def test_a_cache_holds_at_least_one_key() -> None:
    with pytest.raises(ValueError, match=r"^size: must be at least 1, got 0$"):
        RevisionCache[str, bytes](size=0)
    assert X509_RESPONSE_CACHE_SIZE >= 1
    assert SDS_CACHE_SIZE >= 1
