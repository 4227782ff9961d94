"""The README's "Running it yourself" commands work exactly as a newcomer copies them.

The shell block is taken from README.md and run unchanged by bash, from a directory that holds
only links to this checkout's ``.venv`` and ``examples``, so the relative paths of the commands
and of the example configurations resolve as they would in a fresh clone. The commands use fixed
places (port 8081, ``/tmp/bootstrap.pem``, the sockets under ``/tmp``), so they run in new
network and mount namespaces with a private ``/tmp``: nothing they do can meet another run or
the machine's own ``/tmp``. That needs root and ``unshare``; elsewhere the test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "## Running it yourself"
TIMEOUT = 180.0

_UNSHARE = ("unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child")
"""New namespaces: network (port 8081 is ours), mount (a private /tmp) and pid (everything the
commands start in the background ends with the shell, however the test ends)."""

_ISOLATE = """\
case "$CHECKOUT" in
    /tmp/*)  # a checkout under /tmp stays where it is, above the private /tmp
        mount --bind "$CHECKOUT" /mnt
        mount -t tmpfs tmpfs /tmp
        mkdir -p "$CHECKOUT"
        mount --bind /mnt "$CHECKOUT"
        umount /mnt ;;
    *) mount -t tmpfs tmpfs /tmp ;;
esac
ip link set lo up
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
"""

_AFTER = """
status=0
for file in svid.0.pem svid.0.key bundle.0.pem; do
    test -s "/tmp/svid/$file" || { echo "missing /tmp/svid/$file"; status=1; }
done
test "$(stat -c %a /tmp/join-token)" = 600 || { echo "the token file is not private"; status=1; }
exit $status
"""


def readme_commands() -> str:
    """The first ``sh`` block after the "Running it yourself" heading."""
    text = README.read_text()
    section = text[text.index(SECTION) :]
    found = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert found is not None, "the section has no sh block"
    return found.group(1)


def _isolation_available() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run([*_UNSHARE, "true"], capture_output=True, check=False)
    return probe.returncode == 0


def test_the_readme_commands_issue_an_svid() -> None:
    if not _isolation_available():
        pytest.skip("running the README's commands in isolation needs root and unshare")
    commands = readme_commands()
    assert "-joinToken " not in commands, "the README puts a join token on a command line"
    workdir = Path(tempfile.mkdtemp(prefix="pyspire-readme-", dir=ROOT))
    try:
        (workdir / ".venv").symlink_to(ROOT / ".venv")
        (workdir / "examples").symlink_to(ROOT / "examples")
        # The working directory is entered after /tmp is covered (and a checkout under it put
        # back), and the commands run with `set -e`: the first one failing ends the run.
        script = f"set -e\nCHECKOUT={ROOT}\n{_ISOLATE}cd {workdir}\n{commands}{_AFTER}"
        result = subprocess.run(
            [*_UNSHARE, "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Writing SVID #0 to file /tmp/svid/svid.0.pem." in output
