"""The figures of one or more runs as a table (one column per agent count) and as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .run import LoadResult

Row = tuple[str, Callable[[LoadResult], str]]


def _number(value: float, digits: int = 1) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:,.{digits}f}"
    )


def _full(stalls: dict[str, Any]) -> str:
    """Full collections of one process: how many, the longest (ms)."""
    if "gc" in stalls:  # a worker's probe
        row = stalls["gc"].get("2", {})
        return f"{row.get('count', 0)} / {row.get('max_ms', 0.0):.0f}"
    longest = stalls["wall"]["max_ms_by_generation"].get("2", 0.0)  # the server's gc_pauses.py
    return f"{stalls['collections']} all, {longest:.0f} full"


def _longest(stalls: dict[str, Any]) -> str:
    value = stalls["gc_max_ms"] if "gc_max_ms" in stalls else stalls["wall"]["max_ms"]
    return f"{value:.0f}"


def _stalls(result: LoadResult, figure: Callable[[dict[str, Any]], str]) -> str:
    """``figure`` of the server, then of each worker: ``server | w0 w1``."""
    steady = result.steady
    server = figure(steady["server_stalls"])
    workers = " ".join(figure(stalls) for stalls in steady["generator_stalls"])
    return f"{server} | {workers}"


def _workers(values: Sequence[float]) -> str:
    total = sum(values)
    if len(values) == 1:
        return f"{total:.0f}"
    return f"{total:.0f} ({'+'.join(f'{value:.0f}' for value in values)})"


ROWS: list[Row] = [
    ("agents", lambda r: f"{r.options['agents']:,}"),
    (
        "entries (agents x entries per agent)",
        lambda r: f"{r.options['agents'] * r.options['entries_per_agent']:,}",
    ),
    ("machine load average (1 min) at start", lambda r: _number(r.load_average)),
    ("descriptor limit (soft, raised for the run)", lambda r: f"{r.fd_limit:,}"),
    ("server processes (reuse_port when more than 1)", lambda r: str(r.options["servers"])),
    ("generator processes", lambda r: str(len(r.steady.get("generator_cpu_percent", [])))),
    ("floor: one agent alone, start to SVIDs (s)", lambda r: _number(r.floor["start_seconds"], 2)),
    ("floor: sync p50 (ms)", lambda r: _number(r.floor["sync_p50_ms"])),
    ("floor: server CPU per sync (ms)", lambda r: _number(r.floor["server_ms_per_sync"], 2)),
    (
        "storm: agents started a second (0: all at once)",
        lambda r: _number(r.options["start_per_second"], 0),
    ),
    ("storm: agents holding all SVIDs", lambda r: f"{r.storm['agents_ready']:,}"),
    ("storm: every agent attested (s)", lambda r: _number(r.storm["all_attested_seconds"])),
    ("storm: every agent has its SVIDs (s)", lambda r: _number(r.storm["all_ready_seconds"])),
    ("storm: server CPU (% of a core)", lambda r: _number(r.storm["server_cpu_percent"], 0)),
    ("storm: server CPU per SVID (ms)", lambda r: _number(r.storm["server_ms_per_svid"], 2)),
    (
        "storm: server CPU per agent with its SVIDs (ms)",
        lambda r: _number(r.storm["server_ms_per_agent"], 1),
    ),
    ("storm: generator CPU (%)", lambda r: _workers(r.storm["generator_cpu_percent"])),
    (
        "storm: server calls per agent with its SVIDs",
        lambda r: _number(sum(r.storm["calls_per_agent"].values()), 2),
    ),
    ("steady: syncs/s achieved", lambda r: _number(r.steady["syncs_per_second"])),
    (
        "steady: syncs/s expected (agents / interval)",
        lambda r: _number(r.steady["expected_syncs_per_second"]),
    ),
    (
        "steady: ratio achieved / expected",
        lambda r: _number(r.steady["syncs_per_second"] / r.steady["expected_syncs_per_second"], 2),
    ),
    ("steady: agents that synced", lambda r: f"{r.steady['agents_synced']:,}"),
    ("steady: sync p50 (ms)", lambda r: _number(r.steady["sync_p50_ms"])),
    ("steady: sync p99 (ms)", lambda r: _number(r.steady["sync_p99_ms"])),
    ("steady: sync max (ms)", lambda r: _number(r.steady["sync_max_ms"])),
    (
        "steady: ratio p99 / floor p50",
        lambda r: _number(r.steady["sync_p99_ms"] / r.floor["sync_p50_ms"]),
    ),
    (
        "steady: collector (server, generator)",
        lambda r: f"{r.options['server_collector']}, {r.options['generator_collector']}",
    ),
    (
        "steady: loop lag max ms (server | workers)",
        lambda r: _stalls(
            r, lambda s: f"{s['lag']['lag_max_ms'] if 'lag' in s else s['lag_max_ms']:.0f}"
        ),
    ),
    (
        "steady: loop lag p99 ms (server | workers)",
        lambda r: _stalls(
            r, lambda s: f"{s['lag']['lag_p99_ms'] if 'lag' in s else s['lag_p99_ms']:.0f}"
        ),
    ),
    (
        "steady: lag watcher held off max ms (server | workers)",
        lambda r: _stalls(
            r, lambda s: f"{s.get('lag', s).get('lag_unscheduled_max_ms', float('nan')):.0f}"
        ),
    ),
    (
        "steady: syncs over 0.5 s: count / seconds they began in / most in one second",
        lambda r: (
            f"{r.steady['slow_syncs']:,} / {r.steady['slow_seconds']:,} / "
            f"{r.steady['slow_busiest_second']:,}"
        ),
    ),
    ("steady: GC longest ms (server | workers)", lambda r: _stalls(r, _longest)),
    ("steady: full GCs n / longest ms (server | workers)", lambda r: _stalls(r, _full)),
    (
        "steady: young generation at the end, objects (server | workers)",
        lambda r: _stalls(r, lambda stalls: f"{stalls.get('young_objects', 0):,}"),
    ),
    ("steady: workload SVIDs issued", lambda r: f"{r.steady['svids_issued']:,}"),
    ("steady: agent SVIDs renewed", lambda r: f"{r.steady['agent_renewals']:,}"),
    ("steady: entry changes (churn)", lambda r: f"{r.steady['churn_changes']:,}"),
    ("steady: server CPU (% of a core)", lambda r: _number(r.steady["server_cpu_percent"], 0)),
    ("steady: server CPU per sync (ms)", lambda r: _number(r.steady["server_ms_per_sync"], 2)),
    (
        "steady: ratio CPU per sync / floor",
        lambda r: _number(r.steady["server_ms_per_sync"] / r.floor["server_ms_per_sync"], 2),
    ),
    ("steady: generator CPU (% of a core)", lambda r: _workers(r.steady["generator_cpu_percent"])),
    ("steady: churn process CPU (%)", lambda r: _number(r.steady["churn_cpu_percent"], 0)),
    ("server RSS, empty (MB)", lambda r: _number(r.memory["server_rss_empty_mb"])),
    (
        "server RSS, entries registered, 0 agents (MB)",
        lambda r: _number(r.memory["server_rss_registered_mb"]),
    ),
    ("server RSS, steady (MB)", lambda r: _number(r.memory["server_rss_steady_mb"])),
    (
        "server RSS per connected agent (MB)",
        lambda r: _number(r.memory["server_rss_per_agent_mb"], 3),
    ),
    ("server open descriptors, steady", lambda r: f"{r.memory['server_fds_steady']:,}"),
    ("generator RSS (MB)", lambda r: _number(r.memory["generator_rss_mb"], 0)),
    ("burst: SVIDs re-minted", lambda r: f"{r.burst['svids_issued']:,}"),
    ("burst: until every agent has them (s)", lambda r: _number(r.burst["seconds"])),
    ("burst: SVIDs/s", lambda r: _number(r.burst["svids_per_second"], 0)),
    ("burst: server CPU per SVID (ms)", lambda r: _number(r.burst["server_ms_per_svid"], 2)),
    ("burst: generator CPU (%)", lambda r: _workers(r.burst["generator_cpu_percent"])),
    ("errors", lambda r: f"{r.error_count:,}"),
]


def _cell(cell: Callable[[LoadResult], str], result: LoadResult) -> str:
    try:
        return cell(result)
    except KeyError:
        return "-"  # a phase left out (the burst)


def table(results: Sequence[LoadResult]) -> str:
    """One row per figure, one column per run; then each run's errors by kind."""
    rows = [(name, [_cell(cell, result) for result in results]) for name, cell in ROWS]
    width = max(len(name) for name, _ in rows)
    columns = [max(len(row[1][number]) for row in rows) for number in range(len(results))]
    lines = [
        f"{name:<{width}}  " + "  ".join(f"{value:>{columns[n]}}" for n, value in enumerate(values))
        for name, values in rows
    ]
    for result in results:
        if result.errors:
            lines.append(f"errors at {result.options['agents']:,} agents, by kind:")
            for kind, count in sorted(result.errors.items(), key=lambda item: -item[1]):
                lines.append(f"  {count:>7,}  {kind}")
    return "\n".join(lines)


def write_json(path: Path, results: Sequence[LoadResult]) -> None:
    """Every figure of every run, as a list of objects."""
    data: list[dict[str, Any]] = [dataclasses.asdict(result) for result in results]
    path.write_text(json.dumps(data, indent=2) + "\n")
