"""Connections that come to nothing must not cost the agent or the server anything lasting.

Workload API: connection after connection calls FetchX509SVID without the security header, is
refused (INVALID_ARGUMENT) and closes. Afterwards the agent's descriptor count is back at its
baseline, its memory grew by less than 50 MB, and it still serves a workload.

Server: thousands of TLS connections complete the handshake without a client certificate and
then stay silent. While they are open the server still answers its agent and its admin socket;
once they close, its descriptor count is back at its baseline, and its memory (at the peak, or
after) grew by less than 50 MB. How many of the silent connections the server closed by itself
is reported.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from figures import Figures, mib
from forms import by_form
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    Process,
    ServerSettings,
    free_port,
    short_temp_dir,
    wait_for,
)
from spiffe import WorkloadApiClient
from workload import fetch

from pyspire.proto.gen import workload as pb
from pyspire.transport.tls import ALPN

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

WORKLOAD = f"spiffe://{TRUST_DOMAIN}/churn"
FETCH_X509_SVID = "/SpiffeWorkloadAPI/FetchX509SVID"
MAX_RSS_GROWTH = 50 * 1024 * 1024
SETTLE_TIMEOUT = 20.0
"""How long descriptors may take to return to their baseline after the clients are gone."""
PARALLEL = 25
"""Rejected connections in flight at once."""


@dataclass(frozen=True)
class Churn:
    rejected: int
    idle: int
    hold: float
    """Seconds the idle connections stay open (and silent)."""


CHURN = by_form(
    quick=Churn(rejected=1000, idle=300, hold=2.0),
    full=Churn(rejected=10_000, idle=3000, hold=30.0),
)


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """One server and agent for both scenarios: each measures against its own baseline."""
    root = short_temp_dir()
    port = free_port()
    deployed = Deployment.start(
        ServerSettings(root=root, port=port),
        AgentSettings(root=root, server_port=port, bootstrap_bundle=root / "bootstrap.pem"),
        [(WORKLOAD, [f"unix:uid:{os.getuid()}"])],
    )
    try:
        yield deployed
    finally:
        deployed.stop()


def _served(deployment: Deployment) -> bool:
    with WorkloadApiClient(socket_path=deployment.agent.endpoint) as client:
        return fetch(client, TRUST_DOMAIN).valid


def _settled(process: Process, baseline: int) -> int:
    """Wait (bounded) for ``process``'s descriptor count to reach ``baseline``; the count."""
    try:
        return wait_for(
            f"the {process.name}'s descriptors to return to {baseline}",
            lambda: count if (count := process.fd_count()) <= baseline else None,
            SETTLE_TIMEOUT,
        )
    except Exception:
        return process.fd_count()


# -- the Workload API ----------------------------------------------------------------------------


async def _rejected_call(socket_path: str) -> str:
    channel = Channel(path=socket_path)
    try:
        async with channel.request(
            FETCH_X509_SVID,
            Cardinality.UNARY_STREAM,
            pb.X509SvidRequest,
            pb.X509SvidResponse,
            timeout=10,
        ) as stream:
            await stream.send_message(pb.X509SvidRequest(), end=True)
            await stream.recv_message()
            return "OK"
    except GRPCError as error:
        return error.status.name
    except Exception as error:
        return type(error).__name__
    finally:
        channel.close()


async def _reject_many(socket_path: str, count: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            outcomes[await _rejected_call(socket_path)] += 1

    await asyncio.gather(*(worker() for _ in range(PARALLEL)))
    return outcomes


def test_rejected_workload_api_connections(deployment: Deployment, figures: Figures) -> None:
    agent = deployment.agent
    assert _served(deployment)
    fds_before, rss_before = agent.fd_count(), agent.rss_bytes()

    started = time.monotonic()
    outcomes = asyncio.run(_reject_many(str(agent.socket_path), CHURN.rejected))
    elapsed = time.monotonic() - started
    fds_peak_after = agent.fd_count()
    fds_after = _settled(agent, fds_before)
    rss_after = agent.rss_bytes()
    still_serves = _served(deployment)
    figures.add(
        connections=CHURN.rejected,
        per_second=CHURN.rejected / elapsed,
        statuses=",".join(f"{name}:{n}" for name, n in sorted(outcomes.items())),
        agent_fds=f"{fds_before}->{fds_peak_after}->{fds_after}",
        agent_rss_mib=f"{mib(rss_before):.1f}->{mib(rss_after):.1f}",
        rss_growth_mib=mib(rss_after - rss_before),
        aim_rss_growth_mib=mib(MAX_RSS_GROWTH),
        still_serves=still_serves,
    )
    figures.report()

    assert outcomes == Counter({"INVALID_ARGUMENT": CHURN.rejected})
    assert fds_after <= fds_before
    assert rss_after - rss_before < MAX_RSS_GROWTH
    assert still_serves


# -- the server's TLS listener -------------------------------------------------------------------


def _anonymous_context() -> ssl.SSLContext:
    """TLS without a client certificate, not checking the server's: a stranger's connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(ALPN)
    return context


async def _hold_idle(
    port: int, count: int, hold: float, during: Callable[[], bool]
) -> tuple[int, int, bool]:
    """Open ``count`` TLS connections, run ``during`` (a callable returning a value kept in
    the result's last slot) after ``hold`` seconds, then close them all: (opened, closed by
    the server meanwhile, value of ``during``)."""
    context = _anonymous_context()
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    failed = 0
    for _ in range(count):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        except (OSError, ssl.SSLError):
            failed += 1
            continue
        readers.append(reader)
        writers.append(writer)
    await asyncio.sleep(hold)
    value = await asyncio.to_thread(during)
    closed_by_server = sum(1 for reader in readers if reader.at_eof())
    for writer in writers:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    return len(writers), closed_by_server, value


def test_idle_unauthenticated_tls_connections(deployment: Deployment, figures: Figures) -> None:
    server = deployment.server
    fds_before, rss_before = server.fd_count(), server.rss_bytes()
    peak: dict[str, int] = {}

    def while_open() -> bool:
        peak["fds"] = server.fd_count()
        peak["rss"] = server.rss_bytes()
        healthy = server.cli("healthcheck", check=False).returncode == 0
        return healthy and _served(deployment)

    opened, closed_by_server, answered = asyncio.run(
        _hold_idle(server.settings.port, CHURN.idle, CHURN.hold, while_open)
    )
    fds_after = _settled(server, fds_before)
    rss_after = server.rss_bytes()
    growth = max(peak["rss"], rss_after) - rss_before
    figures.add(
        connections=CHURN.idle,
        opened=opened,
        refused_at_handshake=CHURN.idle - opened,
        closed_by_server=closed_by_server,
        held_s=CHURN.hold,
        answered_while_open=answered,
        server_fds=f"{fds_before}->{peak['fds']}->{fds_after}",
        server_rss_mib=f"{mib(rss_before):.1f}->{mib(peak['rss']):.1f}->{mib(rss_after):.1f}",
        rss_growth_mib=mib(growth),
        aim_rss_growth_mib=mib(MAX_RSS_GROWTH),
    )
    figures.report()

    assert answered, "the server stopped answering while the idle connections were open"
    assert fds_after <= fds_before
    assert growth < MAX_RSS_GROWTH, f"the server's memory grew by {mib(growth):.0f} MiB"
