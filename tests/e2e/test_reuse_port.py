"""Two server processes on one port with ``reuse_port``, on one PostgreSQL schema.

Both servers listen on the same ``127.0.0.1`` port through ``SO_REUSEPORT``, each with its own
data directory, admin socket and CA, and log every call (``audit_log_enabled``). One agent is
attested through whichever server the kernel hands its connection to; then it opens
:data:`CONNECTIONS` connections of its own, each fetching its authorized entries. Both servers
must have served some of them, so the server that did not attest the agent accepted its SVID.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import Iterator

import pytest
from channels import attest_join_token, server_client
from processes import ServerProcess, ServerSettings, free_port, short_temp_dir
from pyspire_datastore_postgres.testing import ServerUnavailableError, find_server
from test_several_servers import _create_schema, _drop_schema, postgres_table, trust_anchors

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CONNECTIONS = 16
"""Connections the agent opens after attesting: the kernel picks a server for each by a hash of
its addresses and ports, so all of them reach one server with probability 2**-15."""
FETCH = "method=/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries"


@pytest.fixture(scope="module")
def servers() -> Iterator[list[ServerProcess]]:
    try:
        database = asyncio.run(find_server())
    except ServerUnavailableError as error:
        pytest.skip(str(error))
    schema = f"pyspire_reuse_port_{secrets.token_hex(6)}"
    asyncio.run(_create_schema(database, schema))
    root = short_temp_dir()
    port = free_port()
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            (root / name).mkdir()
            settings = ServerSettings(
                root=root / name,
                port=port,
                datastore=postgres_table(database, schema),
                extra="reuse_port = true\naudit_log_enabled = true",
            )
            server = ServerProcess(settings)
            started.append(server)
            server.start()
        yield started
    finally:
        for server in started:
            server.kill()
        asyncio.run(_drop_schema(database, schema))
        shutil.rmtree(root, ignore_errors=True)


def test_both_servers_serve_an_agent_attested_through_one(servers: list[ServerProcess]) -> None:
    first, second = servers
    port = first.settings.port
    assert second.settings.port == port
    token = first.generate_token()
    authorities = trust_anchors(second)  # started last: the bundle held both CAs

    async def exchange() -> tuple[str, list[int]]:
        chain, key = await attest_join_token(port, authorities, token, first.settings.root)
        counts = []
        for _ in range(CONNECTIONS):
            client = server_client(port, authorities)
            client.use_identity(chain, key)
            try:
                counts.append(len(await client.fetch_authorized_entries()))
            finally:
                await client.close()
        return spiffe_id_of_chain(chain), counts

    agent_id, counts = asyncio.run(exchange())
    assert counts == [0] * CONNECTIONS  # every call served: no entries name this agent

    attested_by = [s for s in servers if f"agent attested {agent_id}" in plain(s.log())]
    assert len(attested_by) == 1, [s.log() for s in servers]
    served = [fetches(server, agent_id) for server in servers]
    assert sum(served) == CONNECTIONS, served
    assert all(served), f"one server served every connection: {served}"


def fetches(server: ServerProcess, agent_id: str) -> int:
    """Calls to SyncAuthorizedEntries by ``agent_id`` in ``server``'s audit log."""
    return sum(
        1
        for line in server.log().splitlines()
        if FETCH in line and f"caller_id={agent_id}" in line and "status_code=OK" in line
    )


def plain(log: str) -> str:
    """The log with the agent's attestation line reduced to ``agent attested <id>``."""
    return "\n".join(
        f"agent attested {line.split('agent_id=')[1].split()[0]}"
        for line in log.splitlines()
        if "agent attested" in line and "agent_id=" in line
    )


def spiffe_id_of_chain(chain: tuple[bytes, ...]) -> str:
    from pyspire.transport.tls import spiffe_id_of

    return str(spiffe_id_of(chain[0]))
