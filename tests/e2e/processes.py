"""Real ``pyspire-server`` and ``pyspire-agent`` processes, and workload client processes, for
end-to-end tests, reliability scenarios and benchmarks.

Every wait is bounded; a process that fails to start or stop raises :class:`ProcessError`
carrying its log, so a failing test shows what the process said. Nothing here imports pytest:
the benchmark scripts use the same helpers.

Run as a script, this module is a workload: ``python processes.py <socket> <action> ...`` uses
py-spiffe against the Workload API at ``<socket>`` and prints one JSON object (see
:func:`workload_main`). Tests start it as a separate process, optionally under another uid.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pyspire.cli.admin_client import AdminClient

from pyspire_sdk.testing.distributions import environment_with_path

BIN = Path(sys.executable).parent
SERVER = BIN / "pyspire-server"
AGENT = BIN / "pyspire-agent"
HERE = Path(__file__).resolve()

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 20.0
WORKLOAD_TIMEOUT = 20.0
TRUST_DOMAIN = "example.org"

T = TypeVar("T")


class ProcessError(Exception):
    """A process did not start, stop or answer as expected; the message includes its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def short_temp_dir() -> Path:
    """A fresh directory under /tmp with a short name (unix socket paths must stay under 107
    bytes), readable by every uid so workloads running as another user reach the sockets."""
    path = Path(tempfile.mkdtemp(prefix="ps-", dir="/tmp"))
    path.chmod(0o755)
    return path


def early_in_taint_spread(prefix: str) -> str:
    """An entry ID (``<prefix>-<n>``) whose SVID an agent re-mints in the first hundredth of
    the taint spread.

    After a taint, each SVID waits for its own moment within the agent's ``TAINT_SPREAD``
    (10 s), drawn from its entry ID; with a server-chosen ID a test that taints waits anything
    up to that for a spread that has one SVID to spread."""
    from datetime import UTC, datetime
    from itertools import count

    from pyspire.agent.tainted import TAINT_SPREAD, TaintSchedule

    schedule = TaintSchedule()
    seen = datetime(2000, 1, 1, tzinfo=UTC)
    schedule.observe({b"issuer": True}, seen)
    early = seen + TAINT_SPREAD / 100
    return next(
        entry_id
        for entry_id in (f"{prefix}-{n}" for n in count())
        if schedule.due(entry_id, [b"issuer"], early)
    )


