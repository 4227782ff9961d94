"""``pyspire-server`` as an operator runs it: ``run`` as a real process, administered by the real
CLI processes over the admin socket, stopped with SIGTERM and started again on the same data.

Every wait is bounded; when the server fails, its log is part of the failure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import CLI_TIMEOUT, ServerProcess, ServerSettings, free_port, short_temp_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    root = short_temp_dir()
    process = ServerProcess(ServerSettings(root=root, port=free_port()))
    try:
        yield process
    finally:
        process.kill()
        shutil.rmtree(root, ignore_errors=True)


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

    assert server.terminate() == 0, server.log()
    assert not server.socket_path.exists()
    down = server.cli("entry", "show", check=False)
    assert down.returncode == 1
    assert down.stderr.startswith("pyspire-server: error: cannot reach the server at ")

    server.start()
    again = json.loads(server.cli("entry", "show", "-output", "json").stdout)
    assert {entry["id"]: entry["spiffe_id"]["path"] for entry in again["entries"]} == entries
    assert server.cli("bundle", "show").stdout == bundle_pem
    assert server.terminate() == 0, server.log()
    assert not server.socket_path.exists()
