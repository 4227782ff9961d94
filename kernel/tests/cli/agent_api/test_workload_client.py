"""Finding the Workload API endpoint and turning failures into one clear line."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from grpclib.server import Server
from pyspire_workloadattestor_unix import UnixAttestor, UnixAttestorConfig

from pyspire.agent.workload import WorkloadApiService, WorkloadAttestation
from pyspire.cli.workload_client import (
    DEFAULT_SOCKET_PATH,
    Endpoint,
    WorkloadApiError,
    connect,
    parse_endpoint_address,
    resolve_endpoint,
)
from pyspire.transport.calls import InFlight, WithCallContext
from pyspire_sdk.testing import FakeClock, make_host_services

from .conftest import Agent, run_agent_cli
from .pki import FakeIdentitySource


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("unix:///tmp/agent.sock", Endpoint(path=Path("/tmp/agent.sock"))),
        ("unix:/tmp/agent.sock", Endpoint(path=Path("/tmp/agent.sock"))),
        ("tcp://127.0.0.1:8000", Endpoint(host="127.0.0.1", port=8000)),
        ("tcp://[::1]:8000", Endpoint(host="::1", port=8000)),
    ],
)
def test_valid_endpoint_addresses(address: str, expected: Endpoint) -> None:
    assert parse_endpoint_address(address) == expected


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("/tmp/agent.sock", "expected unix:///path or tcp://IP:port"),
        ("blah", "expected unix:///path or tcp://IP:port"),
        ("unix://tmp/agent.sock", "a unix address has no authority"),
        ("unix:opaque", "a unix address needs an absolute path"),
        ("unix://", "a unix address needs an absolute path"),
        ("unix:///tmp/a.sock?x=1", "a query or fragment is not allowed"),
        ("unix:///tmp/a.sock#frag", "a query or fragment is not allowed"),
        ("tcp:opaque", "a tcp address needs an IP address and a port"),
        ("tcp://", "a tcp address needs an IP address and a port"),
        ("tcp://1.2.3.4:5?whatever", "a query or fragment is not allowed"),
        ("tcp://1.2.3.4:5#whatever", "a query or fragment is not allowed"),
        ("tcp://john:doe@1.2.3.4:5/path", "a tcp address has no user information"),
        ("tcp://1.2.3.4:5/path", "a tcp address has no path"),
        ("tcp://foo:5", "the host 'foo' is not an IP address"),
        ("tcp://1.2.3.4", "a tcp address needs a port"),
        ("http://1.2.3.4:5", "unsupported scheme 'http'"),
    ],
)
def test_invalid_endpoint_addresses(address: str, reason: str) -> None:
    with pytest.raises(WorkloadApiError) as raised:
        parse_endpoint_address(address)
    assert str(raised.value).startswith(f"invalid SPIFFE_ENDPOINT_SOCKET {address!r}: {reason}")


def test_the_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    environ = {"SPIFFE_ENDPOINT_SOCKET": "unix:///run/from-env.sock"}
    assert resolve_endpoint(Path("/run/flag.sock"), environ) == Endpoint(
        path=Path("/run/flag.sock")
    )
    assert resolve_endpoint(None, environ) == Endpoint(path=Path("/run/from-env.sock"))
    assert resolve_endpoint(None, {}) == Endpoint(path=DEFAULT_SOCKET_PATH)
    assert resolve_endpoint(None, {"SPIFFE_ENDPOINT_SOCKET": ""}) == Endpoint(
        path=DEFAULT_SOCKET_PATH
    )


def test_endpoint_text() -> None:
    assert str(Endpoint(path=Path("/a/b.sock"))) == "/a/b.sock"
    assert str(Endpoint(host="127.0.0.1", port=81)) == "127.0.0.1:81"
    assert str(Endpoint(host="::1", port=81)) == "[::1]:81"
    with pytest.raises(ValueError, match="either a socket path or a host and a port"):
        Endpoint()


async def test_the_environment_names_the_socket(agent: Agent) -> None:
    result = await run_agent_cli(
        "api", "fetch", environ={"SPIFFE_ENDPOINT_SOCKET": f"unix://{agent.socket_path}"}
    )
    assert result.status == 0, result.err
    assert "SPIFFE ID:\t\tspiffe://example.org/workload" in result.out


async def test_an_invalid_environment_address_is_reported(agent: Agent) -> None:
    result = await run_agent_cli(
        "api", "fetch", environ={"SPIFFE_ENDPOINT_SOCKET": str(agent.socket_path)}
    )
    assert result.status == 1
    assert result.err.startswith("pyspire-agent: error: invalid SPIFFE_ENDPOINT_SOCKET")
    assert result.out == ""


async def test_the_flag_overrides_a_broken_environment(agent: Agent) -> None:
    result = await agent.cli("api", "fetch", environ={"SPIFFE_ENDPOINT_SOCKET": "nonsense"})
    assert result.status == 0, result.err


async def test_no_socket(tmp_path: Path) -> None:
    missing = tmp_path / "api.sock"
    result = await run_agent_cli("api", "fetch", "-socketPath", str(missing))
    assert result.status == 1
    assert result.err == (
        f"pyspire-agent: error: cannot reach the agent at {missing}: no such socket\n"
    )


async def test_not_a_socket(tmp_path: Path) -> None:
    plain = tmp_path / "file"
    plain.write_text("")
    result = await run_agent_cli("api", "fetch", "-socketPath", str(plain))
    assert result.status == 1
    assert (
        result.err
        == f"pyspire-agent: error: cannot reach the agent at {plain}: not a unix socket\n"
    )


async def test_connection_refused(socket_dir: Path) -> None:
    """A socket file nobody listens on any more."""
    path = socket_dir / "dead.sock"
    server = await asyncio.start_unix_server(lambda reader, writer: None, path=str(path))
    server.close()
    await server.wait_closed()
    if not path.exists():
        pytest.skip("the closed server removed its socket file")
    result = await run_agent_cli("api", "fetch", "-socketPath", str(path))
    assert result.status == 1
    assert result.err == (
        f"pyspire-agent: error: cannot reach the agent at {path}: connection refused\n"
    )


@contextlib.asynccontextmanager
async def silent_server(path: Path) -> AsyncIterator[None]:
    """A unix socket that accepts connections and never says anything."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_unix_server(hold, path=str(path))
    try:
        yield
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_timeout(socket_dir: Path) -> None:
    path = socket_dir / "silent.sock"
    async with silent_server(path):
        result = await run_agent_cli("api", "fetch", "-socketPath", str(path), "-timeout", "300ms")
    assert result.status == 1
    assert result.err == (
        f"pyspire-agent: error: the agent at {path} did not answer within 300ms\n"
    )


