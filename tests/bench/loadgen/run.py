"""One load run at one agent count: server, registration, floor, storm, steady state, burst.

:func:`run_load` starts a fresh server, registers every agent's join token and entries, measures
the floor (one extra agent alone), then starts the worker processes and the churn process and
drives the phases through :mod:`loadgen.pipe`, sampling the server's and the generator's CPU
and memory (:mod:`loadgen.procstat`) at each phase boundary. It returns a :class:`LoadResult`;
:mod:`loadgen.report` prints it. A worker that fails or hangs fails the run with its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import LoadOptions
from .pipe import WorkerError, WorkerPipe
from .procstat import Sample, raise_fd_limit, sample
from .registration import register
from .server import ProbedServer, datastore_table, load_servers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))
from processes import ProcessError, ServerProcess, short_temp_dir, wait_for

START_TIMEOUT = 120.0
"""Seconds a worker may take to import and build its agents."""
COMMAND_TIMEOUT = 60.0
FLOOR_SYNCS = 20
FDS_PER_AGENT = 2
"""Connections an agent holds at once (one without a client certificate, kept from its
attestation until the server closes it idle, and one with its SVID): the descriptors it costs
the server and its worker process."""
FD_HEADROOM = 2048
BUNDLE_SHARED_TIMEOUT = 90.0
"""Seconds the shared bundle may take to hold every server's CA (each adds its own as it
starts)."""
TRUST_DOMAIN = "example.org"


@dataclass
class LoadResult:
    """Every figure of one run; see CONTRIBUTING.md ("Load") for what each means."""

    options: dict[str, Any]
    load_average: float = 0.0
    """The machine's one-minute load average when the run began (other work shares the
    cores)."""
    fd_limit: int = 0
    registration_seconds: float = 0.0
    floor: dict[str, float] = field(default_factory=dict)
    storm: dict[str, Any] = field(default_factory=dict)
    steady: dict[str, Any] = field(default_factory=dict)
    burst: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (NaN for none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def cpu_percent(before: Sample, after: Sample) -> float:
    """CPU used between two samples, in percent of one core."""
    elapsed = after.at - before.at
    return 100.0 * (after.cpu - before.cpu) / elapsed if elapsed > 0 else float("nan")


class Fleet:
    """The worker processes and the churn process of a run."""

    def __init__(self, workers: list[WorkerPipe], churn: WorkerPipe) -> None:
        self.workers = workers
        self.churn = churn

    def all(self) -> list[WorkerPipe]:
        return [*self.workers, self.churn]

    def samples(self) -> list[Sample]:
        for process in self.all():
            process.check_alive()
        now = time.monotonic()
        return [sample(worker.pid, now) for worker in self.all()]

    def ask_workers(self, command: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        for worker in self.workers:
            worker.tell(command)
        return [worker.wait(timeout) for worker in self.workers]

    def enter(self, phase: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every process records into ``phase`` from now; what each recorded before."""
        for process in self.all():
            process.tell({"do": "enter", "phase": phase})
        answers = [process.wait(COMMAND_TIMEOUT) for process in self.all()]
        return answers[:-1], answers[-1]

    def close(self) -> None:
        """Stop every process (all told first, then each awaited)."""
        for process in self.all():
            with contextlib.suppress(WorkerError):  # gone already: close() collects it
                process.tell({"do": "stop"})
        for process in self.all():
            with contextlib.suppress(WorkerError):
                process.wait(COMMAND_TIMEOUT)
            process.close()


def _write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(json.dumps(spec))
    return path


def _worker_spec(
    server: ServerProcess,
    bundle_pem: str,
    options: LoadOptions,
    agents: Sequence[tuple[int, str]],
    data_dir: Path,
) -> dict[str, Any]:
    return {
        "port": server.settings.port,
        "bundle_pem": bundle_pem,
        "trust_domain": TRUST_DOMAIN,
        "sync_interval": options.sync_interval,
        "entries": options.entries_per_agent,
        "data_dir": str(data_dir),
        "agents": list(agents),
        "collector": options.generator_collector,
    }


def _failures(errors: Counter[str], phase: str, tallies: Sequence[dict[str, Any]]) -> None:
    for tally in tallies:
        for kind, count in tally["failures"].items():
            errors[f"{phase}: {kind}"] += count


