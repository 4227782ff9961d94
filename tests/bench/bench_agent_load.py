"""Many simulated agents against one real pyspire-server: what it takes to carry them.

Run from the repository root, e.g.::

    .venv/bin/python tests/bench/bench_agent_load.py --agents 100,1000 --duration 60

For each agent count, a fresh ``pyspire-server`` process (SQLite, or ``--datastore postgres``)
gets a join token and ``--entries-per-agent`` entries per agent; then worker processes
(``--workers``) run the agents, each from its own loopback address with the agent's own code
(:mod:`loadgen`): an attestation storm (all at once, until each holds every SVID), a steady
state of ``--duration`` seconds syncing every ``--sync-interval`` seconds while an admin process
changes ``--churn-per-second`` entries a second, and a burst (every agent re-mints all its
SVIDs at once). The figures are read against a floor measured in the same run: one extra agent
alone, before the others. CONTRIBUTING.md ("Load") says what each row means. Nothing is
asserted: benchmarks print, tests assert (``tests/e2e/test_agent_load.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen.options import options_for, parser
from loadgen.pipe import WorkerError
from loadgen.report import table, write_json
from loadgen.run import run_load


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    results = []
    for agents in args.agents:
        options = options_for(args, agents)
        print(
            f"{agents:,} agents x {options.entries_per_agent} entries, sync every "
            f"{options.sync_interval:g}s, {options.duration:g}s steady, {options.workers} "
            f"generator process(es), {options.churn_per_second:g} entry changes/s, "
            f"{options.datastore}",
            flush=True,
        )
        try:
            results.append(run_load(options, say=lambda line: print(line, flush=True)))
            if len(args.agents) > 1:
                print(table(results[-1:]), flush=True)  # kept even if a later run fails
        except (WorkerError, RuntimeError) as error:
            print(f"run at {agents:,} agents failed: {error}", file=sys.stderr)
            break
    if results:
        print(table(results))
    if args.json and results:
        write_json(Path(args.json), results)
    return 0 if len(results) == len(args.agents) else 1


if __name__ == "__main__":
    sys.exit(main())
