"""Freezing the heap (:mod:`pyspire.collector`) keeps no connection alive: a connection open
when the heap was frozen, and one opened after, are both freed by reference counting when
they close, so neither depends on a collection that never walks frozen objects.

The collector is off while the connections live and close: whatever is freed then was freed
by reference counting, which is all a frozen object can rely on. grpclib's server keeps a
closed connection's handler (and its last calls' streams) until it sweeps its handlers, every
:data:`SWEEP` new connections: the tests open that many more before they look."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import weakref
from collections.abc import Iterator
from typing import Any

import grpclib.server
import pytest
from grpclib.client import Channel

from pyspire.collector import freeze_settled_heap
from pyspire.transport.listener import GuardedListener
from pyspire_sdk.testing.pki import TestAuthority

from .test_listener import Served, authority, check, limits, served_tls, until, with_svid

__all__ = ["authority"]

AGENTS = 20
SWEEP = int(grpclib.server.Server.__gc_interval__)
"""New connections after which grpclib's server lets go of the handlers of closed ones."""


@pytest.fixture(autouse=True)
def frozen_heap_undone() -> Iterator[None]:
    """The test process's collector is left as it was: on, and nothing frozen."""
    was_enabled = gc.isenabled()
    gc.collect()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()


def server_side(listener: GuardedListener) -> list[weakref.ref[Any]]:
    """Weak references to what the server holds for each connection: our protocol, grpclib's,
    the TLS transport, asyncio's TLS protocol and the socket transport under it."""
    held: list[weakref.ref[Any]] = []
    for connection in listener.connections:
        secured = connection._transport
        tls = getattr(secured, "_ssl_protocol", None)
        raw = getattr(tls, "_transport", None)
        assert secured is not None and tls is not None and raw is not None
        held += [weakref.ref(item) for item in (connection, connection._inner, secured, tls, raw)]
    return held


def alive(held: list[weakref.ref[Any]]) -> list[str]:
    return sorted({type(item).__qualname__ for ref in held if (item := ref()) is not None})


async def close_all(channels: list[Channel], listener: GuardedListener) -> None:
    for channel in channels:
        channel.close()
    channels.clear()
    await until(lambda: listener.counts.total == 0)
    await asyncio.sleep(0.1)  # the transports' connection_lost callbacks


async def connected(authority: TestAuthority, port: int, count: int = AGENTS) -> list[Channel]:
    channels = [Channel("127.0.0.1", port, ssl=with_svid(authority)) for _ in range(count)]
    for channel in channels:
        await check(channel)
    return channels


async def swept(authority: TestAuthority, served: Served) -> None:
    """Have grpclib's server sweep the handlers of closed connections, as later agents do."""
    await close_all(await connected(authority, served.port, SWEEP), served.listener)


async def test_connections_frozen_while_open_are_freed_when_they_close(
    authority: TestAuthority,
) -> None:
    """The agents of a storm, frozen once it settled, then gone: nothing of theirs stays,
    though no collection ever walks what is frozen."""
    gc.disable()  # what is freed below is freed by reference counting
    async with served_tls(authority, limits(max_connections=AGENTS + 4)) as served:
        channels = await connected(authority, served.port)
        await until(lambda: served.listener.counts.total == AGENTS)
        held = server_side(served.listener)
        assert len(held) == 5 * AGENTS
        freeze_settled_heap()
        tracked = {id(item) for item in gc.get_objects()}
        assert not [ref for ref in held if id(ref()) in tracked], "every one of them is frozen"
        await close_all(channels, served.listener)
        await swept(authority, served)
        assert alive(held) == []


async def test_connections_opened_and_closed_after_a_freeze_leave_nothing_behind(
    authority: TestAuthority,
) -> None:
    """After a freeze, a connection's whole life leaves no object the collector tracks and no
    memory: nothing frozen holds on to what came later."""
    async with served_tls(authority, limits(max_connections=AGENTS + SWEEP + 4)) as served:
        warm = await connected(authority, served.port)  # first-use caches fill before counting
        await close_all(warm, served.listener)
        freeze_settled_heap()
        tracemalloc.start()
        try:
            # Counted between two sweeps: each leaves grpclib holding the last ones it swept.
            await swept(authority, served)
            gc.collect()
            objects_before = len(gc.get_objects())
            memory_before, _ = tracemalloc.get_traced_memory()
            channels = await connected(authority, served.port)
            await until(lambda: served.listener.counts.total == AGENTS)
            held = server_side(served.listener)
            await close_all(channels, served.listener)
            await swept(authority, served)
            assert alive(held) == []
            del held
            gc.collect()
            objects_after = len(gc.get_objects())
            memory_after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert objects_after - objects_before < AGENTS, "objects of each connection stay"
        # A connection costs the server about 75 KiB: a whole one left behind is far over this.
        assert memory_after - memory_before < AGENTS * 4096, "memory of each connection stays"
