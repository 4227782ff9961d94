"""The load generator's small form: twenty simulated agents against a real server process.

The full form is ``tests/bench/bench_agent_load.py`` (thousands of agents, figures against a
floor); this runs the same code path briefly so that it keeps working: every agent attests
from its own loopback address, gets all its SVIDs, syncs every second while an admin process
changes entries, rotates its workload SVIDs (a 6 s TTL: at half of it) and re-mints them all
in the burst, with no error of any kind.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from loadgen.options import LoadOptions
from loadgen.report import table
from loadgen.run import run_load

AGENTS = 20
ENTRIES = 5


def test_twenty_agents_attest_sync_rotate_and_reissue_without_errors() -> None:
    options = LoadOptions(
        agents=AGENTS,
        entries_per_agent=ENTRIES,
        sync_interval=1.0,
        duration=4.0,
        churn_per_second=3.0,
        svid_ttl=6,
        storm_timeout=60.0,
    )
    result = run_load(options, say=lambda line: None)
    figures = table([result])
    assert result.errors == {}, figures
    assert result.storm["agents_ready"] == AGENTS, figures
    assert result.steady["agents_synced"] == AGENTS, figures
    assert result.steady["syncs"] >= AGENTS * 2, figures
    assert result.steady["svids_issued"] > 0, figures
    assert result.steady["churn_changes"] > 0, figures
    assert result.burst["svids_issued"] >= AGENTS * ENTRIES, figures
