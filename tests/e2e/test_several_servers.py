"""Two servers of one trust domain on one PostgreSQL, behind a TCP load balancer, as real
processes.

Two servers start one after the other on one fresh schema, each with its own data directory,
key manager and CA; one agent (syncing every 250 ms) reaches them only through
:class:`~tcp_proxy.TcpProxy`. The tests run in file order on that one deployment:

- the shared bundle holds both servers' CAs and JWT keys, and an agent attested through the
  second server is served by the first, which started before the second's CA existed;
- an entry created through the server the agent is *not* connected to reaches the workload's
  X.509 stream within a second (the change travels by LISTEN/NOTIFY to the agent's server);
- one join token, attestations through both servers at once: exactly one succeeds;
- the server the agent is connected to is killed: the workload keeps its SVIDs, the agent
  reconnects through the proxy to the other server and keeps rotating, and is not attested
  again.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from channels import attest_join_token, race_join_token, server_client
from processes import (
    TRUST_DOMAIN,
    AgentProcess,
    AgentSettings,
    ProcessError,
    ServerProcess,
    ServerSettings,
    WorkloadWatch,
    free_port,
    join_token_agent_id,
    run_workload,
    short_temp_dir,
    wait_for,
)
from pyspire_datastore_postgres.testing import ServerUnavailableError, find_server
from tcp_proxy import TcpProxy

from pyspire_sdk.errors import UnavailableError

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WEB = f"spiffe://{TRUST_DOMAIN}/web"
FRESH = f"spiffe://{TRUST_DOMAIN}/fresh"
CALLER_SELECTOR = f"unix:uid:{os.getuid()}"
WORKLOAD_SVID_TTL = 8
PROPAGATION_TARGET = 1.0
RACERS_PER_SERVER = 6
FIRST_ADDRESS = 60


@dataclass
class Cluster:
    """Two servers on one schema, the proxy in front of them, one agent and a workload
    streaming its X.509 contexts."""

    root: Path
    server: str
    schema: str
    servers: list[ServerProcess]
    proxy: TcpProxy
    agent: AgentProcess
    agent_id: str = ""
    watch: WorkloadWatch | None = None
    killed: list[ServerProcess] = field(default_factory=list)

    def by_port(self, port: int) -> ServerProcess:
        return next(s for s in self.servers if s.settings.port == port)

    def connected(self) -> ServerProcess:
        """The one server the agent talks to through the proxy: its syncs (every 250 ms) keep
        that connection busy, while its attestation connection may idle on the other."""
        used = self.proxy.recently_used(within=1.0)
        if len(used) != 1:
            raise ProcessError(f"the agent talks to {len(used)} servers: {sorted(used)}")
        return self.by_port(used.pop())

    def other(self, server: ServerProcess) -> ServerProcess:
        return next(s for s in self.servers if s is not server)

    def process_logs(self) -> str:
        return "\n".join(p.all_logs() for p in [*self.servers, self.agent])

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        self.agent.kill()
        self.proxy.stop()
        for server in self.servers:
            server.kill()
        asyncio.run(_drop_schema(self.server, self.schema))
        shutil.rmtree(self.root, ignore_errors=True)


async def _create_schema(server: str, schema: str) -> None:
    admin = await asyncpg.connect(server, timeout=5)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await admin.close()


async def _drop_schema(server: str, schema: str) -> None:
    admin = await asyncpg.connect(server, timeout=5)
    try:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await admin.close()


def postgres_table(server: str, schema: str) -> str:
    return (
        "[server.plugins.datastore.postgres]\n"
        f'connection_string = "{server}?search_path={schema}"\n'
        "max_open_conns = 8\nmax_idle_conns = 1\n"
    )


def create_entry(server: ServerProcess, spiffe_id: str, parent_id: str) -> None:
    server.cli(
        "entry",
        "create",
        "-spiffeID",
        spiffe_id,
        "-parentID",
        parent_id,
        "-selector",
        CALLER_SELECTOR,
        "-x509SVIDTTL",
        str(WORKLOAD_SVID_TTL),
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        server = asyncio.run(find_server())
    except ServerUnavailableError as error:
        pytest.skip(str(error))
    schema = f"pyspire_servers_{secrets.token_hex(6)}"
    asyncio.run(_create_schema(server, schema))
    root = short_temp_dir()
    servers = []
    for name in ("a", "b"):
        (root / name).mkdir()
        settings = ServerSettings(
            root=root / name, port=free_port(), datastore=postgres_table(server, schema)
        )
        servers.append(ServerProcess(settings))
    proxy = TcpProxy([s.settings.port for s in servers]).start()
    agent = AgentProcess(
        AgentSettings(
            root=root,
            server_port=proxy.port,
            bootstrap_bundle=root / "bootstrap.pem",
            sync_interval="250ms",
        )
    )
    deployed = Cluster(root, server, schema, servers, proxy, agent)
    try:
        for started in servers:  # one after the other: the second's CA comes later
            started.start()
        first = servers[0]
        first.write_bundle(agent.settings.bootstrap_bundle)
        token = first.generate_token()
        deployed.agent_id = join_token_agent_id(token)
        create_entry(first, WEB, deployed.agent_id)
        agent.start(join_token=token)
        deployed.watch = WorkloadWatch(agent.endpoint)
        deployed.watch.wait_for("a first workload svid", lambda u: WEB in u["spiffe_ids"], 15)
    except BaseException:
        logs = deployed.process_logs()
        deployed.stop()
        if isinstance(BaseException, ProcessError):
            pytest.fail(f"the deployment did not start\n{logs}")
        raise
    try:
        yield deployed
    finally:
        deployed.stop()


def test_the_bundle_holds_both_servers_cas_and_jwt_keys(cluster: Cluster) -> None:
    from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb

    bundles = [
        server.api(lambda client: client.bundle.get_bundle(bundle_pb.GetBundleRequest()))
        for server in cluster.servers
    ]
    assert len(bundles[0].x509_authorities) == 2, bundles[0]
    assert len(bundles[0].jwt_authorities) == 2, bundles[0]
    assert bundles[0].x509_authorities == bundles[1].x509_authorities


def test_an_entry_made_through_one_server_reaches_an_agent_on_the_other_within_a_second(
    cluster: Cluster,
) -> None:
    assert cluster.watch is not None
    connected = wait_for("the agent to settle on one server", _connected_or_none(cluster), 10)
    elsewhere = cluster.other(connected)
    seen = len(cluster.watch.updates)

    started = time.time()
    elsewhere.create_entry(FRESH, cluster.agent_id, CALLER_SELECTOR)
    update = cluster.watch.wait_for(
        "the new entry in the workload's stream", lambda u: FRESH in u["spiffe_ids"], 10, seen
    )

    # From before the admin call to the workload holding the SVID: the change commits on one
    # server, is signalled to the other, read into its index, fetched by the agent's next sync
    # (every 250 ms), signed and streamed.
    latency = update["at"] - started
    print(f"entry through one server -> workload on the other: {latency * 1000:.0f} ms")
    assert latency < PROPAGATION_TARGET, latency


def test_one_join_token_attested_through_both_servers_at_once_succeeds_once(
    cluster: Cluster,
) -> None:
    before = cluster.servers[0].agent_ids()
    token = cluster.servers[1].generate_token()
    ports = [server.settings.port for server in cluster.servers]

    outcomes = asyncio.run(race_join_token(ports, token, RACERS_PER_SERVER, FIRST_ADDRESS))

    counted = Counter(outcomes)
    assert counted["OK"] == 1, counted
    assert "UNKNOWN" not in counted, counted
    after = cluster.servers[0].agent_ids()
    assert len(after) == len(before) + 1
    assert cluster.servers[1].agent_ids() == after


def test_an_agent_attested_through_one_server_is_served_by_the_other(cluster: Cluster) -> None:
    """The second server published its CA after the first started: the first must trust the
    agent SVIDs the second signs (its TLS follows the shared bundle)."""
    first, second = cluster.servers
    token = first.generate_token()
    authorities = trust_anchors(first)

    async def exchange() -> int:
        for _ in range(3):  # the server admits one attestation per second from 127.0.0.1
            try:
                chain, key = await attest_join_token(
                    second.settings.port, authorities, token, cluster.root
                )
                break
            except UnavailableError:
                await asyncio.sleep(1.1)
        else:
            raise AssertionError("the agent was not attested through the second server")
        client = server_client(first.settings.port, authorities)
        client.use_identity(chain, key)
        try:
            return len(await client.fetch_authorized_entries())
        finally:
            await client.close()

    assert asyncio.run(exchange()) == 0  # served: no entries name this agent


def trust_anchors(server: ServerProcess) -> list[bytes]:
    from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb

    bundle = server.api(lambda client: client.bundle.get_bundle(bundle_pb.GetBundleRequest()))
    return [authority.asn1 for authority in bundle.x509_authorities]


def test_killing_the_agents_server_keeps_workloads_served_and_rotating(cluster: Cluster) -> None:
    assert cluster.watch is not None
    connected = wait_for("the agent to settle on one server", _connected_or_none(cluster), 10)
    survivor = cluster.other(connected)
    before_kill = cluster.watch.updates[-1]
    accepted = cluster.proxy.accepted()[survivor.settings.port]

    connected.kill()
    killed_at = time.time()

    # The workload is served from the agent's cache at once.
    served = run_workload(cluster.agent.endpoint, "ids")
    assert sorted(served["spiffe_ids"]) == sorted([WEB, FRESH])
    # And keeps rotating: new serials, minted through the surviving server.
    web = before_kill["spiffe_ids"].index(WEB)
    old_serial = before_kill["serials"][web]
    rotated = cluster.watch.wait_for(
        "a rotated workload svid after the kill",
        lambda u: (
            u["at"] > killed_at
            and WEB in u["spiffe_ids"]
            and u["serials"][u["spiffe_ids"].index(WEB)] != old_serial
        ),
        WORKLOAD_SVID_TTL + 10,
    )
    assert rotated["at"] > killed_at
    assert cluster.proxy.accepted()[survivor.settings.port] > accepted
    assert cluster.connected() is survivor

    # Nothing was attested again: one attestation in the agent's log, and the agent's own
    # ID is unchanged on the surviving server.
    log = cluster.agent.log()
    assert log.count("agent SVID obtained by attestation") == 1, log
    assert cluster.agent_id in survivor.agent_ids()


def _connected_or_none(cluster: Cluster):  # type: ignore[no-untyped-def]
    def check() -> ServerProcess | None:
        try:
            return cluster.connected()
        except ProcessError:
            return None

    return check
