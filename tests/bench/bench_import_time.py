"""Benchmark of what importing the agent costs, and what the HTTP server of its telemetry adds.

Run from the repository root: ``.venv/bin/python tests/bench/bench_import_time.py``
(``--runs`` to change how many starts are timed per row; the median is printed).

Each row times fresh ``python -c`` processes, so every import is cold in the interpreter (the
files themselves are in the page cache after the first run). The floor is ``python -c pass``
measured in the same run; each row prints its time and its ratio to the floor, and the time it
adds to the floor.

- ``import pyspire.agent.runtime``: what every agent pays before its first log line.
- ``... + aiohttp.web``: what an agent serving ``telemetry.Prometheus`` or ``health_checks``
  pays, since :mod:`pyspire.telemetry.endpoints` imports the HTTP server only when one is
  configured.
- ``import aiohttp.web`` alone: the HTTP server's own cost, for scale.

Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

ROWS = [
    ("floor: python -c pass", "pass"),
    ("import pyspire.agent.runtime", "import pyspire.agent.runtime"),
    (
        "import pyspire.agent.runtime + the telemetry HTTP server",
        "import pyspire.agent.runtime, pyspire.telemetry.http",
    ),
    ("import aiohttp.web alone", "import aiohttp.web"),
]


def one_start(code: str) -> float:
    """Seconds to start ``python -c code`` and see it exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=15, help="starts per row (median kept)")
    args = parser.parse_args(argv)

    for _, code in ROWS:  # warm the page cache and the bytecode caches
        one_start(code)
    samples: dict[str, list[float]] = {code: [] for _, code in ROWS}
    for _ in range(args.runs):  # interleaved, so a burst of load hits every row alike
        for _, code in ROWS:
            samples[code].append(one_start(code))
    medians = {code: statistics.median(times) for code, times in samples.items()}
    floor = medians["pass"]
    for label, code in ROWS:
        seconds = medians[code]
        print(
            f"{label:58} {seconds * 1000:7.1f} ms  {seconds / floor:5.2f}x floor"
            f"  (+{(seconds - floor) * 1000:6.1f} ms)"
        )
    print(f"median of {args.runs} starts per row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
