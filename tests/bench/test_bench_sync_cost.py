"""The sync-cost benchmark's report: a floor too small to measure gives a message, not a
ZeroDivisionError after the minutes the run took."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sync_cost import server_report


def figures(**values: float) -> dict[str, float]:
    """A millisecond for every figure of two loops, but ``values`` (``floor_asyncio=0.0``)."""
    kinds = ("floor", "one", "two")
    measured = {f"{kind}-{loop}": 0.001 for kind in kinds for loop in ("asyncio", "uvloop")}
    measured.update({name.replace("_", "-"): value for name, value in values.items()})
    return measured


def test_ratios_to_a_measured_floor() -> None:
    lines = server_report(figures(one_asyncio=0.002), ["asyncio"])
    assert any("one call" in line and "2.00x floor" in line for line in lines)
    assert not any("n/a" in line or "not measured" in line for line in lines)


def test_a_floor_of_zero_is_reported_not_divided_by() -> None:
    lines = server_report(figures(floor_asyncio=0.0), ["asyncio", "uvloop"])
    assert any("one call" in line and "n/a floor" in line for line in lines)
    assert "floor-asyncio" in lines[-1]
    assert "raise --rounds or --agents" in lines[-1]
