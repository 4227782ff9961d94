"""The admin process that changes entries while agents sync:
``python -m loadgen.churn <spec.json>``.

The spec names the server's admin socket, the trust domain, the rate (changes per second) and
the agents (index and join token). Between ``enter steady`` and the next ``enter`` command
(see :mod:`loadgen.pipe`) it makes changes at that rate, in turn: create an entry for an agent
(it mints an SVID for it at its next sync), update one of those it created (a new revision: the
agent mints again), delete the oldest one it created. Deletes wait until it holds
``rate x sync interval`` entries (a create takes their turn until then), so that an entry lives
about three sync intervals and its agent sees it. Each change is one admin call, as an
operator's or a controller's would be; the answer says how many of each were made, how long
they took and what failed.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import anyio

from pyspire.cli.admin_client import AdminClient, connect
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb

from .pipe import answer
from .registration import CALL_TIMEOUT, create_entries, workload_entry
from .tally import failure_kind

KINDS = ("create", "update", "delete")


class Churn:
    """Entry changes at a fixed rate, round the agents in turn."""

    def __init__(self, client: AdminClient, spec: dict[str, Any]) -> None:
        self._client = client
        self._trust_domain: str = spec["trust_domain"]
        self._rate: float = spec["churn_per_second"]
        self._pool = max(1, math.ceil(self._rate * spec["sync_interval"]))
        self._agents: list[tuple[int, str]] = [tuple(pair) for pair in spec["agents"]]
        self._created: deque[pb.Entry] = deque()
        self._serial = 0
        self.made: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.latencies: list[float] = []

    async def _create(self) -> None:
        index, token = self._agents[self._serial % len(self._agents)]
        entry = workload_entry(self._trust_domain, index, token, 0, salt=f"-churn-{self._serial}")
        [entry.id] = await create_entries(self._client, [entry])
        self._created.append(entry)

    async def _update(self) -> None:
        entry = self._created[len(self._created) // 2]
        value = f"uid:{2000 + self._serial}"
        entry.selectors = [pb.Selector(type="unix", value=value)]
        answer = await self._client.entry.batch_update_entry(
            entry_pb.BatchUpdateEntryRequest(entries=[entry])
        )
        [result] = answer.results
        if result.status.code != 0:
            raise RuntimeError(f"update refused: {result.status.message}")

    async def _delete(self) -> None:
        entry = self._created.popleft()
        answer = await self._client.entry.batch_delete_entry(
            entry_pb.BatchDeleteEntryRequest(ids=[entry.id])
        )
        [result] = answer.results
        if result.status.code != 0:
            raise RuntimeError(f"delete refused: {result.status.message}")

    async def _change(self, kind: str) -> None:
        started = time.perf_counter()
        try:
            if kind == "create" or len(self._created) < (self._pool if kind == "delete" else 1):
                kind = "create"
                await self._create()
            elif kind == "update":
                await self._update()
            else:
                await self._delete()
        except Exception as error:
            self.failures[failure_kind(error)] += 1
            return
        self.latencies.append(time.perf_counter() - started)
        self.made[kind] += 1

    async def run(self) -> None:
        """Change entries at the rate until cancelled; a late change does not make the next
        ones hurry (the schedule restarts from now)."""
        period = 1.0 / self._rate
        due = time.monotonic()
        while True:
            await self._change(KINDS[self._serial % len(KINDS)])
            self._serial += 1
            due = max(due + period, time.monotonic())
            await anyio.sleep(max(0.0, due - time.monotonic()))

    async def run_within(self, scope: anyio.CancelScope) -> None:
        with scope:
            await self.run()

    def figures(self) -> dict[str, Any]:
        """What was made since the last call, and start counting anew."""
        figures = {
            "made": dict(self.made),
            "failures": dict(self.failures),
            "latencies": self.latencies,
        }
        self.made, self.failures, self.latencies = Counter(), Counter(), []
        return figures


async def serve(spec: dict[str, Any]) -> None:
    async with connect(Path(spec["socket_path"]), call_timeout=CALL_TIMEOUT) as client:
        churn = Churn(client, spec)
        answer({"ready": True})
        async with anyio.create_task_group() as group:
            running: anyio.CancelScope | None = None
            while True:
                line = await anyio.to_thread.run_sync(sys.stdin.readline)
                command: dict[str, Any] = json.loads(line) if line else {"do": "stop"}
                if command["do"] == "stop":
                    break
                if running is not None:
                    running.cancel()
                    running = None
                figures = churn.figures()
                if command.get("phase") == "steady" and spec["churn_per_second"] > 0:
                    running = anyio.CancelScope()
                    group.start_soon(churn.run_within, running)
                answer({"phase": "", "tally": figures, "at": time.time()})
            group.cancel_scope.cancel()
    answer({"stopped": True})


if __name__ == "__main__":
    anyio.run(serve, json.loads(Path(sys.argv[1]).read_text()))