class LoadRun:
    """The state of one run while its phases go by."""

    def __init__(
        self,
        options: LoadOptions,
        root: Path,
        servers: list[ProbedServer],
        say: Callable[[str], None],
    ) -> None:
        self.options = options
        self.root = root
        self.servers = servers
        self.server = servers[0]
        """The server whose admin socket registers and churn go through, and whose collections
        and loop lag the stall rows show."""
        self.say = say
        self.result = LoadResult(options=vars(options).copy(), load_average=os.getloadavg()[0])
        self.errors: Counter[str] = Counter()
        prefix = secrets.token_hex(4)
        self.agents = [(index, f"load-{prefix}-{index}") for index in range(options.agents + 1)]
        self.floor_agent = self.agents.pop()
        self.bundle_pem = ""

    def server_sample(self) -> Sample:
        """Every server process's CPU, memory and descriptors, summed."""
        now = time.monotonic()
        samples = [sample(server.pid, now) for server in self.servers]
        return Sample(
            at=now,
            cpu=sum(item.cpu for item in samples),
            rss=sum(item.rss for item in samples),
            fds=sum(item.fds for item in samples),
        )

    def start(self) -> Sample:
        """Start the servers and register every agent; the servers' sample with none
        connected."""
        for server in self.servers:
            server.start()
        self.bundle_pem = self._shared_bundle()
        self.result.memory["server_rss_empty_mb"] = self.server_sample().rss / 2**20
        began = time.monotonic()
        asyncio.run(
            register(
                self.server.socket_path,
                TRUST_DOMAIN,
                [*self.agents, self.floor_agent],
                self.options.entries_per_agent,
            )
        )
        self.result.registration_seconds = time.monotonic() - began
        self.say(
            f"  registered {len(self.agents)} agents in {self.result.registration_seconds:.1f}s"
        )
        return self.server_sample()

    def _shared_bundle(self) -> str:
        """The bundle once it holds every server's CA (agents meet any server, so their
        bootstrap bundle must verify each). GetBundle reads the datastore: this says nothing
        of what a server's TLS trusts yet; a server that has not read another's CA since that
        one started reads the bundle again when an agent SVID it cannot verify arrives
        (``BundleFeed.unverified_peer``)."""
        path = self.root / "bundle.pem"
        count = len(self.servers)

        def shared() -> str | None:
            bundles = [server.write_bundle(path).read_text() for server in self.servers]
            if all(bundle.count("BEGIN CERTIFICATE") >= count for bundle in bundles):
                return bundles[0]
            return None

        return wait_for("the bundle to hold every server's CA", shared, BUNDLE_SHARED_TIMEOUT)

    def spawn(self, name: str, module: str, spec: dict[str, Any]) -> WorkerPipe:
        path = _write_spec(self.root / f"{name}.json", spec)
        return WorkerPipe(name, module, [str(path)], self.root / f"{name}.log")

    def measure_floor(self, fleet: Fleet) -> None:
        """One extra agent, alone (in the first worker, before the others start): its start,
        then back-to-back syncs."""
        before = self.server_sample()
        answer = fleet.workers[0].ask({"do": "floor", "syncs": FLOOR_SYNCS}, COMMAND_TIMEOUT)
        after = self.server_sample()
        if "error" in answer:
            raise WorkerError(answer["error"])
        latencies = answer["latencies"]
        _failures(self.errors, "floor", [answer])
        self.result.floor = {
            "start_seconds": answer["start_seconds"],
            "sync_p50_ms": 1000 * percentile(latencies, 0.5),
            "sync_max_ms": 1000 * max(latencies, default=float("nan")),
            "server_ms_per_sync": 1000 * (after.cpu - before.cpu) / max(1, len(latencies)),
        }

    def spawn_fleet(self) -> Fleet:
        count = min(self.options.workers, self.options.agents)
        workers = [
            self.spawn(
                f"worker-{number}",
                "loadgen.worker",
                _worker_spec(
                    self.server,
                    self.bundle_pem,
                    self.options,
                    self.agents[number::count],
                    self.root / f"worker-{number}",
                )
                | ({"floor_agent": self.floor_agent} if number == 0 else {}),
            )
            for number in range(count)
        ]
        churn = self.spawn(
            "churn",
            "loadgen.churn",
            {
                "socket_path": str(self.server.socket_path),
                "trust_domain": TRUST_DOMAIN,
                "churn_per_second": self.options.churn_per_second,
                "sync_interval": self.options.sync_interval,
                "agents": self.agents,
            },
        )
        fleet = Fleet(workers, churn)
        for process in fleet.all():
            process.wait(START_TIMEOUT)
        return fleet

    def storm(self, fleet: Fleet) -> None:
        """Every agent starts at once; until each holds all its SVIDs."""
        calls_before = self.calls()
        server_before, fleet_before = self.server_sample(), fleet.samples()
        began = time.time()
        command = {"do": "storm", "start_per_second": self.options.start_per_second}
        answers = fleet.ask_workers(command, self.options.storm_timeout)
        server_after, fleet_after = self.server_sample(), fleet.samples()
        calls = self.calls() - calls_before
        agents = [agent for answer in answers for agent in answer["agents"]]
        ready = [agent[2] - began for agent in agents if not agent[3]]
        attested = [agent[1] - began for agent in agents if not agent[3]]
        tallies = [answer["tally"] for answer in answers]
        _failures(self.errors, "storm", tallies)
        issued = sum(tally["svids_issued"] for tally in tallies)
        self.result.storm = {
            "agents_ready": len(ready),
            "all_ready_seconds": max(ready, default=float("nan")),
            "ready_p50_seconds": percentile(ready, 0.5),
            "all_attested_seconds": max(attested, default=float("nan")),
            "svids_issued": issued,
            "server_cpu_percent": cpu_percent(server_before, server_after),
            "server_ms_per_svid": 1000 * (server_after.cpu - server_before.cpu) / max(1, issued),
            "server_ms_per_agent": 1000
            * (server_after.cpu - server_before.cpu)
            / max(1, len(ready)),
            "generator_cpu_percent": [
                cpu_percent(before, after)
                for before, after in zip(fleet_before[:-1], fleet_after[:-1], strict=True)
            ],
            "calls_per_agent": {
                method: count / max(1, len(ready)) for method, count in sorted(calls.items())
            },
        }

    def calls(self) -> Counter[str]:
        """Calls every server answered so far, by method and status."""
        total: Counter[str] = Counter()
        for server in self.servers:
            total += server.calls()
        return total

    def steady(self, fleet: Fleet, registered: Sample) -> None:
        """One interval to settle, then ``duration`` seconds measured."""
        settle, churn_settle = fleet.enter("settle")
        _failures(self.errors, "storm (after ready)", [answer["tally"] for answer in settle])
        _failures(self.errors, "churn", [churn_settle["tally"]])
        time.sleep(self.options.sync_interval)
        settled, _ = fleet.enter("steady")
        _failures(self.errors, "settle", [answer["tally"] for answer in settled])
        # The storm's and the settling interval's collections, apart from the window's.
        storm_stalls = self.server.stalls()
        server_before, fleet_before = self.server_sample(), fleet.samples()
        time.sleep(self.options.duration)
        answers, churn = fleet.enter("after")
        server_after, fleet_after = self.server_sample(), fleet.samples()
        server_stalls = self.server.stalls()
        tallies = [answer["tally"] for answer in answers]
        _failures(self.errors, "steady", tallies)
        _failures(self.errors, "churn", [churn["tally"]])
        self.result.steady = _steady_figures(
            self.options,
            tallies,
            churn["tally"],
            (server_before, server_after),
            (fleet_before, fleet_after),
        )
        self.result.steady["server_stalls"] = server_stalls
        self.result.steady["server_stalls_until_window"] = storm_stalls
        # After the window: a middle and a full collection, timed, change none of its figures.
        self.result.steady["server_walks"] = self.server.walks()
        self.result.steady["generator_stalls"] = [answer["stalls"] for answer in answers]
        connected = max(1, self.result.storm["agents_ready"])
        self.result.memory.update(
            {
                "server_rss_registered_mb": registered.rss / 2**20,
                "server_rss_steady_mb": server_after.rss / 2**20,
                "server_rss_per_agent_mb": (server_after.rss - registered.rss) / 2**20 / connected,
                "server_fds_registered": registered.fds,
                "server_fds_steady": server_after.fds,
                "generator_rss_mb": sum(item.rss for item in fleet_after[:-1]) / 2**20,
            }
        )

    def burst(self, fleet: Fleet) -> None:
        """Every agent mints all its SVIDs again at once."""
        server_before, fleet_before = self.server_sample(), fleet.samples()
        answers = fleet.ask_workers({"do": "burst"}, self.options.storm_timeout)
        server_after, fleet_after = self.server_sample(), fleet.samples()
        tallies = [answer["tally"] for answer in answers]
        _failures(self.errors, "burst", tallies)
        issued = sum(tally["svids_issued"] for tally in tallies)
        seconds = [value for answer in answers for value in answer["seconds"]]
        elapsed = server_after.at - server_before.at
        self.result.burst = {
            "seconds": elapsed,
            "agent_p50_seconds": percentile(seconds, 0.5),
            "svids_issued": issued,
            "svids_per_second": issued / elapsed if elapsed > 0 else float("nan"),
            "server_cpu_percent": cpu_percent(server_before, server_after),
            "server_ms_per_svid": 1000 * (server_after.cpu - server_before.cpu) / max(1, issued),
            "generator_cpu_percent": [
                cpu_percent(before, after)
                for before, after in zip(fleet_before[:-1], fleet_after[:-1], strict=True)
            ],
        }


