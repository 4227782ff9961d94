"""What the server must hold before agents come: join tokens and entries, via the admin API.

Tokens are chosen here (``load-<run>-<index>``), so each agent's SPIFFE ID, and so the parent
of its entries, is known before it attests. Entry ``k`` of agent ``i`` is
``spiffe://<td>/load/agent-<i>/workload-<k>`` with selector ``unix:uid:<1000 + k>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from pyspire.cli.admin_client import AdminClient, connect
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb

BATCH = 5000
"""Entries per BatchCreateEntry call. The server refreshes its registry after every call, so
a fleet registers faster in fewer, larger calls; 5,000 entries are about 1 MB, well under the
4 MiB request cap."""

CONCURRENT_TOKENS = 64
TOKEN_TTL = 24 * 3600
CALL_TIMEOUT = 120.0


class RegistrationError(Exception):
    """The server refused a token or an entry; the message names it and says why."""


def agent_path(token: str) -> str:
    """The path of the SPIFFE ID a join token gives its agent."""
    return f"/spire/agent/join_token/{token}"


def workload_entry(
    trust_domain: str, agent: int, token: str, number: int, salt: str = ""
) -> pb.Entry:
    """Entry ``number`` of agent ``agent`` (``salt`` tells churned entries apart)."""
    return pb.Entry(
        spiffe_id=pb.Spiffeid(
            trust_domain=trust_domain, path=f"/load/agent-{agent}/workload-{number}{salt}"
        ),
        parent_id=pb.Spiffeid(trust_domain=trust_domain, path=agent_path(token)),
        selectors=[pb.Selector(type="unix", value=f"uid:{1000 + number}")],
    )


async def create_tokens(client: AdminClient, tokens: Sequence[str]) -> None:
    gate = asyncio.Semaphore(CONCURRENT_TOKENS)

    async def one(token: str) -> None:
        async with gate:
            await client.agent.create_join_token(
                agent_pb.CreateJoinTokenRequest(ttl=TOKEN_TTL, token=token)
            )

    await asyncio.gather(*(one(token) for token in tokens))


async def create_entries(client: AdminClient, entries: Sequence[pb.Entry]) -> list[str]:
    """Create ``entries`` in batches; their IDs, in order."""
    ids: list[str] = []
    for start in range(0, len(entries), BATCH):
        request = entry_pb.BatchCreateEntryRequest(entries=list(entries[start : start + BATCH]))
        answer = await client.entry.batch_create_entry(request)
        for result in answer.results:
            if result.status.code != 0:
                raise RegistrationError(f"entry refused: {result.status.message}")
            ids.append(result.entry.id)
    return ids


async def register(
    socket_path: Path, trust_domain: str, agents: Sequence[tuple[int, str]], entries_per_agent: int
) -> None:
    """Create each agent's join token and its ``entries_per_agent`` entries."""
    async with connect(socket_path, call_timeout=CALL_TIMEOUT) as client:
        with client.errors():
            await create_tokens(client, [token for _, token in agents])
            await create_entries(
                client,
                [
                    workload_entry(trust_domain, index, token, number)
                    for index, token in agents
                    for number in range(entries_per_agent)
                ],
            )
