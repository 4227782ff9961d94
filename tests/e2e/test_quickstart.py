"""The README's first command runs the quickstart: it must work and stop cleanly.

Its speed is not checked here (a loaded machine makes any bound a coin toss; the README promises
"a few seconds", no figure): :data:`DEADLINE` only turns a hang into a failure that shows what the
quickstart printed. Start-up times are measured by ``tests/bench/bench_agent_startup.py``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "quickstart.py"
DEADLINE = 180.0
"""Liveness, not speed: the quickstart took 13 s at load 4, and 30 s under heavier load."""


def test_quickstart_issues_identities_and_stops_cleanly() -> None:
    # Its own session, so that a hung quickstart is killed with the server and agent it started.
    quickstart = subprocess.Popen(
        [sys.executable, "-W", "error::DeprecationWarning", str(QUICKSTART)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = quickstart.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(quickstart.pid, signal.SIGKILL)
        stdout, stderr = quickstart.communicate()
        workdir = re.search(r"starting pyspire-server in (\S+)", stdout)
        if workdir is not None:
            shutil.rmtree(workdir.group(1), ignore_errors=True)
        pytest.fail(f"the quickstart did not end within {DEADLINE:g}s:\n{stdout}{stderr}")
    output = stdout + stderr
    assert quickstart.returncode == 0, output
    assert (
        "the server said: hello spiffe://example.org/quickstart/client, "
        "this is spiffe://example.org/quickstart/server" in output
    )
    assert "SVID is valid." in output
    assert "pyspire-agent exited with status 0" in output
    assert "pyspire-server exited with status 0" in output
    # The join token never appears on a command line, and the temporary directory is gone.
    assert "-joinTokenFile" not in output
    workdir = re.search(r"starting pyspire-server in (\S+)", output)
    assert workdir is not None, output
    assert f"removed {workdir.group(1)}" in output
    assert not Path(workdir.group(1)).exists()
