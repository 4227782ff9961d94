"""Two server processes on one SQLite file: an agent attested through the second is served by
the first at once, not after the first's next bundle refresh.

The first server starts, then the second, which adds its CA to the shared bundle. SQLite tells
no server of another's writes, so the first trusts that CA only once it reads the bundle again.
An agent attested through the second holds an SVID of its CA; its connection to the first
breaks after the TLS handshake (TLS 1.3: the client sends its request before the server's
verdict) until then. The client certificate that failed verification makes the first read the
bundle at once (``BundleFeed.unverified_peer``), so the agent's next connection is served,
where without it every connection broke until the 30 s refresh (``BUNDLE_REFRESH``); and the
agent's client makes a call whose connection broke once more after ``BROKEN_CONNECTION_PAUSE``,
so its first call already succeeds.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from channels import attest_join_token, server_client
from processes import ServerProcess, ServerSettings, free_port, short_temp_dir
from test_several_servers import trust_anchors

from pyspire.server.bundle_feed import BUNDLE_REFRESH
from pyspire_sdk.errors import UnavailableError

pytestmark = pytest.mark.slow

SERVED_WITHIN = 5.0
"""Seconds from the agent's first call to the first server until it must be served."""
RETRY_PAUSE = 0.1


@dataclass
class Pair:
    """The two servers, and when the first began to start (its bundle is read from then)."""

    first: ServerProcess
    second: ServerProcess
    first_starting: float


@pytest.fixture(scope="module")
def servers() -> Iterator[Pair]:
    root = short_temp_dir()
    first_starting = time.monotonic()
    shared = f'[server.plugins.datastore.sqlite]\ndatabase_path = "{root / "shared.sqlite3"}"'
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):  # one after the other: the second's CA comes later
            (root / name).mkdir()
            server = ServerProcess(
                ServerSettings(root=root / name, port=free_port(), datastore=shared)
            )
            started.append(server)
            server.start()
        yield Pair(started[0], started[1], first_starting)
    finally:
        for server in started:
            server.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_an_agent_of_the_second_servers_ca_is_served_by_the_first_at_once(
    servers: Pair,
) -> None:
    first, second = servers.first, servers.second
    authorities = trust_anchors(second)  # started last: its bundle holds both CAs
    assert len(authorities) == 2
    token = first.generate_token()

    async def exchange() -> tuple[float, float, int]:
        chain, key = await attest_join_token(
            second.settings.port, authorities, token, second.settings.root
        )
        began = time.monotonic()
        broken = 0
        while True:
            client = server_client(first.settings.port, authorities)
            client.use_identity(chain, key)
            try:
                await client.fetch_authorized_entries()
                return began, time.monotonic(), broken
            except UnavailableError:
                broken += 1
                if time.monotonic() - began > SERVED_WITHIN:
                    raise
                await asyncio.sleep(RETRY_PAUSE)
            finally:
                await client.close()

    began, served, broken = asyncio.run(exchange())
    # The first server's periodic refresh cannot have taught it the second's CA meanwhile.
    print(f"served after {served - began:.3f} s and {broken} broken connection(s)")
    assert served - servers.first_starting < BUNDLE_REFRESH.total_seconds(), (
        "the test ran too late to tell the recheck from the periodic refresh"
    )
    assert served - began < SERVED_WITHIN
    # The agent's client made the broken call once more after a pause, and was served then.
    assert broken == 0, f"{broken} calls failed before the first server served the agent"
