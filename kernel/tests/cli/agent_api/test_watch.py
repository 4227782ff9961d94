"""``pyspire-agent api watch``: updates as they arrive, reconnection, and Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from pyspire.catalog import Side
from pyspire.cli.commands.api import watch_x509_svids
from pyspire.cli.registry import CliContext
from pyspire.cli.workload_client import Endpoint

from .conftest import Agent
from .pki import make_entry

AGENT_SCRIPT = Path(sys.executable).parent / "pyspire-agent"
WAIT = 10.0


class Output(io.StringIO):
    """A captured stream that tells waiters when something was written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        count = super().write(text)
        self.written.set()
        return count


async def until(stream: Output, condition: Callable[[], bool]) -> None:
    """Wait, at most :data:`WAIT` seconds, until what the watch wrote satisfies ``condition``."""
    async with asyncio.timeout(WAIT):
        while True:
            stream.written.clear()
            if condition():
                return
            await stream.written.wait()


@dataclass
class Watch:
    """An in-process ``api watch`` and what it printed so far."""

    out: Output
    err: Output
    stop: asyncio.Event
    task: asyncio.Task[int]

    def updates(self) -> int:
        return self.out.getvalue().count("Received ")


@pytest.fixture
async def start_watch() -> AsyncIterator[Callable[..., Watch]]:
    started: list[Watch] = []

    def start(socket_path: Path, output: str = "pretty") -> Watch:
        out, err = Output(), Output()
        context = CliContext(side=Side.AGENT, prog="pyspire-agent", stdout=out, stderr=err)
        args = argparse.Namespace(timeout=timedelta(seconds=5), output=output)
        stop = asyncio.Event()
        task = asyncio.create_task(
            watch_x509_svids(Endpoint(path=socket_path), args, context, stop, backoff=(0.05, 0.2))
        )
        watch = Watch(out=out, err=err, stop=stop, task=task)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        watch.task.cancel()
        await asyncio.gather(watch.task, return_exceptions=True)


async def test_prints_each_update_until_stopped(
    agent: Agent, start_watch: Callable[..., Watch]
) -> None:
    watch = start_watch(agent.socket_path)
    await until(watch.out, lambda: watch.updates() == 1)
    assert "SPIFFE ID:\t\tspiffe://example.org/workload" in watch.out.getvalue()
    rotated = agent.pki.identity(make_entry("/workload"))
    agent.source.publish(identities=(rotated,))
    await until(watch.out, lambda: watch.updates() == 2)
    extra = agent.pki.identity(make_entry("/second", age=5))
    agent.source.publish(identities=(rotated, extra))
    await until(watch.out, lambda: "Received 2 svids after" in watch.out.getvalue())
    watch.stop.set()
    assert await asyncio.wait_for(watch.task, WAIT) == 0
    assert watch.err.getvalue() == ""


async def test_json_lines(agent: Agent, start_watch: Callable[..., Watch]) -> None:
    watch = start_watch(agent.socket_path, output="json")
    await until(watch.out, lambda: watch.out.getvalue().count("\n") == 1)
    agent.source.publish(identities=(agent.pki.identity(make_entry("/workload")),))
    await until(watch.out, lambda: watch.out.getvalue().count("\n") == 2)
    watch.stop.set()
    assert await asyncio.wait_for(watch.task, WAIT) == 0
    documents = [json.loads(line) for line in watch.out.getvalue().splitlines()]
    assert [doc["svids"][0]["spiffe_id"] for doc in documents] == [
        "spiffe://example.org/workload"
    ] * 2
    assert documents[0]["svids"][0]["x509_svid"] != documents[1]["svids"][0]["x509_svid"]


async def test_waits_for_an_identity_and_for_the_agent(
    agent: Agent, start_watch: Callable[..., Watch], socket_dir: Path
) -> None:
    agent.source.publish(identities=())
    watch = start_watch(agent.socket_path)
    await until(
        watch.err,
        lambda: "no identity issued (permission denied); retrying in" in watch.err.getvalue(),
    )
    assert watch.updates() == 0
    agent.source.publish(identities=(agent.pki.identity(make_entry("/workload")),))
    await until(watch.out, lambda: watch.updates() == 1)
    assert not watch.task.done()
    watch.stop.set()
    assert await asyncio.wait_for(watch.task, WAIT) == 0

    missing = start_watch(socket_dir / "later.sock")
    await until(missing.err, lambda: "no such socket; retrying in" in missing.err.getvalue())
    missing.stop.set()
    assert await asyncio.wait_for(missing.task, WAIT) == 0


@pytest.mark.skipif(not AGENT_SCRIPT.exists(), reason="pyspire-agent is not installed")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_interrupt_ends_the_watch_cleanly(agent: Agent, signum: signal.Signals) -> None:
    """The installed command, interrupted as from a terminal, exits 0 without a traceback."""
    process = await asyncio.create_subprocess_exec(
        str(AGENT_SCRIPT),
        "api",
        "watch",
        "--socket-path",
        str(agent.socket_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(WAIT * 3):
            while "SPIFFE ID:" not in "".join(seen):
                line = await process.stdout.readline()
                assert line, "the watch ended before printing an update"
                seen.append(line.decode())
            agent.source.publish(identities=(agent.pki.identity(make_entry("/workload")),))
            while "".join(seen).count("Received 1 svid") < 2:
                line = await process.stdout.readline()
                assert line, "the watch ended before printing the second update"
                seen.append(line.decode())
        process.send_signal(signum)
        _, err = await asyncio.wait_for(process.communicate(), WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