@pytest.mark.parametrize("value", ["soon", "-1s", "0s"])
async def test_invalid_timeout_is_a_usage_error(agent: Agent, value: str) -> None:
    result = await agent.cli("api", "fetch", f"-timeout={value}")
    assert result.status == 2
    assert "argument -timeout/--timeout: invalid duration" in result.err


async def test_no_identity_is_one_line(agent: Agent) -> None:
    agent.source.publish(identities=())
    result = await agent.cli("api", "fetch", "x509")
    assert result.status == 1
    assert result.err == "pyspire-agent: error: no identity issued (permission denied)\n"


async def test_client_reports_grpc_status_and_reason(agent: Agent) -> None:
    agent.source.publish(identities=())
    async with connect(Endpoint(path=agent.socket_path), timedelta(seconds=5)) as client:
        with pytest.raises(WorkloadApiError) as raised:
            await client.fetch_x509_bundles()
    assert raised.value.status is not None
    assert raised.value.status.name == "PERMISSION_DENIED"
    assert raised.value.reason == "no identity issued"


async def test_tcp_endpoint_from_the_environment(
    source: FakeIdentitySource, clock: FakeClock, tmp_path: Path
) -> None:
    """A TCP endpoint is reached in plaintext; this agent cannot attest a TCP caller (no peer
    credentials), so it answers UNAVAILABLE, which a shallow health check counts as alive."""
    unix = UnixAttestor()
    await unix.configure(UnixAttestorConfig(), make_host_services(tmp_path, plugin_name="unix"))
    service = WorkloadApiService(source, WorkloadAttestation([("unix", unix)], timeout=5), clock)
    server = Server([WithCallContext(service, service.gate, InFlight())])
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    await server.start(sock=listener)
    try:
        environ = {"SPIFFE_ENDPOINT_SOCKET": f"tcp://127.0.0.1:{port}"}
        fetched = await run_agent_cli("api", "fetch", environ=environ)
        assert fetched.status == 1
        assert fetched.err == "pyspire-agent: error: workload attestation failed (unavailable)\n"
        alive = await run_agent_cli("healthcheck", "-shallow", environ=environ)
        assert alive.status == 0, alive.err
    finally:
        service.stop()
        server.close()
        await server.wait_closed()
