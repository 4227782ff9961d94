"""pyspire in one command: a server on the embedded defaults, in a temporary directory.

    python3 scripts/dev.py demo        (or: .venv/bin/python examples/quickstart/quickstart.py)

It starts ``pyspire-server run`` with ``examples/configs/server.toml`` (SQLite datastore, disk
key manager, join tokens), waits until the admin API answers, registers an entry, creates a join
token, mints an X509-SVID and checks it with ``openssl verify`` against the trust bundle, then
stops the server with SIGTERM. Every step prints what it did.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVER_CONFIG = ROOT / "examples" / "configs" / "server.toml"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def cli(*arguments: str, check: bool = True) -> str:
    """Run a pyspire CLI command; print and return its output."""
    result = subprocess.run(
        [str(BIN / arguments[0]), *arguments[1:]], capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(arguments[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def wait_healthy(socket_path: Path, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        result = subprocess.run(
            [str(BIN / "pyspire-server"), "healthcheck", "-socketPath", str(socket_path)],
            capture_output=True,
            check=False,
        )
        if result.returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit("the server did not become healthy in time")


def main() -> None:
    if shutil.which("openssl") is None:
        print("note: openssl is not installed; the SVID will not be verified with it")
    workdir = Path(tempfile.mkdtemp(prefix="pyspire-quickstart-"))
    os.chmod(workdir, 0o700)
    socket_path = workdir / "server" / "api.sock"
    log = (workdir / "server.log").open("wb")
    step(f"starting pyspire-server in {workdir}")
    server = subprocess.Popen(
        [
            str(BIN / "pyspire-server"),
            "run",
            "-config",
            str(SERVER_CONFIG),
            "-dataDir",
            str(workdir / "data"),
            "-socketPath",
            str(socket_path),
            "-serverPort",
            str(free_port()),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(socket_path, server)
        admin = ("-socketPath", str(socket_path))
        step("server is healthy; trust bundle:")
        print(cli("pyspire-server", "bundle", "show", "-format", "spiffe", *admin))
        step("registering an entry for this user's workloads")
        print(
            cli(
                "pyspire-server",
                "entry",
                "create",
                *admin,
                "-spiffeID",
                "spiffe://example.org/quickstart/workload",
                "-parentID",
                "spiffe://example.org/spire/agent/quickstart",
                "-selector",
                f"unix:uid:{os.getuid()}",
                "-dns",
                "workload.example.org",
            )
        )
        step("creating a join token for an agent")
        print(cli("pyspire-server", "token", "generate", *admin, "-ttl", "600"))
        step("minting an X509-SVID and verifying it against the bundle")
        out = workdir / "svid"
        cli(
            "pyspire-server",
            "x509",
            "mint",
            *admin,
            "-spiffeID",
            "spiffe://example.org/quickstart/minted",
            "-write",
            str(out),
        )
        print(f"    wrote {', '.join(sorted(p.name for p in out.iterdir()))} in {out}")
        if shutil.which("openssl"):
            result = subprocess.run(
                ["openssl", "verify", "-CAfile", out / "bundle.pem", out / "svid.pem"],
                capture_output=True,
                text=True,
                check=False,
            )
            print("    openssl verify:", result.stdout.strip() or result.stderr.strip())
            if result.returncode != 0:
                raise SystemExit("openssl rejected the SVID")
        step("entries now registered:")
        print(cli("pyspire-server", "entry", "show", *admin))
    finally:
        step("stopping the server (SIGTERM)")
        server.send_signal(signal.SIGTERM)
        try:
            status = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            status = server.wait()
        log.close()
        print(f"    server exited with status {status}; its log is {workdir / 'server.log'}")
    step("done")


if __name__ == "__main__":
    main()