def _steady_figures(
    options: LoadOptions,
    tallies: Sequence[dict[str, Any]],
    churn: dict[str, Any],
    server: tuple[Sample, Sample],
    fleet: tuple[list[Sample], list[Sample]],
) -> dict[str, Any]:
    latencies = [value for tally in tallies for value in tally["latencies"]]
    elapsed = server[1].at - server[0].at
    synced = {agent for tally in tallies for agent in tally["agents_synced"]}
    generator = [
        cpu_percent(before, after)
        for before, after in zip(fleet[0][:-1], fleet[1][:-1], strict=True)
    ]
    slow = sorted(start for tally in tallies for start, _ in tally["slow"])
    by_second = Counter(int(start) for start in slow)
    return {
        "slow_syncs": len(slow),
        "slow_busiest_second": max(by_second.values(), default=0),
        "slow_seconds": len(by_second),
        "seconds": elapsed,
        "syncs": len(latencies),
        "syncs_per_second": len(latencies) / elapsed,
        "expected_syncs_per_second": options.expected_syncs_per_second,
        "agents_synced": len(synced),
        "sync_p50_ms": 1000 * percentile(latencies, 0.5),
        "sync_p99_ms": 1000 * percentile(latencies, 0.99),
        "sync_max_ms": 1000 * max(latencies, default=float("nan")),
        "svids_issued": sum(tally["svids_issued"] for tally in tallies),
        "agent_renewals": sum(tally["agent_renewals"] for tally in tallies),
        "server_cpu_percent": cpu_percent(*server),
        "server_ms_per_sync": 1000 * (server[1].cpu - server[0].cpu) / max(1, len(latencies)),
        "generator_cpu_percent": generator,
        "generator_cpu_percent_total": sum(generator),
        "churn_changes": sum(churn["made"].values()),
        "churn_per_second": sum(churn["made"].values()) / elapsed,
        "churn_p99_ms": 1000 * percentile(churn["latencies"], 0.99),
        "churn_cpu_percent": cpu_percent(fleet[0][-1], fleet[1][-1]),
    }


