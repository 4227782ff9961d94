"""Where a process's memory goes, written from inside it on request: RSS, the C allocator's
view (``mallinfo2``, glibc 2.33 and later: bytes in use, bytes free inside its arenas), what
:mod:`tracemalloc` traces, and the same after a full collection and after ``malloc_trim(0)``.

``gc_pauses.py`` takes one reading per SIGUSR1 after the first when
``PYSPIRE_BENCH_HEAP_DIR`` names a directory (the first SIGUSR1 of a load run marks the start
of its steady state; collecting there would change what the window measures). With
``PYSPIRE_BENCH_TRACEMALLOC_FRAMES`` (say 8) tracing starts once the process is ready (what
start-up built is not traced) and each reading also writes two :class:`tracemalloc.Snapshot`
files, before and after the collection:
``tests/bench/heap_diff.py`` compares snapshots of two runs at different agent counts, per
file and per traceback, divided by the difference in agents. Tracing slows the process down
and costs memory of its own; read RSS from a run without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_mallinfo2 = getattr(_libc, "mallinfo2", None)  # glibc 2.33 and later
if _mallinfo2 is not None:
    _mallinfo2.restype = _MallInfo2
_malloc_trim = getattr(_libc, "malloc_trim", None)


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _reading() -> dict[str, Any]:
    info = _mallinfo2() if _mallinfo2 is not None else None
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    return {
        "rss": _rss_bytes(),
        "malloc_in_use": None if info is None else info.uordblks + info.hblkhd,
        "malloc_free_in_arenas": None if info is None else info.fordblks,
        "malloc_arena": None if info is None else info.arena,
        "traced": traced,
        "gc_tracked_objects": len(gc.get_objects()),
    }


def _garbage_by_type() -> dict[str, int]:
    """A full collection, with what it found unreachable counted by type (most first)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        counts = Counter(
            f"{type(item).__module__}.{type(item).__qualname__}" for item in gc.garbage
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()  # the cycles saved above, now unreachable again
    return dict(counts.most_common(60))


def start_tracing_from_environment() -> None:
    """Start :mod:`tracemalloc` when ``PYSPIRE_BENCH_TRACEMALLOC_FRAMES`` asks for it."""
    frames = int(os.environ.get("PYSPIRE_BENCH_TRACEMALLOC_FRAMES", "0"))
    if frames > 0:
        tracemalloc.start(frames)


class HeapProbe:
    """Readings written to ``PYSPIRE_BENCH_HEAP_DIR`` (nothing without it)."""

    def __init__(self) -> None:
        directory = os.environ.get("PYSPIRE_BENCH_HEAP_DIR")
        self._directory = Path(directory) if directory else None
        self._calls = 0

    def take(self) -> None:
        """One reading (see the module documentation); the first call only counts."""
        self._calls += 1
        if self._directory is None or self._calls == 1:
            return
        stem = self._directory / f"heap-{self._calls - 1}"
        figures: dict[str, Any] = {"as_is": _reading()}
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(f"{stem}-as-is.tracemalloc")
        figures["garbage_by_type"] = _garbage_by_type()
        figures["after_collect"] = _reading()
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(f"{stem}-collected.tracemalloc")
        if _malloc_trim is not None:
            _malloc_trim(0)
        figures["after_trim"] = _reading()
        Path(f"{stem}.json").write_text(json.dumps(figures, indent=1))