def wait_for(what: str, check: Callable[[], T | None], timeout: float, log: str = "") -> T:
    """Poll ``check`` every 50 ms until it returns something other than None; raise
    :class:`ProcessError` naming ``what`` (with ``log``) when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise ProcessError(f"timed out after {timeout:g}s waiting for {what}\n{log}")
        time.sleep(0.05)


class Process:
    """One long-running pyspire process, its log file per start, SIGTERM and kill."""

    name = "process"

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.name}-{self.starts}.log"

    def log(self) -> str:
        """Everything the current (or last) run wrote to stdout and stderr."""
        path = self.log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self) -> str:
        """The logs of every run, oldest first, each under a header."""
        parts = []
        for number in range(1, self.starts + 1):
            path = self.logs / f"{self.name}-{number}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"----- {self.name} run {number} -----\n{text}")
        return "\n".join(parts)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        """The process ID of the current run."""
        if self.process is None:
            raise ProcessError(f"the {self.name} was never started")
        return self.process.pid

    def spawn(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Start ``argv`` with its output in a new log and ``env`` as its environment (this
        process's by default)."""
        if self.running:
            raise ProcessError(f"the {self.name} is already running")
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
            )

    def wait_for_log(self, text: str, timeout: float, *, count: int = 1) -> None:
        """Wait until the current run's log holds ``text`` at least ``count`` times; raises
        :class:`ProcessError` (with the log) when the process exits or ``timeout`` passes."""

        def logged() -> bool | None:
            if self.log().count(text) >= count:
                return True
            self._fail_if_exited(f"waiting for {text!r} in its log")
            return None

        wait_for(f"{text!r} in the {self.name}'s log", logged, timeout, self.log())

    def rss_bytes(self) -> int:
        """Resident memory of the running process, from ``/proc/<pid>/status``."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise ProcessError(f"the {self.name} has no VmRSS in /proc/{self.pid}/status")

    def fd_count(self) -> int:
        """Open file descriptors of the running process, from ``/proc/<pid>/fd``."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return None if self.process is None else self.process.poll()

    def wait(self, timeout: float) -> int:
        """Wait for the process to end on its own; its exit code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProcessError(
                f"the {self.name} did not exit within {timeout:g}s\n{self.log()}"
            ) from None

    def terminate(self) -> int:
        """SIGTERM and wait for the exit code (killed and raised after ``STOP_TIMEOUT``)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProcessError(
                f"the {self.name} did not stop within {STOP_TIMEOUT:g}s of SIGTERM\n{self.log()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL if still running; safe to call at any time."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def _fail_if_exited(self, doing: str) -> None:
        code = self.exited()
        if code is not None:
            raise ProcessError(f"the {self.name} exited with {code} while {doing}")


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """What a test varies in the server's configuration file."""

    root: Path
    port: int
    default_x509_svid_ttl: str = "1h"
    default_jwt_svid_ttl: str = "5m"
    ca_ttl: str = "24h"
    agent_ttl: str | None = None
    log_level: str = "INFO"
    extra_plugins: str = ""
    """More ``[server.plugins.<type>.<name>]`` tables, appended to the file as given."""
    python_path: tuple[Path, ...] = ()
    """Directories the server finds more plugin distributions in (see
    :func:`install_test_plugins`)."""
    extra: str = ""
    """More of the file, after the [server] keys (e.g. "[server.health_checks]" tables)."""
    datastore: str = ""
    """The ``[server.plugins.datastore.<name>]`` table with its settings; a SQLite file under
    ``root`` when empty."""
    trust_domain: str = TRUST_DOMAIN
    key_manager: str = "[server.plugins.key_manager.disk]"
    """The ``[server.plugins.key_manager.<name>]`` table with its settings."""

    @property
    def socket_path(self) -> Path:
        return self.root / "s" / "api.sock"

    @property
    def database_path(self) -> Path:
        return self.root / "sdata" / "datastore.sqlite3"

    def write(self) -> Path:
        path = self.root / "server.toml"
        agent_ttl = f'agent_ttl = "{self.agent_ttl}"' if self.agent_ttl else ""
        path.write_text(
            f"""\
[server]
trust_domain = "{self.trust_domain}"
data_dir = "{self.root / "sdata"}"
bind_address = "127.0.0.1"
bind_port = {self.port}
socket_path = "{self.socket_path}"
log_level = "{self.log_level}"
ca_ttl = "{self.ca_ttl}"
default_x509_svid_ttl = "{self.default_x509_svid_ttl}"
default_jwt_svid_ttl = "{self.default_jwt_svid_ttl}"
{agent_ttl}
{self.extra}
{self.datastore or self._sqlite_table()}

{self.key_manager}
[server.plugins.node_attestor.join_token]
{self.extra_plugins}"""
        )
        return path

    def _sqlite_table(self) -> str:
        return f'[server.plugins.datastore.sqlite]\ndatabase_path = "{self.database_path}"'


class ServerProcess(Process):
    """``pyspire-server run`` and the server CLI pointed at its admin socket."""

    name = "server"

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings.root)
        self.settings = settings
        self.config = settings.write()

    @property
    def socket_path(self) -> Path:
        return self.settings.socket_path

    def launch(self, env: Mapping[str, str] | None = None) -> None:
        """Start without waiting; ``env`` adds variables to the environment."""
        environment: dict[str, str] | None = None
        for site in reversed(self.settings.python_path):
            environment = environment_with_path(site, environment)
        if env:
            environment = {**(os.environ if environment is None else environment), **env}
        self.spawn([str(SERVER), "run", "-config", str(self.config)], environment)

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Start and wait until the server's health check says SERVING; ``env`` adds
        variables to the environment."""
        self.launch(env)

        def healthy() -> bool | None:
            self._fail_if_exited("starting")
            if not self.socket_path.exists():
                return None
            try:
                return True if self.serving() else None
            except ProcessError:
                return None

        try:
            wait_for("the server to pass its healthcheck", healthy, START_TIMEOUT)
        except ProcessError as error:
            self.kill()
            raise ProcessError(f"{error}\n{self.log()}") from None

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``pyspire-server <argv> -socketPath <socket>``; raises with both streams (and the
        server's log) unless it exits 0 or ``check`` is false."""
        command = [str(SERVER), *argv, "-socketPath", str(self.socket_path)]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise ProcessError(
                f"'{' '.join(argv)}' did not finish within {CLI_TIMEOUT:g}s\n{self.log()}"
            ) from None
        if check and result.returncode != 0:
            raise ProcessError(
                f"'{' '.join(argv)}' exited {result.returncode}\nstdout: {result.stdout}\n"
                f"stderr: {result.stderr}\nserver log:\n{self.log()}"
            )
        return result

    def command(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """What :meth:`cli` does, without a process: the same command line run by the CLI's
        own code in this process, its streams captured. A CLI process costs about a second of
        interpreter start-up; tests whose subject is not the executable itself call this (the
        ``pyspire-server`` executable has its own tests)."""
        import io

        from pyspire.catalog import Side
        from pyspire.cli import CliContext, run_cli

        command = [*argv, "-socketPath", str(self.socket_path)]
        out, err = io.StringIO(), io.StringIO()
        context = CliContext(side=Side.SERVER, prog=SERVER.name, stdout=out, stderr=err)
        code = run_cli(command, context)
        result = subprocess.CompletedProcess(command, code, out.getvalue(), err.getvalue())
        if check and code != 0:
            raise ProcessError(
                f"'{' '.join(argv)}' exited {code}\nstdout: {result.stdout}\n"
                f"stderr: {result.stderr}\nserver log:\n{self.log()}"
            )
        return result

    def api(self, exchange: Callable[[AdminClient], Awaitable[T]]) -> T:
        """Run ``exchange`` against the admin API, in this process: test set-up calls it
        instead of a CLI process, which costs a second of interpreter start-up a call (the
        tests that call :meth:`cli` test the CLI itself). Raises :class:`ProcessError` with the
        server's log when the call fails."""
        from pyspire.cli.admin_client import AdminError, connect

        async def call() -> T:
            async with connect(self.socket_path, call_timeout=CLI_TIMEOUT) as client:
                with client.errors():
                    return await exchange(client)

        try:
            return asyncio.run(call())
        except AdminError as error:
            raise ProcessError(f"admin API call failed: {error}\n{self.log()}") from None

    def serving(self) -> bool:
        """Whether the gRPC health check answers SERVING (what ``healthcheck`` checks)."""
        from pyspire.proto.gen.grpc.health import v1 as health_pb

        answer = self.api(lambda client: client.health.check(health_pb.HealthCheckRequest()))
        return answer.status == health_pb.HealthCheckResponseServingStatus.SERVING

    def write_bundle(self, path: Path) -> Path:
        """The trust bundle as PEM at ``path`` (an agent's bootstrap bundle), as ``bundle show
        -format pem`` prints it."""
        from pyspire.cli.commands.bundle import format_bundle
        from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb

        bundle = self.api(lambda client: client.bundle.get_bundle(bundle_pb.GetBundleRequest()))
        path.write_text(format_bundle(bundle, "pem") + "\n")
        return path

    def generate_token(self, ttl: int = 600) -> str:
        """A new join token valid ``ttl`` seconds."""
        from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb

        request = agent_pb.CreateJoinTokenRequest(ttl=ttl)
        token = self.api(lambda client: client.agent.create_join_token(request))
        return str(token.value)

    def write_token(self, path: Path, ttl: str = "10m") -> str:
        """A new join token written to ``path`` (mode 0600) as an agent's -joinTokenFile; the
        token itself, for the agent ID it gives."""
        self.cli("token", "generate", "-ttl", ttl, "-write", str(path))
        return path.read_text().strip()

    def create_entry(
        self, spiffe_id: str, parent_id: str, *selectors: str, entry_id: str = ""
    ) -> None:
        """Register an entry (with ``entry_id``, else one the server chooses); raises
        :class:`ProcessError` when the server refuses it."""
        from pyspire.proto.gen.spire.api import types as pb
        from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
        from pyspire_sdk.selector import Selector
        from pyspire_sdk.spiffeid import SpiffeId

        def wire_id(text: str) -> pb.Spiffeid:
            parsed = SpiffeId.parse(text)
            return pb.Spiffeid(trust_domain=parsed.trust_domain.name, path=parsed.path)

        entry = pb.Entry(
            id=entry_id,
            spiffe_id=wire_id(spiffe_id),
            parent_id=wire_id(parent_id),
            selectors=[
                pb.Selector(type=parsed.type, value=parsed.value)
                for parsed in map(Selector.parse, selectors)
            ],
        )
        request = entry_pb.BatchCreateEntryRequest(entries=[entry])
        answer = self.api(lambda client: client.entry.batch_create_entry(request))
        [result] = answer.results
        if result.status.code != 0:
            raise ProcessError(f"entry {spiffe_id} refused: {result.status.message}")

    def agent_ids(self) -> list[str]:
        """The SPIFFE IDs of the attested agents."""
        shown = json.loads(self.command("agent", "list", "-output", "json").stdout)
        return sorted(
            f"spiffe://{agent['id']['trust_domain']}{agent['id']['path']}"
            for agent in shown.get("agents", [])
        )


TEST_PLUGINS = HERE.parent / "testplugins" / "pyspire_testplugins"


def install_test_plugins(site: Path) -> Path:
    """Install the test plugins (``testplugins/pyspire_testplugins``: the ``journal`` notifier,
    the ``journal_file`` bundle publisher, the ``shaping`` credential composer) into ``site`` as the
    distribution ``pyspire-testplugins``; a process with ``site`` on its ``PYTHONPATH`` finds
    them through their entry points. Returns ``site``."""
    from pyspire_sdk.testing.distributions import install_distribution

    site.mkdir(parents=True, exist_ok=True)
    install_distribution(
        site,
        "pyspire-testplugins",
        {
            "journal": "pyspire_testplugins.notifier",
            "journal_file": "pyspire_testplugins.publisher",
            "shaping": "pyspire_testplugins.composer",
        },
        packages=[TEST_PLUGINS],
    )
    return site


def join_token_agent_id(token: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/spire/agent/join_token/{token}"


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """What a test varies in the agent's configuration file (the join token is a flag).

    ``plugins_toml`` is appended to the file (more plugin tables); ``environment`` replaces the
    process's environment (a ``PYTHONPATH`` with plugin distributions, say)."""

    root: Path
    server_port: int
    bootstrap_bundle: Path
    sync_interval: str = "1s"
    log_level: str = "INFO"
    name: str = "agent"
    log_file: Path | None = None
    admin_socket: bool = False
    plugins_toml: str = ""
    node_attestor: str = "[agent.plugins.node_attestor.join_token]"
    """The agent's one node attestor table (with its settings)."""
    environment: Mapping[str, str] | None = None
    extra: str = ""
    """More of the file, after the [agent] keys (e.g. "[agent.health_checks]" tables)."""
    trust_domain: str = TRUST_DOMAIN

    @property
    def socket_path(self) -> Path:
        return self.root / self.name / "api.sock"

    @property
    def admin_socket_path(self) -> Path:
        return self.root / f"{self.name}-admin" / "admin.sock"

    @property
    def data_dir(self) -> Path:
        return self.root / f"{self.name}-data"

    def write(self) -> Path:
        path = self.root / f"{self.name}.toml"
        path.write_text(
            f"""\
[agent]
trust_domain = "{self.trust_domain}"
server_address = "127.0.0.1"
server_port = {self.server_port}
data_dir = "{self.data_dir}"
socket_path = "{self.socket_path}"
trust_bundle_path = "{self.bootstrap_bundle}"
trust_bundle_format = "pem"
sync_interval = "{self.sync_interval}"
log_level = "{self.log_level}"
{f'log_file = "{self.log_file}"' if self.log_file is not None else ""}
{f'admin_socket_path = "{self.admin_socket_path}"' if self.admin_socket else ""}

{self.extra}
[agent.plugins.key_manager.disk]
{self.node_attestor}
[agent.plugins.workload_attestor.unix]
{self.plugins_toml}"""
        )
        return path


class AgentProcess(Process):
    """``pyspire-agent run``; ready when its Workload API socket exists (the agent opens it
    after attesting or resuming and its first sync)."""

    def __init__(self, settings: AgentSettings) -> None:
        super().__init__(settings.root)
        self.name = settings.name
        self.settings = settings
        self.config = settings.write()

    @property
    def socket_path(self) -> Path:
        return self.settings.socket_path

    @property
    def endpoint(self) -> str:
        """The Workload API address as py-spiffe takes it."""
        return f"unix://{self.socket_path}"

    def launch(self, join_token: str | None = None, *, join_token_file: Path | None = None) -> None:
        """Start without waiting."""
        argv = [str(AGENT), "run", "-config", str(self.config)]
        if join_token is not None:
            argv += ["-joinToken", join_token]
        if join_token_file is not None:
            argv += ["-joinTokenFile", str(join_token_file)]
        self.spawn(argv, self.settings.environment)

    def start(
        self,
        join_token: str | None = None,
        timeout: float = START_TIMEOUT,
        *,
        join_token_file: Path | None = None,
    ) -> None:
        """Start and wait until the Workload API socket exists."""
        self.launch(join_token, join_token_file=join_token_file)

        def listening() -> bool | None:
            self._fail_if_exited("starting")
            return True if self.socket_path.exists() else None

        try:
            wait_for("the agent to serve the workload api", listening, timeout)
        except ProcessError as error:
            self.kill()
            raise ProcessError(f"{error}\n{self.log()}") from None

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``pyspire-agent <argv> -socketPath <socket>``; raises with both streams (and the
        agent's log) unless it exits 0 or ``check`` is false."""
        command = [str(AGENT), *argv, "-socketPath", str(self.socket_path)]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise ProcessError(
                f"'{' '.join(argv)}' did not finish within {CLI_TIMEOUT:g}s\n{self.log()}"
            ) from None
        if check and result.returncode != 0:
            raise ProcessError(
                f"'{' '.join(argv)}' exited {result.returncode}\nstdout: {result.stdout}\n"
                f"stderr: {result.stderr}\nagent log:\n{self.log()}"
            )
        return result


@dataclass
class Deployment:
    """A server and one join-token agent, plus everything they were started with."""

    root: Path
    server: ServerProcess
    agent: AgentProcess
    token: str
    agent_id: str
    extra: list[Process] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        server_settings: ServerSettings,
        agent_settings: AgentSettings,
        entries: Sequence[tuple[str, Sequence[str]]] = (),
    ) -> Deployment:
        """Start a server, write its bundle where the agent bootstraps from, register
        ``entries`` (SPIFFE ID and selectors) under a fresh join token's agent ID, and start
        the agent with that token. When any step fails, everything started is stopped, the
        directory removed, and :class:`ProcessError` raised with every process's log."""
        root = server_settings.root
        server = ServerProcess(server_settings)
        agent = AgentProcess(agent_settings)
        deployed = cls(root=root, server=server, agent=agent, token="", agent_id="")
        try:
            server.start()
            server.write_bundle(agent_settings.bootstrap_bundle)
            deployed.token = server.generate_token()
            deployed.agent_id = join_token_agent_id(deployed.token)
            for spiffe_id, selectors in entries:
                server.create_entry(spiffe_id, deployed.agent_id, *selectors)
            agent.start(join_token=deployed.token)
        except ProcessError as error:
            logs = deployed.logs()
            deployed.stop()
            headline = str(error).splitlines()[0]
            raise ProcessError(f"the deployment did not start: {headline}\n{logs}") from None
        except BaseException:
            deployed.stop()
            raise
        return deployed

    def logs(self) -> str:
        return "\n".join(process.all_logs() for process in [self.server, self.agent, *self.extra])

    def register_early_in_taint_spread(
        self, spiffe_id: str, *selectors: str, timeout: float = 20.0
    ) -> str:
        """Register an entry under the agent with an ID from :func:`early_in_taint_spread`
        (for a test that taints an authority and waits for the re-mint), then wait until the
        agent serves an X509-SVID to this process through the Workload API (``selectors`` must
        match it). Returns the entry ID."""
        from spiffe import WorkloadApiClient
        from spiffe.errors import PySpiffeError

        entry_id = early_in_taint_spread(spiffe_id.rsplit("/", 1)[-1])
        self.server.create_entry(spiffe_id, self.agent_id, *selectors, entry_id=entry_id)

        def issued() -> bool | None:
            try:
                with WorkloadApiClient(socket_path=self.agent.endpoint) as client:
                    client.fetch_x509_svid()
            except PySpiffeError:
                return None
            return True

        wait_for(f"the first X509-SVID of {spiffe_id}", issued, timeout, self.logs())
        return entry_id

    def stop(self) -> None:
        """Kill whatever still runs and remove the directory; safe to call more than once."""
        for process in [*self.extra, self.agent, self.server]:
            process.kill()
        shutil.rmtree(self.root, ignore_errors=True)


# -- workload client processes -------------------------------------------------------------


def run_workload(
    endpoint: str,
    action: str,
    *args: str,
    user: str | None = None,
    group: str | None = None,
    timeout: float = WORKLOAD_TIMEOUT,
) -> dict[str, Any]:
    """Run this module as a workload process and return the JSON object it prints; raises
    :class:`ProcessError` with its output otherwise.

    With ``user`` (and ``group``), the process drops to that uid and gid (and no supplementary
    groups) before it opens the socket, so the agent attests it as that user. It starts as the
    caller and drops privileges itself, rather than being started as ``user``, because the
    interpreter may live where ``user`` cannot read it (a pyenv under /root); the Workload API
    sees the same thing either way: the peer credentials of a process running as ``user``.
    """
    command = [sys.executable, str(HERE)]
    if user is not None:
        command += ["--user", user, "--group", group or user]
    command += [endpoint, action, *args]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
        )
    except subprocess.TimeoutExpired:
        raise ProcessError(f"workload {action!r} did not finish within {timeout:g}s") from None
    if result.returncode != 0:
        raise ProcessError(
            f"workload {action!r} exited {result.returncode}\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}"
        )
    try:
        answer: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise ProcessError(f"workload {action!r} printed no JSON: {result.stdout!r}") from None
    return answer


class WorkloadWatch:
    """A workload process streaming X.509 contexts from ``endpoint``: every update is read in a
    thread as it arrives, with the time it arrived (for measuring how soon a change reaches a
    workload)."""

    def __init__(self, endpoint: str) -> None:
        import threading

        self.updates: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE), endpoint, "watch"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            update = json.loads(line)
            with self._changed:
                self.updates.append(update)
                self._changed.notify_all()

    def wait_for(
        self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float, start: int = 0
    ) -> dict[str, Any]:
        """The first update from index ``start`` on for which ``check`` holds; raises
        :class:`ProcessError` naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for update in self.updates[start:]:
                    if "error" not in update and check(update):
                        return update
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProcessError(
                        f"timed out after {timeout:g}s waiting for {what}; updates: "
                        f"{self.updates[-5:]}"
                    )
                self._changed.wait(remaining)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)


def _drop_privileges(user: str, group: str) -> None:
    """Become ``user``:``group`` with no supplementary groups, for good. Everything the
    workload needs is imported first: after this, files under a private prefix (the
    interpreter's standard library, say) may no longer be readable."""
    import grp
    import pwd

    import cryptography.hazmat.primitives.serialization
    import grpc  # type: ignore[import-untyped]
    import spiffe
    import spiffe.workloadapi.jwt_source
    import spiffe.workloadapi.x509_source

    del cryptography, grpc, spiffe
    uid = pwd.getpwnam(user).pw_uid
    gid = grp.getgrnam(group).gr_gid
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
        raise ProcessError(f"could not become {user}:{group}")


def _rpc_code(error: BaseException) -> str:
    """The gRPC status name behind a py-spiffe error (py-spiffe chains the grpc.RpcError)."""
    cause: BaseException | None = error
    while cause is not None:
        code = getattr(cause, "code", None)
        if callable(code):
            return str(code().name)
        cause = cause.__cause__
    return type(error).__name__


def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def _pem(certificates: Sequence[Any]) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return "".join(cert.public_bytes(Encoding.PEM).decode() for cert in certificates)


def _x509(endpoint: str, out_dir: str) -> dict[str, Any]:
    """The X.509 flow: fetch_x509_svid, X509Source, fetch_x509_bundles; PEMs written to
    ``out_dir`` (svid.pem: leaf then intermediates, bundle.pem: the trust domain's CAs)."""
    from spiffe import TrustDomain, WorkloadApiClient, X509Source

    out = Path(out_dir)
    with WorkloadApiClient(socket_path=endpoint, default_timeout=10) as client:
        svid = client.fetch_x509_svid()
        bundles = client.fetch_x509_bundles()
    bundle = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    if bundle is None:
        raise ProcessError(f"fetch_x509_bundles has no bundle for {TRUST_DOMAIN}")
    (out / "svid.pem").write_text(_pem(svid.cert_chain))
    (out / "bundle.pem").write_text(_pem(sorted(bundle.x509_authorities, key=_serial)))
    with X509Source(socket_path=endpoint, timeout_in_seconds=10) as source:
        source_svid = source.svid
        source_bundles = {
            str(item.trust_domain): sorted(_serial(cert) for cert in item.x509_authorities)
            for item in source.bundles
        }
    return {
        "spiffe_id": str(svid.spiffe_id),
        "serial": str(svid.leaf.serial_number),
        "chain_length": len(svid.cert_chain),
        "bundle_serials": sorted(_serial(cert) for cert in bundle.x509_authorities),
        "source_spiffe_id": str(source_svid.spiffe_id),
        "source_bundles": source_bundles,
    }


def _serial(cert: Any) -> str:
    return str(cert.serial_number)


def _jwt(endpoint: str, first: str, second: str, wrong: str) -> dict[str, Any]:
    """The JWT flow: a JWT-SVID for two audiences, JwtSource, validate_jwt_svid for a right
    and a wrong audience, and local validation against the JwtSource's bundle."""
    from spiffe import JwtSource, JwtSvid, TrustDomain, WorkloadApiClient

    with WorkloadApiClient(socket_path=endpoint, default_timeout=10) as client:
        svid = client.fetch_jwt_svid({first, second})
        validated = client.validate_jwt_svid(svid.token, first)
        try:
            client.validate_jwt_svid(svid.token, wrong)
            wrong_result = "OK"
        except Exception as error:
            wrong_result = _rpc_code(error)
    with JwtSource(socket_path=endpoint, timeout_in_seconds=10) as source:
        source_svid = source.fetch_svid({first})
        bundle = source.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
        if bundle is None:
            raise ProcessError(f"the JwtSource has no bundle for {TRUST_DOMAIN}")
        locally = JwtSvid.parse_and_validate(source_svid.token, bundle, {first})
        bundle_trust_domains = sorted(str(item.trust_domain) for item in source.bundles)
    claims = _jwt_claims(svid.token)
    return {
        "spiffe_id": str(svid.spiffe_id),
        "aud": claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]],
        "sub": claims["sub"],
        "validated_spiffe_id": str(validated.spiffe_id),
        "wrong_audience": wrong_result,
        "source_spiffe_id": str(source_svid.spiffe_id),
        "source_aud": sorted(source_svid.audience),
        "locally_validated_spiffe_id": str(locally.spiffe_id),
        "bundle_trust_domains": bundle_trust_domains,
        "bundle_key_ids": sorted(bundle.jwt_authorities),
    }


