"""Starting agents the way operators do, as real processes against a real server with its
attestation rate limit (one per second per address) in force.

Agents started together are refused by the rate limit and must retry until they attest; a join
token handed over in a private file never shows in the process list; a file others may read is
refused; health answers every caller, with or without an entry; a second run with a new token
says that the token was not used; the Workload API's routine hang-ups stay out of the log.

One server and a small fleet of agents serve the whole module; the tests run in file order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from processes import (
    TRUST_DOMAIN,
    AgentProcess,
    AgentSettings,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    join_token_agent_id,
    short_temp_dir,
    wait_for,
)

from pyspire.agent.storage import STATE_FILE_NAME
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.transport.tls import build_client_context

pytestmark = pytest.mark.slow

FLEET_SIZE = 3
FLEET_TIMEOUT = 60.0
RATE_LIMITED = "over the limit of 1 per second"
RETRYING = "agent attestation did not go through; retrying"
CALLER_SELECTOR = f"unix:uid:{os.getuid()}"


class AttestationHammer:
    """Keeps the server's attestation allowance for 127.0.0.1 spent: from a thread of its own it
    opens an AttestAgent call every 50 ms from the agents' address, so an agent attesting
    meanwhile is (almost always) refused as over the rate limit."""

    def __init__(self, port: int, bundle_pem: Path) -> None:
        self._port = port
        self._authorities = [
            certificate.public_bytes(Encoding.DER)
            for certificate in x509.load_pem_x509_certificates(bundle_pem.read_bytes())
        ]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> AttestationHammer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    async def _run(self) -> None:
        channel = Channel("127.0.0.1", self._port, ssl=build_client_context(self._authorities))
        try:
            stub = agent_pb.AgentStub(channel, timeout=2)
            while not self._stop.is_set():
                # Refused either way (no attestation data): what matters is the allowance.
                with contextlib.suppress(GRPCError, OSError, ProtocolError, StreamTerminatedError):
                    async for _ in stub.attest_agent([agent_pb.AttestAgentRequest()]):
                        pass
                await asyncio.sleep(0.05)
        finally:
            channel.close()


@dataclass
class Site:
    root: Path
    server: ServerProcess
    bundle: Path
    fleet: list[AgentProcess] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def agent(self, name: str, **settings: object) -> AgentProcess:
        process = AgentProcess(
            AgentSettings(
                root=self.root,
                server_port=self.server.settings.port,
                bootstrap_bundle=self.bundle,
                name=name,
                **settings,  # type: ignore[arg-type]
            )
        )
        self.fleet.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(process.all_logs() for process in [self.server, *self.fleet])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    root = short_temp_dir()
    server = ServerProcess(ServerSettings(root=root, port=free_port()))
    built = Site(root=root, server=server, bundle=root / "bootstrap.pem")
    try:
        server.start()
        server.write_bundle(built.bundle)
        yield built
    finally:
        for process in [*built.fleet, server]:
            process.kill()
        shutil.rmtree(root, ignore_errors=True)


def _fail_with_logs(site: Site, error: ProcessError) -> None:
    pytest.fail(f"{str(error).splitlines()[0]}\n{site.logs()}")


def test_agents_started_together_retry_through_the_rate_limit(site: Site) -> None:
    agents = [
        site.agent(f"fleet-{number}", log_file=site.root / "fleet-1.log" if number == 1 else None)
        for number in range(FLEET_SIZE)
    ]
    token_files = [site.root / f"fleet-{number}.token" for number in range(FLEET_SIZE)]
    site.tokens = [site.server.write_token(path) for path in token_files]
    try:
        with AttestationHammer(site.server.settings.port, site.bundle):
            for agent, path in zip(agents, token_files, strict=True):
                agent.launch(join_token_file=path)
            # Agents are refused while the allowance is spent, and retry (the hammer keeps it
            # spent almost always; on a loaded machine one agent may slip through, so the
            # refusals of at least two are what is waited for) ...
            wait_for(
                "agents to be refused by the rate limit",
                lambda: _at_least(2, _retried, agents),
                FLEET_TIMEOUT,
            )
        # ... and, the allowance free again, every one of them attests and serves.
        wait_for(
            "every agent to serve the workload api",
            lambda: _every(_serving, agents),
            FLEET_TIMEOUT,
        )
    except ProcessError as error:
        _fail_with_logs(site, error)
    assert site.server.agent_ids() == sorted(join_token_agent_id(t) for t in site.tokens)
    for agent, token in zip(agents, site.tokens, strict=True):
        assert agent.process is not None
        cmdline = Path(f"/proc/{agent.process.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline, "the join token is on the command line"


def _every(check: Callable[[AgentProcess], bool], agents: list[AgentProcess]) -> bool | None:
    """True when ``check`` holds for every agent, else None (for :func:`wait_for`); every
    agent is checked, so one that exited is noticed at once."""
    results = [check(agent) for agent in agents]
    return True if all(results) else None


def _at_least(
    count: int, check: Callable[[AgentProcess], bool], agents: list[AgentProcess]
) -> bool | None:
    """True when ``check`` holds for ``count`` agents or more, else None (for
    :func:`wait_for`); every agent is checked, so one that exited is noticed at once."""
    results = [check(agent) for agent in agents]
    return True if sum(results) >= count else None


def _retried(agent: AgentProcess) -> bool:
    """Whether ``agent`` was refused by the rate limit and is trying again (it must not have
    given up and exited)."""
    _alive(agent)
    log = agent.all_logs()
    if agent.settings.log_file is not None and agent.settings.log_file.exists():
        log += agent.settings.log_file.read_text(errors="replace")
    return RETRYING in log and RATE_LIMITED in log


def _alive(agent: AgentProcess) -> None:
    if agent.exited() is not None:
        raise ProcessError(f"{agent.name} exited with {agent.exited()}\n{agent.log()}")


def _serving(agent: AgentProcess) -> bool:
    _alive(agent)
    return agent.socket_path.exists()


def test_health_does_not_depend_on_the_callers_entries(site: Site) -> None:
    agent = site.fleet[0]
    # No entry names this process (nor any other): health answers all the same.
    result = agent.cli("healthcheck", "-verbose")
    assert result.stdout.splitlines()[-1] == "Agent is healthy."
    assert "Agent answered SERVING" in result.stdout
    denied = agent.cli("api", "fetch", "x509", check=False)
    assert denied.returncode == 1
    assert "permission denied" in denied.stderr


def test_routine_hang_ups_stay_out_of_the_log_and_the_socket_is_announced_once(
    site: Site,
) -> None:
    agent = site.fleet[0]
    agent_id = join_token_agent_id(site.tokens[0])
    site.server.create_entry(f"spiffe://{TRUST_DOMAIN}/start/web", agent_id, CALLER_SELECTOR)

    def fetched() -> bool | None:
        return True if agent.cli("api", "fetch", "x509", check=False).returncode == 0 else None

    wait_for("the entry to reach the agent", fetched, FLEET_TIMEOUT, agent.log())
    for _ in range(2):
        agent.cli("api", "fetch", "x509")
        agent.cli("healthcheck")
    log = agent.log()
    assert log.count("workload api listening") == 1, log
    assert "Request was cancelled" not in log, log


def test_a_new_token_for_an_agent_that_resumes_is_reported_unused(site: Site) -> None:
    for agent in site.fleet[:2]:
        assert agent.terminate() == 0, agent.log()
        fresh = site.root / f"{agent.name}.new-token"
        site.server.write_token(fresh)
        agent.start(join_token_file=fresh)
        state_file = agent.settings.data_dir / STATE_FILE_NAME
        if agent.settings.log_file is None:
            # The log goes to standard error: the warning is there.
            assert "join token not used: the agent resumed its stored identity" in agent.log()
        else:
            # The log goes to a file: the warning is there, and standard error says it too.
            assert "join token not used" in agent.settings.log_file.read_text()
            assert (
                "pyspire-agent: warning: the join token was not used: the agent resumed its "
                f"stored identity {join_token_agent_id(site.tokens[1])}; to attest with the "
                f"new token, stop the agent and remove {state_file}"
            ) in agent.log()
    assert site.server.agent_ids() == sorted(join_token_agent_id(t) for t in site.tokens)


def test_a_token_file_others_may_read_is_refused(site: Site) -> None:
    loose = site.root / "loose.token"
    token = site.server.write_token(loose)
    loose.chmod(0o644)
    agent = site.agent("loose")
    agent.launch(join_token_file=loose)
    assert agent.wait(timeout=20) == 1, agent.log()
    assert (
        f"join_token_file: {str(loose)!r} has mode 0644: other users may read or change "
        f"the join token; restrict it (chmod o-rw {loose})"
    ) in agent.log()
    assert token not in agent.log()


def test_an_agent_waiting_for_its_server_keeps_trying_and_stops_on_sigterm(site: Site) -> None:
    absent = AgentProcess(
        AgentSettings(
            root=site.root,
            server_port=free_port(),  # nobody listens there
            bootstrap_bundle=site.bundle,
            name="early",
        )
    )
    site.fleet.append(absent)
    token_file = site.root / "early.token"
    site.server.write_token(token_file)
    absent.launch(join_token_file=token_file)

    def retrying() -> bool | None:
        _alive(absent)
        log = absent.log()
        return True if RETRYING in log and "cannot reach the server" in log else None

    try:
        wait_for("the agent to retry an absent server", retrying, FLEET_TIMEOUT)
    except ProcessError as error:
        _fail_with_logs(site, error)
    assert absent.terminate() == 0, absent.log()
    assert "agent stopped before it had an identity" in absent.log()
