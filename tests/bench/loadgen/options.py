"""What one load run varies, and its parsing from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

DATASTORES = ("sqlite", "postgres")
COLLECTORS = ("tuned", "unswept", "cpython")


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """The settings of a run at one agent count (``agents``)."""

    agents: int
    entries_per_agent: int = 20
    sync_interval: float = 5.0
    duration: float = 30.0
    """Seconds of steady state measured (after one sync interval to settle after the storm)."""
    workers: int = 1
    churn_per_second: float = 0.0
    """Admin changes to entries per second during the steady state (create, update, delete in
    turn); 0 for none."""
    datastore: str = "sqlite"
    svid_ttl: int = 3600
    """The server's ``default_x509_svid_ttl`` in seconds: workload SVIDs rotate at half of it."""
    agent_ttl: int = 3600
    """The server's ``agent_ttl`` in seconds: agent SVIDs renew at about half of it. The agent
    checks every 5 s whether to renew, so it must be well over 10 s (at least 30)."""
    burst: bool = True
    """Whether the burst phase runs (it re-mints ``agents x entries`` SVIDs)."""
    start_per_second: float = 0.0
    """Agents started a second in the storm, in index order; 0 starts them all at once. Real
    fleets come up over minutes; at counts where a storm of all at once overwhelms the server,
    a ramp still brings every agent to the steady state."""
    storm_timeout: float = 600.0
    """Seconds the attestation storm may take before the run fails."""
    server_collector: str = "tuned"
    """``tuned``: the server's own collector policy (:mod:`pyspire.collector`); ``unswept``:
    that policy without the young generation's timed collections (the policy before
    :class:`~pyspire.collector.YoungSweep`); ``cpython``: CPython's thresholds, no freeze and
    no sweep, to compare."""
    generator_collector: str = "tuned"
    """The same for the worker processes (``tuned``: thresholds from start, the young
    generation swept every second, frozen once the storm is over)."""
    servers: int = 1
    """Server processes sharing one port through ``reuse_port`` and one datastore (with SQLite,
    one file): the deployment CONTRIBUTING recommends on several cores."""
    server_log_level: str = "WARN"
    """The servers' ``log_level`` (their logs are in the run's directory, see ``keep_run_dir``)."""
    keep_run_dir: bool = False
    """Whether the run's directory (the servers' and workers' logs, the datastore) is kept and
    named after a run that succeeded too, to read what the servers logged."""

    def __post_init__(self) -> None:
        for name in ("server_collector", "generator_collector"):
            if getattr(self, name) not in COLLECTORS:
                expected = ", ".join(COLLECTORS)
                raise ValueError(f"{name}: unknown {getattr(self, name)!r}, expected {expected}")
        checks = {
            "agents": self.agents >= 1,
            "entries_per_agent": self.entries_per_agent >= 1,
            "sync_interval": self.sync_interval > 0,
            "duration": self.duration > 0,
            "workers": self.workers >= 1,
            "churn_per_second": self.churn_per_second >= 0,
            "svid_ttl": self.svid_ttl >= 2,
            "agent_ttl": self.agent_ttl >= 30,
            "start_per_second": self.start_per_second >= 0,
            "storm_timeout": self.storm_timeout > 0,
            "servers": self.servers >= 1,
        }
        for name, valid in checks.items():
            if not valid:
                raise ValueError(f"{name}: out of range: {getattr(self, name)!r}")
        if self.datastore not in DATASTORES:
            raise ValueError(
                f"datastore: unknown {self.datastore!r}, expected one of {', '.join(DATASTORES)}"
            )

    @property
    def expected_syncs_per_second(self) -> float:
        """What ``agents`` agents syncing every ``sync_interval`` seconds ask of the server."""
        return self.agents / self.sync_interval


def agent_counts(text: str) -> list[int]:
    """``"100,1000,5000"`` as ``[100, 1000, 5000]``; ValueError naming the bad item."""
    counts = []
    for item in text.split(","):
        try:
            count = int(item.strip().replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--agents: {item!r} is not a whole number") from None
        if count < 1:
            raise argparse.ArgumentTypeError(f"--agents: {count} is not a positive count")
        counts.append(count)
    return counts


def parser() -> argparse.ArgumentParser:
    """The command line of ``bench_agent_load.py``."""
    defaults = LoadOptions(agents=1)
    parse = argparse.ArgumentParser(
        description="Many simulated agents against one real pyspire-server: attestation storm, "
        "steady syncing and burst issuance, with server and generator costs."
    )
    parse.add_argument(
        "--agents", type=agent_counts, default=[100], help="agent counts, e.g. 100,1000,5000"
    )
    parse.add_argument("--entries-per-agent", type=int, default=defaults.entries_per_agent)
    parse.add_argument(
        "--sync-interval", type=float, default=defaults.sync_interval, help="seconds"
    )
    parse.add_argument(
        "--duration", type=float, default=defaults.duration, help="seconds of steady state"
    )
    parse.add_argument("--workers", type=int, default=defaults.workers, help="generator processes")
    parse.add_argument("--churn-per-second", type=float, default=defaults.churn_per_second)
    parse.add_argument(
        "--start-per-second",
        type=float,
        default=defaults.start_per_second,
        help="agents started a second in the storm (0: all at once)",
    )
    parse.add_argument(
        "--no-burst", dest="burst", action="store_false", help="leave the burst phase out"
    )
    parse.add_argument("--datastore", choices=DATASTORES, default=defaults.datastore)
    parse.add_argument("--svid-ttl", type=int, default=defaults.svid_ttl, help="seconds")
    parse.add_argument("--agent-ttl", type=int, default=defaults.agent_ttl, help="seconds")
    parse.add_argument(
        "--storm-timeout", type=float, default=defaults.storm_timeout, help="seconds"
    )
    parse.add_argument(
        "--servers",
        type=int,
        default=defaults.servers,
        help="server processes sharing the port (reuse_port) and the datastore",
    )
    for side in ("server", "generator"):
        parse.add_argument(
            f"--{side}-collector",
            choices=COLLECTORS,
            default="tuned",
            help=f"the {side}'s collector: pyspire's policy, it without the young sweep, or "
            "CPython's defaults",
        )
    parse.add_argument(
        "--server-log-level",
        choices=("DEBUG", "INFO", "WARN", "ERROR"),
        default=defaults.server_log_level,
        help="the servers' log level (their logs: see --keep-run-dir)",
    )
    parse.add_argument(
        "--keep-run-dir",
        action="store_true",
        help="keep the run's directory (server and worker logs) and name it",
    )
    parse.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    return parse


def options_for(args: argparse.Namespace, agents: int) -> LoadOptions:
    """The options of the run at ``agents`` agents from parsed arguments."""
    return LoadOptions(
        agents=agents,
        entries_per_agent=args.entries_per_agent,
        sync_interval=args.sync_interval,
        duration=args.duration,
        workers=args.workers,
        churn_per_second=args.churn_per_second,
        datastore=args.datastore,
        svid_ttl=args.svid_ttl,
        agent_ttl=args.agent_ttl,
        start_per_second=args.start_per_second,
        burst=args.burst,
        storm_timeout=args.storm_timeout,
        servers=args.servers,
        server_collector=args.server_collector,
        generator_collector=args.generator_collector,
        server_log_level=args.server_log_level,
        keep_run_dir=args.keep_run_dir,
    )
