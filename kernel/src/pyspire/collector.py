"""The garbage collector's policy in a long-running pyspire process (``pyspire-server run``,
``pyspire-agent run``; never a library user's or a test's process, whose heap is not ours).

CPython frees most objects by reference counting; its cyclic collector walks every tracked
object of a generation, and a full (generation 2) collection walks them all. A server holding
thousands of agent connections tracks hundreds of thousands of objects, so a full collection
stops the event loop for a time proportional to the heap: every call waiting meanwhile has that
pause in its latency. Two measures keep it out of the tail (figures in CONTRIBUTING,
``tests/bench/bench_connection_memory.py``):

- **larger young generations** (:data:`THRESHOLDS`): with CPython's default of 700 allocations
  between young collections, the objects of calls in progress survive two of them and reach the
  old generation, which fills and forces full collections under load; at 50,000 a call's
  objects are freed before the collector ever looks at them, and young collections stay short
  (they walk young objects only). Set at process start, they also make start-up faster.
- **freezing what start-up built** (:func:`freeze_startup_heap`): plugins, the registry cache,
  encoded entries, imported modules live as long as the process; once it is ready they move to
  the permanent generation, which no collection walks.

CPython's rule that a full collection waits until the objects promoted since the last one are
a quarter of those already old keeps full collections rare as the number of connections grows.
"""

from __future__ import annotations

__all__ = ["THRESHOLDS", "freeze_startup_heap", "tune_collector"]

import gc

import structlog

THRESHOLDS = (50_000, 20, 10)
"""Allocations between young collections; young collections per middle one; middle ones per
full one (full ones also wait for CPython's quarter rule)."""

_log = structlog.get_logger("pyspire.collector")


def tune_collector() -> None:
    """Use :data:`THRESHOLDS` from now on (call once, at process start)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_heap() -> None:
    """Collect once, then move every object tracked now to the permanent generation (call
    once, when the process is ready to serve). Frozen objects are still freed when their last
    reference goes; only a cycle among them would stay."""
    gc.collect()
    gc.freeze()
    _log.debug("startup heap frozen", frozen_objects=gc.get_freeze_count())