def _ids(endpoint: str) -> dict[str, Any]:
    """Every X509-SVID the caller gets: SPIFFE IDs and serials, default first."""
    from spiffe import WorkloadApiClient

    with WorkloadApiClient(socket_path=endpoint, default_timeout=10) as client:
        svids = client.fetch_x509_svids()
    return {
        "spiffe_ids": [str(svid.spiffe_id) for svid in svids],
        "serials": [str(svid.leaf.serial_number) for svid in svids],
    }


def _denied(endpoint: str) -> dict[str, Any]:
    """How every call fails for this caller: the gRPC status of each, and who we are."""
    from spiffe import WorkloadApiClient

    outcome: dict[str, Any] = {"uid": os.getuid(), "gid": os.getgid()}
    with WorkloadApiClient(socket_path=endpoint, default_timeout=10) as client:
        calls: dict[str, Callable[[], object]] = {
            "fetch_x509_svid": client.fetch_x509_svid,
            "fetch_x509_bundles": client.fetch_x509_bundles,
            "fetch_jwt_svid": lambda: client.fetch_jwt_svid({"spiffe://example.org/db"}),
            "fetch_jwt_bundles": client.fetch_jwt_bundles,
        }
        for name, call in calls.items():
            try:
                call()
                outcome[name] = "OK"
            except Exception as error:
                outcome[name] = _rpc_code(error)
    return outcome


