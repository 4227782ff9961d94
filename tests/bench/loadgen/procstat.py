"""What a process costs, read from ``/proc`` (Linux), and the descriptor limit."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far, from ``/proc/<pid>/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after its closing ")" do not.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid``, from ``VmRSS`` in ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid`` (sockets included)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass(frozen=True)
class Sample:
    """A process's CPU time and memory at one moment (``at`` from ``time.monotonic``)."""

    at: float
    cpu: float
    rss: int
    fds: int


def sample(pid: int, at: float) -> Sample:
    """CPU seconds, RSS and descriptors of ``pid`` now."""
    return Sample(at=at, cpu=cpu_seconds(pid), rss=rss_bytes(pid), fds=fd_count(pid))


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft descriptor limit to at least ``needed`` (children inherit it)
    and return the new soft limit; RuntimeError when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(
            f"file descriptor limit: {needed} needed, the hard limit is {hard} (raise it with "
            "ulimit -Hn or LimitNOFILE)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        raise RuntimeError(f"file descriptor limit: asked for {needed}, got {soft}")
    return soft
