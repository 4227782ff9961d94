"""What stops a process's event loop, measured from inside it: every collection of the cyclic
garbage collector (timed through :data:`gc.callbacks`, by generation), the loop's lag (how
late a callback scheduled from a watcher thread every :data:`LAG_PERIOD` seconds runs), and how
long the watcher itself overslept (it could not take the GIL, held by a collection or a long
callback, or the process was not scheduled).

A lag without a collection of the same size points elsewhere (a blocking call, a long
callback, the machine's other work); a lag matching a full collection is the collector. The
load generator's workers and the server run under ``gc_pauses.py`` both carry one, so a
benchmark can tell which side stalled.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

LAG_PERIOD = 0.02
"""Seconds between two lag probes."""


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


class StallProbe:
    """Collections and loop lag since the last :meth:`take`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._collections: list[tuple[int, float, int]] = []
        self._lags: list[float] = []
        self._oversleeps: list[float] = []
        self._gc_started = 0.0
        self._stopped = threading.Event()

    def install(self) -> None:
        """Time every collection from now on."""
        gc.callbacks.append(self._timed)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Probe ``loop``'s lag from a daemon thread until the process ends."""
        thread = threading.Thread(target=self._watch, args=(loop,), daemon=True, name="lag")
        thread.start()

    def _timed(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        with self._lock:
            self._collections.append((int(info["generation"]), took, int(info.get("collected", 0))))

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        woke = time.perf_counter()
        while True:
            asleep = woke
            if self._stopped.wait(LAG_PERIOD):
                return
            woke = sent = time.perf_counter()
            with self._lock:
                # The watcher's own oversleep: no GIL for it, or no CPU for the process.
                self._oversleeps.append(woke - asleep - LAG_PERIOD)
            done = threading.Event()

            def arrived(sent: float = sent, done: threading.Event = done) -> None:
                with self._lock:
                    self._lags.append(time.perf_counter() - sent)
                done.set()

            try:
                loop.call_soon_threadsafe(arrived)
            except RuntimeError:  # the loop is closed
                return
            done.wait()

    def take(self) -> dict[str, Any]:
        """Figures since the last call (then counting afresh): collections by generation
        (count, longest, total ms, objects freed) and the loop's lag (p50, p99, longest ms,
        probes later than 100 ms)."""
        with self._lock:
            collections, self._collections = self._collections, []
            lags, self._lags = self._lags, []
            oversleeps, self._oversleeps = self._oversleeps, []
        by_generation: dict[str, dict[str, float]] = {}
        for generation, took, collected in collections:
            row = by_generation.setdefault(
                str(generation), {"count": 0, "max_ms": 0.0, "total_ms": 0.0, "collected": 0}
            )
            row["count"] += 1
            row["max_ms"] = max(row["max_ms"], _ms(took))
            row["total_ms"] = round(row["total_ms"] + 1000 * took, 1)
            row["collected"] += collected
        lags.sort()
        return {
            "gc": dict(sorted(by_generation.items())),
            "gc_max_ms": max((_ms(took) for _, took, _ in collections), default=0.0),
            "lag_probes": len(lags),
            "lag_p50_ms": _ms(lags[len(lags) // 2]) if lags else 0.0,
            "lag_p99_ms": _ms(lags[min(len(lags) - 1, int(len(lags) * 0.99))]) if lags else 0.0,
            "lag_max_ms": _ms(lags[-1]) if lags else 0.0,
            "lags_over_100ms": sum(1 for lag in lags if lag > 0.1),
            "lag_unscheduled_max_ms": _ms(max(oversleeps, default=0.0)),
            "tracked_objects": sum(gc.get_count()) + len(gc.get_objects(2)),
            "young_objects": len(gc.get_objects(0)),
            "frozen_objects": gc.get_freeze_count(),
            "threshold": list(gc.get_threshold()),
        }
