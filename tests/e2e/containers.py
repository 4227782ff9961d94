"""Workload client processes inside containers of a private Docker Engine.

The image holds only a static busybox, so the client (py-spiffe, run by ``processes.py`` as a
workload) comes from the host: the container bind-mounts, read-only, the host's ``/usr`` (the
image links ``/lib`` and ``/lib64`` into it), the Python installation the virtual environment
was made from, and this repository (which holds the virtual environment and the editable
installs), plus the directory of the agent's Workload API socket. The agent sees the process
through SO_PEERCRED like any caller and finds its container in ``/proc/<pid>/cgroup``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from processes import AgentProcess, ProcessError
from pyspire_workloadattestor_docker.testing import TEST_IMAGE, DockerDaemon

REPOSITORY = Path(__file__).resolve().parents[2]
WORKLOAD = REPOSITORY / "tests" / "e2e" / "processes.py"


def create_workload(
    daemon: DockerDaemon, agent: AgentProcess, action: str, options: Sequence[str] = ()
) -> str:
    """Create (not start) a container that runs the workload ``action`` against ``agent``."""
    sockets = agent.socket_path.parent
    argv = ["create", "--network", "none", *options]
    for mount in sorted({Path("/usr"), Path(sys.base_prefix).resolve(), REPOSITORY}):
        argv += ["-v", f"{mount}:{mount}:ro"]
    argv += ["-v", f"{sockets}:{sockets}", TEST_IMAGE]
    argv += [sys.executable, str(WORKLOAD), agent.endpoint, action]
    return daemon.docker(*argv).stdout.strip()


def run_created(daemon: DockerDaemon, container: str) -> dict[str, Any]:
    """Start a created workload container, wait for it, remove it; the JSON it printed."""
    try:
        result = daemon.docker("start", "-a", container, check=False)
    finally:
        daemon.remove(container)
    if result.returncode != 0:
        raise ProcessError(
            f"workload container exited {result.returncode}\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}"
        )
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def run_in_container(
    daemon: DockerDaemon, agent: AgentProcess, action: str, options: Sequence[str] = ()
) -> dict[str, Any]:
    """Run the workload ``action`` in a new container; the JSON it printed."""
    return run_created(daemon, create_workload(daemon, agent, action, options))
