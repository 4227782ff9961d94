"""What each extra agent costs a process, from two :mod:`tracemalloc` snapshots of it at two
agent counts (written by ``heap_probe.py``): the growth per file, line or traceback divided
by the difference in agents.

```sh
.venv/bin/python tests/bench/heap_diff.py small.tracemalloc 200 large.tracemalloc 600 --by lineno
```
"""

from __future__ import annotations

import argparse
import tracemalloc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("small")
    parser.add_argument("small_agents", type=int)
    parser.add_argument("large")
    parser.add_argument("large_agents", type=int)
    parser.add_argument("--by", choices=("filename", "lineno", "traceback"), default="filename")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--frames", type=int, default=4, help="frames shown per traceback")
    args = parser.parse_args(argv)
    agents = args.large_agents - args.small_agents
    small = tracemalloc.Snapshot.load(args.small)
    large = tracemalloc.Snapshot.load(args.large)
    noise = tracemalloc.Filter(False, tracemalloc.__file__)
    small, large = small.filter_traces([noise]), large.filter_traces([noise])
    total_small = sum(stat.size for stat in small.statistics("filename"))
    total_large = sum(stat.size for stat in large.statistics("filename"))
    print(
        f"traced: {total_small / 2**20:.1f} MiB at {args.small_agents}, "
        f"{total_large / 2**20:.1f} MiB at {args.large_agents}: "
        f"{(total_large - total_small) / agents / 1024:.1f} KiB per agent"
    )
    for stat in large.compare_to(small, args.by)[: args.top]:
        per_agent = stat.size_diff / agents
        count = stat.count_diff / agents
        where = stat.traceback.format(limit=args.frames, most_recent_first=True)
        print(f"{per_agent / 1024:8.2f} KiB {count:7.1f} blocks/agent  " + where[0].strip())
        for line in where[1:]:
            if not line.startswith("    "):
                print(" " * 38 + line.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
