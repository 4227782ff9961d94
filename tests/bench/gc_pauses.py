"""Run a pyspire process with every garbage collection timed: ``gc_pauses.py <stats.json>
<program> <argv...>`` (``program``: ``server`` or ``agent``).

A benchmark starts the server through this file to see the pauses the collector causes
under load: each collection's duration (wall clock, and the CPU time of the thread, which
other processes on the machine do not inflate) is recorded from :data:`gc.callbacks`; SIGUSR1
writes how many there were, the longest, the 99th percentile and the longest per generation
to ``stats.json`` and starts counting afresh. The program itself runs unchanged, but for
``PYSPIRE_BENCH_GC_THRESHOLDS`` (``a,b,c``), the collector's thresholds instead of CPython's,
to compare others.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

_pauses: list[tuple[int, float, float]] = []
_started = [0.0, 0.0]


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
    return {
        "collections": len(_pauses),
        "wall": _summary(1),
        "cpu": _summary(2),
        "tracked_objects": len(gc.get_objects()),
        "frozen_objects": gc.get_freeze_count(),
        "threshold": list(gc.get_threshold()),
    }


def main() -> None:
    stats_path = Path(sys.argv[1])
    program = sys.argv[2]

    def dump(_signal: int, _frame: FrameType | None) -> None:
        stats = _stats()
        _pauses.clear()
        temporary = stats_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(stats))
        os.replace(temporary, stats_path)

    signal.signal(signal.SIGUSR1, dump)
    gc.callbacks.append(_timed)
    thresholds = os.environ.get("PYSPIRE_BENCH_GC_THRESHOLDS")
    if thresholds:
        gc.set_threshold(*(int(part) for part in thresholds.split(",")))
    if program == "server":
        from pyspire.cli.server import main as run
    else:
        from pyspire.cli.agent import main as run
    sys.exit(run(sys.argv[3:]))


if __name__ == "__main__":
    main()
