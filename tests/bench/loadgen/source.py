"""One loopback source address per simulated agent.

Linux routes all of 127.0.0.0/8 to the loopback interface, so binding each agent's client
sockets to its own 127.x.y.z makes the server see as many peers as there are agents: its
per-address rules (one attestation per second, a bound on unverified connections) then apply
per agent, as they would to real nodes.

The agent's :class:`~pyspire.agent.client.ServerClient` opens its connections through grpclib,
which has no source-address option; it calls ``loop.create_connection`` on the running loop.
:class:`SourceBoundLoop` supplies the address there, from :data:`SOURCE_ADDRESS`, which each
agent's task sets for itself (a task's context variables are its own), so the agent code runs
unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

SOURCE_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "SOURCE_ADDRESS", default=None
)
"""The address the current task's outgoing TCP connections are bound to (None: any)."""

FIRST_SECOND_OCTET = 100
"""Agents use 127.100.0.1 upwards, away from 127.0.0.1 where the server and tools are."""

PER_OCTET = 250
"""Addresses per last octet range (1..250), leaving .0 and .255 alone."""

MAX_AGENTS = (256 - FIRST_SECOND_OCTET) * 256 * PER_OCTET


def address_of(index: int) -> str:
    """The loopback source address of agent ``index`` (0-based): 127.100.0.1, 127.100.0.2, ..."""
    if not 0 <= index < MAX_AGENTS:
        raise ValueError(f"agent index {index} outside 0..{MAX_AGENTS - 1}")
    last = index % PER_OCTET + 1
    third = (index // PER_OCTET) % 256
    second = FIRST_SECOND_OCTET + index // (PER_OCTET * 256)
    return f"127.{second}.{third}.{last}"


class SourceBoundLoop(asyncio.SelectorEventLoop):
    """An event loop whose TCP connections leave from :data:`SOURCE_ADDRESS` when it is set
    and the caller chose no ``local_addr`` of its own."""

    async def create_connection(
        self, *args: Any, local_addr: tuple[str, int] | None = None, **kwargs: Any
    ) -> Any:
        if local_addr is None:
            address = SOURCE_ADDRESS.get()
            if address is not None:
                local_addr = (address, 0)
        return await super().create_connection(*args, local_addr=local_addr, **kwargs)
