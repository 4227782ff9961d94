"""The README's first command runs the quickstart: it must work, and quickly."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "quickstart.py"


def test_quickstart_issues_identities_and_stops_cleanly() -> None:
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", str(QUICKSTART)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - began
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
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
    assert elapsed < 30, f"the quickstart took {elapsed:.1f}s"
