"""``pyspire-server`` as an operator runs it: ``run`` as a real process, administered by the real
CLI processes over the admin socket, stopped with SIGTERM and started again on the same data.

Every wait is bounded; when the server fails, its standard error is part of the failure.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SERVER = Path(sys.executable).parent / "pyspire-server"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 20.0


class ServerProcess:
    """One ``pyspire-server run`` process and the CLI pointed at its socket."""

    def __init__(self, config: Path, socket_path: Path, logs: Path) -> None:
        self.config = config
        self.socket_path = socket_path
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def stderr(self) -> str:
        path = self.logs / f"server-{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        self.starts += 1
        with (self.logs / f"server-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(SERVER), "run", "-config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"the server exited with {self.process.returncode} while starting:\n"
                    f"{self.stderr()}"
                )
            if self.socket_path.exists():
                result = self.cli("healthcheck", check=False)
                if result.returncode == 0:
                    return
                last = result.stderr
            time.sleep(0.1)
        self.kill()
        pytest.fail(
            f"the server was not healthy within {START_TIMEOUT:g}s (last: {last.strip()}):\n"
            f"{self.stderr()}"
        )

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the server did not stop within {STOP_TIMEOUT:g}s:\n{self.stderr()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``pyspire-server <argv> -socketPath <socket>``; fail with both streams (and the
        server's log) unless it exits 0 or ``check`` is false."""
        try:
            result = subprocess.run(
                [str(SERVER), *argv, "-socketPath", str(self.socket_path)],
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"'{' '.join(argv)}' did not finish within {CLI_TIMEOUT:g}s")
        if check and result.returncode != 0:
            pytest.fail(
                f"'{' '.join(argv)}' exited {result.returncode}\nstdout: {result.stdout}\n"
                f"stderr: {result.stderr}\nserver log:\n{self.stderr()}"
            )
        return result


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    runtime_dir = Path(tempfile.mkdtemp(prefix="pyspire-e2e-", dir="/tmp"))
    socket_path = runtime_dir / "private" / "api.sock"
    config = tmp_path / "server.toml"
    config.write_text(
        f"""\
[server]
trust_domain = "example.org"
data_dir = "{tmp_path / "data"}"
bind_address = "127.0.0.1"
bind_port = 0
socket_path = "{socket_path}"
log_level = "INFO"

[server.plugins.datastore.sqlite]
[server.plugins.key_manager.disk]
[server.plugins.node_attestor.join_token]
"""
    )
    process = ServerProcess(config, socket_path, tmp_path)
    try:
        yield process
    finally:
        process.kill()
        shutil.rmtree(runtime_dir, ignore_errors=True)


def test_server_process_is_administered_by_the_cli_and_restarts_with_its_state(
    server: ServerProcess, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    server.start()

    created = server.cli(
        "entry",
        "create",
        "-spiffeID",
        "spiffe://example.org/web",
        "-parentID",
        "spiffe://example.org/spire/server",
        "-selector",
        "unix:uid:1000",
    )
    assert "SPIFFE ID        : spiffe://example.org/web" in created.stdout

    token = server.cli("token", "generate", "-spiffeID", "spiffe://example.org/host")
    assert token.stdout.startswith("Token: ")

    shown = json.loads(server.cli("entry", "show", "-output", "json").stdout)
    entries = {entry["id"]: entry["spiffe_id"]["path"] for entry in shown["entries"]}
    assert sorted(entries.values()) == ["/host", "/web"]

    bundle_pem = server.cli("bundle", "show", "-format", "pem").stdout
    assert bundle_pem.startswith("-----BEGIN CERTIFICATE-----")
    minted = tmp_path / "minted"
    server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/minted", "-write", str(minted))
    assert (minted / "bundle.pem").read_text().strip() == bundle_pem.strip()
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(minted / "bundle.pem"), str(minted / "svid.pem")],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")

    agents = server.cli("agent", "list")
    assert agents.stdout == "No attested agents found\n"

    assert server.terminate() == 0, server.stderr()
    assert not server.socket_path.exists()
    down = server.cli("entry", "show", check=False)
    assert down.returncode == 1
    assert down.stderr.startswith("pyspire-server: error: cannot reach the server at ")

    server.start()
    again = json.loads(server.cli("entry", "show", "-output", "json").stdout)
    assert {entry["id"]: entry["spiffe_id"]["path"] for entry in again["entries"]} == entries
    assert server.cli("bundle", "show").stdout == bundle_pem
    assert server.terminate() == 0, server.stderr()
    assert not server.socket_path.exists()
