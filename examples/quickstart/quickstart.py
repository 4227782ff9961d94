"""pyspire in one command: a server, an agent and two workloads, in a temporary directory.

    python3 scripts/dev.py demo        (or: .venv/bin/python examples/quickstart/quickstart.py)

1. ``pyspire-server run`` with ``examples/configs/server.toml`` (SQLite datastore, disk key
   manager, join tokens); the admin API answers on a private unix socket.
2. A join token, the trust bundle for the agent's bootstrap, and two registration entries: one
   for a "server" workload and one for a "client" workload, both run by the current user. They
   are told apart by the example third-party attestor ``environ`` (variable ``QUICKSTART_ROLE``),
   chained after the ``unix`` attestor.
3. ``pyspire-agent run`` attests with the token, syncs, and serves the Workload API.
4. The two workloads fetch their X509-SVIDs with py-spiffe and talk mutual TLS, each checking
   the other's SPIFFE ID; a JWT-SVID is fetched and validated with ``pyspire-agent api``.
5. Everything stops with SIGTERM and the temporary directory is removed (``--keep`` keeps it,
   with the logs and state, for a look inside). Every step prints what it did; when a step
   fails, the end of each process's log is printed first.

The join token travels the way the README recommends: written by ``token generate -write`` to a
file only its owner can read, and handed to the agent with ``-joinTokenFile``, so it never
appears on a command line (which every local user can read in the process list).
"""

from __future__ import annotations

import argparse
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
AGENT_CONFIG = ROOT / "examples" / "configs" / "agent.toml"
HERE = Path(__file__).resolve().parent
TRUST_DOMAIN = "example.org"
SERVER_WORKLOAD = f"spiffe://{TRUST_DOMAIN}/quickstart/server"
CLIENT_WORKLOAD = f"spiffe://{TRUST_DOMAIN}/quickstart/client"
ROLE_VARIABLE = "QUICKSTART_ROLE"
START_TIMEOUT = 30.0
LOG_TAIL_LINES = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def cli(*arguments: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run a pyspire CLI command; return its output."""
    result = subprocess.run(
        [str(BIN / arguments[0]), *arguments[1:]],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(arguments[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def wait_healthy(program: str, socket_path: Path, process: subprocess.Popen[bytes]) -> None:
    """Poll ``<program> healthcheck`` until it passes (or the process dies, or time runs out)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{program} exited with status {process.returncode}")
        result = subprocess.run(
            [str(BIN / program), "healthcheck", "-socketPath", str(socket_path)],
            capture_output=True,
            check=False,
        )
        if result.returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"{program} did not become healthy in time")


