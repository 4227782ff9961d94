"""What a reliability scenario measured, in one greppable line per scenario.

Every scenario reports through :class:`Figures`, which prints::

    RELIABILITY rotation_soak form=quick fetches=25 failed=0 p50_ms=2.1 p99_ms=6.3 ...

so ``grep '^RELIABILITY'`` collects the figures of a run (``-s`` shows the prints), attaches the
same line to the test's report (a ``figures`` user property, in JUnit XML too), and hands it to
the conftest, which repeats every line in a "reliability figures" section of the terminal
summary, so a CI log shows them without ``-s``.

Nothing here judges a figure: scenarios assert behaviour (every fetch succeeded, descriptors back
to baseline); latency and memory are reported next to the aim they are read against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from forms import current_form

PREFIX = "RELIABILITY"


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.99 for p99) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def growth_percent(before: float, after: float) -> float:
    """How much ``after`` exceeds ``before``, in percent of ``before``."""
    return 0.0 if before <= 0 else (after - before) * 100.0 / before


def mib(size: float) -> float:
    return size / (1024 * 1024)


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    text = str(value)
    return text.replace(" ", "_") if text else "-"


class Figures:
    """Collects ``key=value`` figures of one scenario; :meth:`report` prints and records them
    (call it before asserting, so a failing scenario still shows what it measured)."""

    def __init__(self, scenario: str, record: Callable[[str], None]) -> None:
        self.scenario = scenario
        self._record = record
        self._values: dict[str, object] = {}

    def add(self, **values: object) -> None:
        self._values.update(values)

    def line(self) -> str:
        fields = " ".join(f"{key}={_text(value)}" for key, value in self._values.items())
        return f"{PREFIX} {self.scenario} form={current_form()} {fields}".rstrip()

    def report(self) -> str:
        """Print the line and record it; returns it."""
        line = self.line()
        print(line, flush=True)
        self._record(line)
        return line
