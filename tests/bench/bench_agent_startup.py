"""Benchmark of agent start-up: from starting ``pyspire-agent run`` to serving 1,000 SVIDs.

Run from the repository root: ``.venv/bin/python tests/bench/bench_agent_startup.py``.

A real ``pyspire-server`` process holds 1,000 registration entries for one agent (created in
one ``entry create -data`` call through the admin socket), all with the selector
``unix:uid:<this uid>`` so that one FetchX509SVID from this process returns every one of them.
The agent is started with a join token, and the clock runs until a FetchX509SVID answer
carries all 1,000 SVIDs: the agent has started, attested, synced the entries, had 1,000
workload keys generated and CSRs signed by the server, and opened the Workload API. The goal
is under 10 seconds.

For scale, the floor is the time to start a Python process that imports ``pyspire`` (and,
for reference, one that imports the agent's runtime and every module it loads before its
first log line). Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError

from pyspire.agent.workload import SECURITY_HEADER
from pyspire.proto.gen import workload as pb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from processes import (
    TRUST_DOMAIN,
    AgentProcess,
    AgentSettings,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    join_token_agent_id,
    short_temp_dir,
)

SERVE_TIMEOUT = 90.0


def entries_document(count: int, agent_id: str) -> dict[str, object]:
    selector = f"unix:uid:{os.getuid()}"
    return {
        "entries": [
            {
                "spiffe_id": f"spiffe://{TRUST_DOMAIN}/bench/workload-{number:04d}",
                "parent_id": agent_id,
                "selectors": [selector],
            }
            for number in range(count)
        ]
    }


async def served_svids(socket_path: Path) -> int:
    """How many X509-SVIDs one FetchX509SVID answer carries now (0 when the agent does not
    answer yet)."""
    channel = Channel(path=str(socket_path))
    try:
        async with channel.request(
            "/SpiffeWorkloadAPI/FetchX509SVID",
            Cardinality.UNARY_STREAM,
            pb.X509SvidRequest,
            pb.X509SvidResponse,
            metadata={SECURITY_HEADER: "true"},
            timeout=10,
        ) as stream:
            await stream.send_message(pb.X509SvidRequest(), end=True)
            response = await stream.recv_message()
            await stream.cancel()
    except (OSError, TimeoutError, GRPCError):  # not listening yet, or the cache is filling
        return 0
    finally:
        channel.close()
    return 0 if response is None else len(response.svids)


async def time_until_served(agent: AgentProcess, count: int, started: float) -> float:
    """Seconds from ``started`` until the agent serves ``count`` SVIDs to this process."""
    deadline = started + SERVE_TIMEOUT
    seen = 0
    while time.perf_counter() < deadline:
        code = agent.exited()
        if code is not None:
            raise ProcessError(f"the agent exited with {code}\n{agent.log()}")
        if agent.socket_path.exists():
            seen = await served_svids(agent.socket_path)
            if seen >= count:
                return time.perf_counter() - started
        await asyncio.sleep(0.02)
    raise ProcessError(
        f"the agent served {seen} of {count} SVIDs after {SERVE_TIMEOUT:g}s\n{agent.log()}"
    )


def python_start(code: str, runs: int) -> float:
    """The fastest of ``runs`` starts of ``python -c code`` (seconds)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=1000, help="entries for the agent")
    parser.add_argument("--floor-runs", type=int, default=5, help="python starts (best kept)")
    args = parser.parse_args(argv)

    root = short_temp_dir()
    server = ServerProcess(ServerSettings(root=root, port=free_port(), log_level="WARN"))
    agent = AgentProcess(
        AgentSettings(
            root=root,
            server_port=server.settings.port,
            bootstrap_bundle=root / "bootstrap.pem",
            sync_interval="5s",
            log_level="WARN",
        )
    )
    try:
        server.start()
        server.write_bundle(root / "bootstrap.pem")
        token = server.generate_token()
        data = root / "entries.json"
        data.write_text(json.dumps(entries_document(args.entries, join_token_agent_id(token))))
        created_at = time.perf_counter()
        server.cli("entry", "create", "-data", str(data))
        create_seconds = time.perf_counter() - created_at

        started = time.perf_counter()
        agent.launch(token)
        serve_seconds = asyncio.run(time_until_served(agent, args.entries, started))
        agent_code = agent.terminate()
        server_code = server.terminate()
    except ProcessError as error:
        print(f"benchmark failed: {error}\nserver log:\n{server.log()}", file=sys.stderr)
        return 1
    finally:
        agent.kill()
        server.kill()
        shutil.rmtree(root, ignore_errors=True)

    import_floor = python_start("import pyspire", args.floor_runs)
    runtime_floor = python_start(
        "import pyspire.agent.runtime, pyspire.cli.agent, pyspire.cli.commands.run",
        args.floor_runs,
    )
    rows = [
        ("entries created through the admin API (one -data call)", create_seconds, ""),
        (
            f"agent start to {args.entries} SVIDs served over the Workload API",
            serve_seconds,
            "  (goal: under 10s)",
        ),
        (f"floor: python -c 'import pyspire' (best of {args.floor_runs})", import_floor, ""),
        ("reference: python importing the agent runtime and CLI", runtime_floor, ""),
    ]
    for label, seconds, note in rows:
        print(f"{label:66} {seconds:6.2f}s{note}")
    print(f"exit codes on SIGTERM: agent {agent_code}, server {server_code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