def run_load(options: LoadOptions, say: Callable[[str], None] = print) -> LoadResult:
    """One run at ``options.agents`` agents; every process it started is gone on return. When
    the run fails or ``options.keep_run_dir`` is set, its directory (server and worker logs) is
    kept and named."""
    fd_limit = raise_fd_limit(options.agents * FDS_PER_AGENT + FD_HEADROOM)
    root = short_temp_dir()
    try:
        result = _run_in(root, options, say)
    except BaseException:
        say(f"  logs of the failed run kept in {root}")
        raise
    if options.keep_run_dir:
        say(f"  logs of the run kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    result.fd_limit = fd_limit
    return result


def _run_in(root: Path, options: LoadOptions, say: Callable[[str], None]) -> LoadResult:
    with datastore_table(options) as datastore:
        servers = load_servers(root, options, datastore)
        run = LoadRun(options, root, servers, say)
        try:
            registered = run.start()
            fleet = run.spawn_fleet()
            try:
                run.measure_floor(fleet)
                floor = run.result.floor["sync_p50_ms"]
                say(f"  floor: one agent alone, sync p50 {floor:.1f} ms")
                run.storm(fleet)
                ready = run.result.storm["all_ready_seconds"]
                say(f"  storm: every agent has its SVIDs after {ready:.1f}s")
                for method, count in run.result.storm["calls_per_agent"].items():
                    say(f"    server calls per agent: {method} {count:.2f}")
                run.steady(fleet, registered)
                say(f"  steady: {run.result.steady['syncs_per_second']:.1f} syncs/s")
                if options.burst:
                    run.burst(fleet)
            finally:
                fleet.close()
            for server in servers:
                try:
                    server.terminate()
                except ProcessError:  # after the figures: a slow stop is reported, not fatal
                    run.errors["server: did not stop within 15 s of SIGTERM (killed)"] += 1
        finally:
            for server in servers:
                server.kill()
    run.result.errors = dict(run.errors)
    return run.result