def stop(name: str, process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        status = process.wait()
    print(f"    {name} exited with status {status}", flush=True)


def agent_config(workdir: Path) -> Path:
    """The example agent configuration plus the example environ attestor, chained after unix."""
    path = workdir / "agent.toml"
    text = AGENT_CONFIG.read_text()
    text += f"""
# Added by the quickstart: the example third-party attestor tells the two workloads apart.
[agent.plugins.workload_attestor.environ]
names = ["{ROLE_VARIABLE}"]
"""
    path.write_text(text)
    return path


def workload_env(socket_path: Path, role: str) -> dict[str, str]:
    return {
        **os.environ,
        "SPIFFE_ENDPOINT_SOCKET": f"unix://{socket_path}",
        ROLE_VARIABLE: role,
    }


def print_log_tails(workdir: Path) -> None:
    """The last lines of each process's log, to standard error: what went wrong."""
    for name in ("server.log", "agent.log"):
        path = workdir / name
        if path.exists():
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            print(f"---- last lines of {name} ----", file=sys.stderr)
            for line in lines:
                print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, state)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pyspire-qs-", dir="/tmp"))
    os.chmod(workdir, 0o700)
    server_socket = workdir / "server" / "api.sock"
    agent_socket = workdir / "agent" / "api.sock"
    port = free_port()
    admin = ("-socketPath", str(server_socket))
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    logs = []
    try:
        step(f"starting pyspire-server in {workdir}")
        server_log = (workdir / "server.log").open("wb")
        logs.append(server_log)
        server = subprocess.Popen(
            [
                str(BIN / "pyspire-server"),
                "run",
                "-config",
                str(SERVER_CONFIG),
                "-dataDir",
                str(workdir / "server-data"),
                "-socketPath",
                str(server_socket),
                "-serverPort",
                str(port),
            ],
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        processes.append(("pyspire-server", server))
        wait_healthy("pyspire-server", server_socket, server)
        step("server is healthy; creating a join token and writing the bootstrap bundle")
        token_file = workdir / "join-token"
        cli("pyspire-server", "token", "generate", *admin, "-ttl", "10m", "-write", str(token_file))
        token = token_file.read_text().strip()
        bootstrap = workdir / "bootstrap.pem"
        bootstrap.write_text(cli("pyspire-server", "bundle", "show", *admin, "-format", "pem"))
        agent_id = f"spiffe://{TRUST_DOMAIN}/spire/agent/join_token/{token}"
        print(f"    the agent will be {agent_id} (token in {token_file}, mode 0600)")
        step("registering the two workloads (run by uid " + str(os.getuid()) + ")")
        for spiffe_id, role in ((SERVER_WORKLOAD, "server"), (CLIENT_WORKLOAD, "client")):
            cli(
                "pyspire-server",
                "entry",
                "create",
                *admin,
                "-spiffeID",
                spiffe_id,
                "-parentID",
                agent_id,
                "-selector",
                f"unix:uid:{os.getuid()}",
                "-selector",
                f"environ:{ROLE_VARIABLE}:{role}",
            )
            print(f"    {spiffe_id}  <=  unix:uid:{os.getuid()} + environ:{ROLE_VARIABLE}:{role}")
        step("starting pyspire-agent with the join token")
        agent_log = (workdir / "agent.log").open("wb")
        logs.append(agent_log)
        agent = subprocess.Popen(
            [
                str(BIN / "pyspire-agent"),
                "run",
                "-config",
                str(agent_config(workdir)),
                "-dataDir",
                str(workdir / "agent-data"),
                "-socketPath",
                str(agent_socket),
                "-serverPort",
                str(port),
                "-trustBundle",
                str(bootstrap),
                "-joinTokenFile",
                str(token_file),
            ],
            stdout=agent_log,
            stderr=subprocess.STDOUT,
        )
        processes.append(("pyspire-agent", agent))
        # Health does not depend on the caller: this script has no entry and still sees it.
        wait_healthy("pyspire-agent", agent_socket, agent)
        step("the workloads fetch their SVIDs and talk mutual TLS")
        workload_server = subprocess.Popen(
            [sys.executable, str(HERE / "workload_server.py"), "--allow", CLIENT_WORKLOAD],
            env=workload_env(agent_socket, "server"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        listening = ""
        assert workload_server.stdout is not None
        for line in workload_server.stdout:
            print("    " + line.rstrip())
            if "listening on" in line:
                listening = line.rsplit(":", 1)[1].strip()
                break
        if not listening:
            raise SystemExit("the workload server did not start")
        client = subprocess.run(
            [
                sys.executable,
                str(HERE / "workload_client.py"),
                "--server-id",
                SERVER_WORKLOAD,
                "--port",
                listening,
            ],
            env=workload_env(agent_socket, "client"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for line in client.stdout.splitlines():
            print("    " + line)
        remaining, _ = workload_server.communicate(timeout=30)
        for line in remaining.splitlines():
            print("    " + line)
        if client.returncode != 0 or workload_server.returncode != 0:
            raise SystemExit(f"the workloads failed: {client.stderr.strip()}")
        step("the client fetches a JWT-SVID and the agent validates it")
        client_env = workload_env(agent_socket, "client")
        fetched = cli(
            "pyspire-agent",
            "api",
            "fetch",
            "jwt",
            "-socketPath",
            str(agent_socket),
            "-audience",
            "quickstart",
            "-output",
            "json",
            env=client_env,
        )
        import json

        jwt = json.loads(fetched)["svids"][0]["svid"]
        print(f"    token for {CLIENT_WORKLOAD}: {jwt[:40]}...")
        validated = cli(
            "pyspire-agent",
            "api",
            "validate",
            "jwt",
            "-socketPath",
            str(agent_socket),
            "-audience",
            "quickstart",
            "-svid",
            jwt,
            env=client_env,
        )
        print("    " + validated.strip().splitlines()[0])
        print(f"    identities issued and used in {time.monotonic() - started:.1f}s")
    except BaseException:
        for log in logs:
            log.flush()
        print_log_tails(workdir)
        raise
    finally:
        step("stopping the agent and the server (SIGTERM)")
        for name, process in reversed(processes):
            stop(name, process)
        for log in logs:
            log.close()
        if args.keep:
            print(f"    logs and state are in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"    removed {workdir}")
    step("done")


if __name__ == "__main__":
    main()