def _watch(endpoint: str) -> dict[str, Any]:
    """Stream X.509 contexts and print one JSON line per update as it arrives: the wall-clock
    time it arrived, the SPIFFE IDs and serials; runs until killed (never returns)."""
    import threading

    from spiffe import WorkloadApiClient

    def arrived(context: Any) -> None:
        line = {
            "at": time.time(),
            "spiffe_ids": [str(svid.spiffe_id) for svid in context.x509_svids],
            "serials": [str(svid.leaf.serial_number) for svid in context.x509_svids],
        }
        print(json.dumps(line), flush=True)

    def failed(error: Exception) -> None:
        print(json.dumps({"at": time.time(), "error": str(error)}), flush=True)

    with WorkloadApiClient(socket_path=endpoint, default_timeout=10) as client:
        client.stream_x509_contexts(arrived, failed)
        threading.Event().wait()
    return {}


def workload_main(argv: Sequence[str]) -> int:
    """``[--user U --group G] <endpoint> <action> <args>`` with the actions ``x509 <out_dir>``,
    ``jwt <aud> <aud> <wrong_aud>``, ``ids`` and ``denied``: print the outcome as one JSON
    object; ``watch`` prints a JSON line per X.509 context update until killed (see
    :class:`WorkloadWatch`)."""
    arguments = list(argv)
    if arguments[:1] == ["--user"]:
        _drop_privileges(arguments[1], arguments[3])
        arguments = arguments[4:]
    endpoint, action, *args = arguments
    actions: dict[str, Callable[..., dict[str, Any]]] = {
        "x509": _x509,
        "jwt": _jwt,
        "ids": _ids,
        "denied": _denied,
        "watch": _watch,
    }
    print(json.dumps(actions[action](endpoint, *args)))
    return 0


if __name__ == "__main__":
    sys.exit(workload_main(sys.argv[1:]))
