"""Run a pyspire process with every garbage collection timed: ``gc_pauses.py <stats.json>
<program> <argv...>`` (``program``: ``server`` or ``agent``).

A benchmark starts the server through this file to see the pauses the collector causes
under load: each collection's duration (wall clock, and the CPU time of the thread, which
other processes on the machine do not inflate) is recorded from :data:`gc.callbacks`, and once
the process is ready the event loop's lag is probed (:mod:`stall_probe`); SIGUSR1 writes how
many collections there were, the longest, the 99th percentile, the longest per generation and
the loop's lag to ``stats.json`` and starts counting afresh; SIGUSR2 runs a middle and then a
full collection and writes what each cost to ``stats.walks.json``. The program runs unchanged (its
collector as :mod:`pyspire.collector` sets it), but for two environment variables that compare
other settings: ``PYSPIRE_BENCH_GC_THRESHOLDS`` (``a,b,c``), thresholds instead of
:data:`pyspire.collector.THRESHOLDS`, ``PYSPIRE_BENCH_GC_FREEZE=0``, no freeze at all (neither
once ready nor after a storm; ``700,10,10`` with no freeze is CPython's own behaviour), and
``PYSPIRE_BENCH_GC_SETTLED_FREEZE=0``, the start-up freeze only (the policy before
:class:`pyspire.collector.SettledFreeze`), and ``PYSPIRE_BENCH_GC_SWEEP=0``, no timed young
collections (the policy before :class:`pyspire.collector.YoungSweep`). The statistics count
the settled freezes made.
``PYSPIRE_BENCH_HEAP_DIR`` and ``PYSPIRE_BENCH_TRACEMALLOC_FRAMES`` add readings of where the
memory goes (:mod:`heap_probe`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heap_probe import HeapProbe, start_tracing_from_environment
from stall_probe import StallProbe

_pauses: list[tuple[int, float, float]] = []
_probe = StallProbe()
_heap = HeapProbe()
_started = [0.0, 0.0]
_settled_freezes: list[tuple[float, int]] = []


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        _started[1] = time.thread_time()
    else:
        _pauses.append(
            (
                int(info["generation"]),
                time.perf_counter() - _started[0],
                time.thread_time() - _started[1],
            )
        )


def _summary(index: int) -> dict[str, Any]:
    durations = sorted(pause[index] for pause in _pauses)
    by_generation: dict[str, float] = {}
    for pause in _pauses:
        key = str(pause[0])
        by_generation[key] = max(by_generation.get(key, 0.0), pause[index])
    p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))] if durations else 0.0
    return {
        "max_ms": 1000 * (durations[-1] if durations else 0.0),
        "p99_ms": 1000 * p99,
        "total_ms": 1000 * sum(durations),
        "max_ms_by_generation": {k: round(1000 * v, 1) for k, v in sorted(by_generation.items())},
    }


def _stats() -> dict[str, Any]:
    probe = _probe.take()
    return {
        "lag": {key: value for key, value in probe.items() if key.startswith("lag")},
        "collections": len(_pauses),
        "wall": _summary(1),
        "cpu": _summary(2),
        "tracked_objects": len(gc.get_objects()),
        "young_objects": len(gc.get_objects(0)),
        "frozen_objects": gc.get_freeze_count(),
        "settled_freezes": len(_settled_freezes),
        "settled_freezes_cpu_ms_young": [
            (round(took, 3), young) for took, young in _settled_freezes
        ],
        "threshold": list(gc.get_threshold()),
    }


def _walks() -> dict[str, Any]:
    """What a middle and then a full collection cost now (CPU time of the thread, ms), and
    the objects each walked: the cost of the collections CPython would run next, whenever
    it chooses to, measured at a moment the benchmark picks."""
    walks: dict[str, Any] = {}
    for generation, name in ((1, "middle"), (2, "full")):
        walked = sum(len(gc.get_objects(g)) for g in range(generation + 1))
        started = time.thread_time()
        gc.collect(generation)
        walks[name] = {"cpu_ms": 1000 * (time.thread_time() - started), "objects": walked}
    walks["frozen_objects"] = gc.get_freeze_count()
    return walks


def _replace_collector_policy() -> None:
    """Apply the environment's collector settings through :mod:`pyspire.collector` (before
    the command line imports it) and start the lag probe once the process is ready."""
    import pyspire.collector as collector

    thresholds = os.environ.get("PYSPIRE_BENCH_GC_THRESHOLDS")
    if thresholds:
        chosen = tuple(int(part) for part in thresholds.split(","))
        collector.tune_collector = lambda: gc.set_threshold(*chosen)
    freeze = collector.freeze_startup_heap
    freezing = os.environ.get("PYSPIRE_BENCH_GC_FREEZE", "1") != "0"
    settled_freezing = freezing and os.environ.get("PYSPIRE_BENCH_GC_SETTLED_FREEZE", "1") != "0"
    freeze_settled = collector.freeze_settled_heap

    def when_ready() -> None:
        if freezing:
            freeze()
        _probe.watch(asyncio.get_running_loop())
        start_tracing_from_environment()

    def when_settled() -> None:
        if settled_freezing:
            young = len(gc.get_objects(0))
            started = time.thread_time()
            freeze_settled()
            took = 1000 * (time.thread_time() - started)
            _settled_freezes.append((took, young))

    collector.freeze_startup_heap = when_ready
    collector.freeze_settled_heap = when_settled
    if os.environ.get("PYSPIRE_BENCH_GC_SWEEP", "1") == "0":
        collector.YoungSweep.sweep = lambda _sweep: 0  # type: ignore[method-assign]


def main() -> None:
    stats_path = Path(sys.argv[1])
    program = sys.argv[2]

    def dump(_signal: int, _frame: FrameType | None) -> None:
        stats = _stats()
        _pauses.clear()
        temporary = stats_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(stats))
        os.replace(temporary, stats_path)
        _heap.take()

    def walk(_signal: int, _frame: FrameType | None) -> None:
        stats = _walks()
        temporary = stats_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(stats))
        os.replace(temporary, stats_path.with_suffix(".walks.json"))

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, walk)
    gc.callbacks.append(_timed)
    _replace_collector_policy()
    if program == "server":
        from pyspire.cli.server import main as run
    else:
        from pyspire.cli.agent import main as run
    sys.exit(run(sys.argv[3:]))


if __name__ == "__main__":
    main()
