"""Benchmark of many agents started at once against one server and its attestation rate limit.

Run from the repository root: ``.venv/bin/python tests/bench/bench_agent_fleet_start.py``
(20 agents by default; ``--agents`` to change it). This is the full form of the end-to-end test
``tests/e2e/test_agent_start.py``, which starts three.

A real ``pyspire-server`` admits one attestation per second per client address (SPIRE's
limit), and every agent here connects from 127.0.0.1, so agents started together are refused
and must retry with backoff and jitter until each is admitted. The clock runs from starting all
agents until every one serves its Workload API; an agent that gives up and exits fails the run.

Two floors are measured in the same run: one agent started alone (no contention), and the
least time the rate limit allows, ``(agents - 1)`` seconds after the first admission. The ratio
shows what the backoff costs beyond both. Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from processes import (
    AgentProcess,
    AgentSettings,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    short_temp_dir,
)

RETRY_EVENT = "agent attestation did not go through; retrying"
FLEET_TIMEOUT = 300.0


def serving_after(agents: list[AgentProcess], started: float) -> float:
    """Seconds from ``started`` until every agent serves; raises when one exits."""
    deadline = started + FLEET_TIMEOUT
    while time.perf_counter() < deadline:
        for agent in agents:
            code = agent.exited()
            if code is not None:
                raise ProcessError(f"{agent.name} exited with {code}\n{agent.log()[-2000:]}")
        if all(agent.socket_path.exists() for agent in agents):
            return time.perf_counter() - started
        time.sleep(0.05)
    waiting = [agent.name for agent in agents if not agent.socket_path.exists()]
    raise ProcessError(f"not serving after {FLEET_TIMEOUT:g}s: {', '.join(waiting)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=20, help="agents started at once")
    args = parser.parse_args(argv)

    root = short_temp_dir()
    server = ServerProcess(ServerSettings(root=root, port=free_port(), log_level="WARN"))

    def agent(name: str) -> AgentProcess:
        return AgentProcess(
            AgentSettings(
                root=root,
                server_port=server.settings.port,
                bootstrap_bundle=root / "bootstrap.pem",
                name=name,
                log_level="INFO",
            )
        )

    alone = agent("alone")
    fleet = [agent(f"fleet-{number:02d}") for number in range(args.agents)]
    try:
        server.start()
        server.write_bundle(root / "bootstrap.pem")
        for process in [alone, *fleet]:
            server.write_token(root / f"{process.name}.token")
        started = time.perf_counter()
        alone.launch(join_token_file=root / "alone.token")
        alone_seconds = serving_after([alone], started)
        alone.terminate()
        time.sleep(1.5)  # the limit's allowance is back before the fleet starts

        started = time.perf_counter()
        for process in fleet:
            process.launch(join_token_file=root / f"{process.name}.token")
        fleet_seconds = serving_after(fleet, started)
        retries = sum(process.log().count(RETRY_EVENT) for process in fleet)
        refused = sum(1 for process in fleet if RETRY_EVENT in process.log())
        for process in fleet:
            process.terminate()
        server.terminate()
    except ProcessError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        for process in [alone, *fleet, server]:
            process.kill()
        shutil.rmtree(root, ignore_errors=True)

    limit_floor = alone_seconds + (args.agents - 1)
    print(f"{args.agents} agents started at once, one attestation per second admitted")
    print(f"{'every agent serving':52} {fleet_seconds:7.1f}s")
    print(f"{'agents refused at least once by the rate limit':52} {refused:7d}")
    print(f"{'retries in all':52} {retries:7d}")
    print(f"{'floor: one agent alone':52} {alone_seconds:7.1f}s")
    print(f"{'floor: one agent alone + (agents - 1) s of rate limit':52} {limit_floor:7.1f}s")
    print(f"ratio fleet / rate-limit floor: {fleet_seconds / limit_floor:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
