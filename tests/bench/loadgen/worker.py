"""A worker process of simulated agents: ``python -m loadgen.worker <spec.json>``.

The spec names the server's port, its bundle (PEM), the sync interval, how many entries each
agent has, a data directory, and this worker's agents (index and join token). The worker then
answers the run's commands on stdin (see :mod:`loadgen.pipe`):

- ``storm``: start every agent at once (or ``start_per_second`` of them a second, in
  index order, counted from the storm's start); answer when each holds all its SVIDs (or was
  refused), with each agent's times; the agents then go on syncing;
- ``enter`` (``phase``): record into a new phase from now on; answer with the figures of the
  phase that ended, with the worker's collections and event-loop lag (:mod:`stall_probe`);
  entering ``settle`` (the storm is over) freezes the heap when the spec's ``collector`` is
  ``tuned`` (the default, which also sweeps the young generation every second as the agent's
  run command does; ``unswept`` freezes without sweeping; ``cpython`` keeps CPython's
  thresholds);
- ``floor`` (``syncs``): the spec's extra ``floor_agent`` starts alone, syncs that many times
  back to back and stops (before the others start: the unloaded floor); answer with its start
  time and its syncs;
- ``burst``: every agent forgets its workload SVIDs and syncs at once; answer when all hold
  them again;
- ``stop``: cancel and close every agent, answer, exit.

The event loop is :class:`~loadgen.source.SourceBoundLoop`, so each agent's connections leave
from its own loopback address.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from pyspire.collector import YoungSweep, freeze_startup_heap, tune_collector
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.spiffeid import TrustDomain

from .agent import AgentSettings, SimulatedAgent
from .pipe import answer
from .source import SourceBoundLoop
from .tally import Tally, count_log_events

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stall_probe import StallProbe


def load_spec(path: Path, tally: Tally) -> tuple[list[SimulatedAgent], SimulatedAgent | None]:
    """The agents ``path`` describes and its floor agent, if any, not started."""
    spec = json.loads(path.read_text())
    bundle = Bundle.from_pem(TrustDomain(spec["trust_domain"]), spec["bundle_pem"].encode())
    settings = AgentSettings(
        port=spec["port"],
        bundle=bundle,
        sync_interval=spec["sync_interval"],
        entries=spec["entries"],
        data_dir=Path(spec["data_dir"]),
    )
    metrics = PrometheusMetrics("pyspire_agent")
    agents = [
        SimulatedAgent(index, token, settings, tally, metrics) for index, token in spec["agents"]
    ]
    floor = spec.get("floor_agent")
    return agents, None if floor is None else SimulatedAgent(
        floor[0], floor[1], settings, tally, metrics
    )


class Worker:
    """The agents of this process and the commands that drive them."""

    def __init__(
        self,
        agents: list[SimulatedAgent],
        floor_agent: SimulatedAgent | None,
        tally: Tally,
        *,
        collector: str = "tuned",
    ) -> None:
        self.agents = agents
        self.floor_agent = floor_agent
        self.tally = tally
        self.collector = collector
        self.probe = StallProbe()
        self._started = 0
        self._all_started = anyio.Event()

    async def _live(self, agent: SimulatedAgent, delay: float) -> None:
        await anyio.sleep(delay)
        started = await agent.start()
        self._started += 1
        if self._started == len(self.agents):
            self._all_started.set()
        if started:
            await agent.run()

    async def storm(self, group: TaskGroup, start_per_second: float) -> dict[str, Any]:
        began = time.time()
        self.tally.enter("storm")
        for agent in self.agents:
            delay = agent.index / start_per_second if start_per_second > 0 else 0.0
            group.start_soon(self._live, agent, delay)
        await self._all_started.wait()
        result = {
            "began": began,
            "agents": [
                [agent.index, agent.attested_at, agent.ready_at, agent.start_error]
                for agent in self.agents
            ],
            "tally": self.tally.current.as_json(),
        }
        self.tally.enter("after storm")
        return result

    def enter(self, phase: str) -> dict[str, Any]:
        ended, figures = self.tally.phase, self.tally.current.as_json()
        if phase == "settle" and self.collector != "cpython":
            freeze_startup_heap()  # the storm is over: what the agents hold stays
        stalls = self.probe.take()
        self.tally.enter(phase)
        return {"phase": ended, "tally": figures, "at": time.time(), "stalls": stalls}

    async def floor(self, syncs: int) -> dict[str, Any]:
        agent = self.floor_agent
        if agent is None:
            return {"error": "floor: this worker has no floor agent"}
        self.tally.enter("floor start")
        began = time.perf_counter()
        started = await agent.start()
        start_seconds = time.perf_counter() - began
        phase = self.tally.enter("floor")
        if started:
            for _ in range(syncs):
                await agent.sync_once()
        await agent.close()
        failures = self.tally.phases["floor start"].failures + phase.failures
        self.tally.enter("start")
        return {
            "start_seconds": start_seconds,
            "latencies": phase.latencies,
            "failures": dict(failures),
        }

    async def burst(self) -> dict[str, Any]:
        self.tally.enter("burst")
        began = time.time()
        seconds: list[float] = []

        async def one(agent: SimulatedAgent) -> None:
            took = await agent.burst()
            if took is not None:
                seconds.append(took)

        async with anyio.create_task_group() as group:
            for agent in self.agents:
                if not agent.start_error:
                    group.start_soon(one, agent)
        result = {"began": began, "seconds": seconds, "tally": self.tally.current.as_json()}
        self.tally.enter("after")
        return result

    async def _answer(self, work: Awaitable[dict[str, Any]]) -> None:
        answer(await work)

    async def serve(self) -> None:
        """Answer commands until ``stop`` (or the end of stdin). A storm or a burst runs while
        commands are still read, so ``stop`` ends the worker in the middle of one."""
        self.probe.install()
        self.probe.watch(asyncio.get_running_loop())
        answer({"ready": len(self.agents)})
        async with anyio.create_task_group() as group:
            if self.collector == "tuned":
                group.start_soon(YoungSweep(SystemClock()).run)  # as the agent's run command
            while True:
                line = await anyio.to_thread.run_sync(sys.stdin.readline)
                command: dict[str, Any] = json.loads(line) if line else {"do": "stop"}
                kind = command["do"]
                if kind == "storm":
                    rate = command.get("start_per_second", 0.0)
                    group.start_soon(self._answer, self.storm(group, rate))
                elif kind == "enter":
                    answer(self.enter(command["phase"]))
                elif kind == "floor":
                    group.start_soon(self._answer, self.floor(command["syncs"]))
                elif kind == "burst":
                    group.start_soon(self._answer, self.burst())
                elif kind == "stop":
                    break
                else:
                    answer({"error": f"do: unknown command {kind!r}"})
            group.cancel_scope.cancel()
        for agent in self.agents:
            await agent.close()
        answer({"stopped": True})


async def main(spec_path: Path, collector: str) -> None:
    tally = Tally()
    count_log_events(tally)
    agents, floor_agent = load_spec(spec_path, tally)
    await Worker(agents, floor_agent, tally, collector=collector).serve()


if __name__ == "__main__":
    spec = Path(sys.argv[1])
    chosen = json.loads(spec.read_text()).get("collector", "tuned")
    if chosen != "cpython":
        tune_collector()
    else:
        gc.set_threshold(700, 10, 10)
    with asyncio.Runner(loop_factory=SourceBoundLoop) as runner:
        runner.run(main(spec, chosen))
