"""Benchmark of what one steady-state agent sync costs: the server's CPU, and the agent's decode.

Run from the repository root: ``.venv/bin/python tests/bench/bench_sync_cost.py`` (20 agents of
20 entries each, 5 blocks of 40 rounds; ``--agents``, ``--entries``, ``--blocks``, ``--rounds``
to change them; ``--loops asyncio,uvloop`` to run both servers on each event loop, see below).

**Server CPU per sync.** A real ``pyspire-server`` (SQLite datastore, disk key manager) is
started and ``--agents`` agents attest with join tokens through the agent's own client
(:class:`pyspire.agent.client.ServerClient`); the server is stopped, each agent's entries are
written to its datastore, and it is started again. Every agent then opens its own mutual-TLS
connection and syncs as the sync manager does, once to warm up and then in blocks of
``--rounds`` syncs per agent with nothing changed, all agents at once: SyncAuthorizedEntries
alone (the bundles digest the server offers with it says the agent's bundles are current),
and, as SPIRE's agent syncs, SyncAuthorizedEntries and GetBundle. The figure is the server
process's CPU time (user + system, from ``/proc``) over a block, less what the idle server
burns in the same wall time, divided by the number of syncs. The floor is the same
measurement, in the same run, for an empty gRPC call: ``empty_grpc_server.py``, plain grpclib
with one method that reads its request and answers an empty message, over the server's own TLS
context (mutual TLS, one connection per client, as many clients as agents). That is what one
call costs before pyspire does anything. The floor's blocks, the one-call blocks and the
two-call blocks are taken in turn and each figure is the median of its blocks, so that a
shared machine's changing load weighs on all three alike. CPU time is counted in clock ticks
(10 ms): a run too small to measure a figure prints ``n/a`` for its ratios and says which
figures were 0 (:func:`server_report`).

**Event loops.** With ``--loops asyncio,uvloop`` (see :mod:`event_loops`), a second
pyspire-server (a copy of the first one's data directory, so the same CA, agents and entries)
and a second empty server run on uvloop, and every block of every kind is taken on each loop in
turn; the figures of each loop are printed against its own floor, then uvloop's against
asyncio's.

**Agent decode.** A SyncAuthorizedEntries reply of 1,000 entries (encoded by the server's
encoder) is read the way the agent reads it: cold (an agent that holds nothing: every entry
decoded and validated into SDK entries) and warm (an agent that holds every entry already: the
steady state). The floor is a raw protobuf parse of the same bytes by Google's runtime (upb, in
C, which builds Python objects only when read). Printed beside it: the generated codec's parse
into wire messages, and that parse followed by :func:`~pyspire.proto.convert.entry_from_proto`
(the general path, which the agent took for every entry at every sync before it kept them).

Figures are printed with their floors and ratios, never asserted (benchmarks print, tests
assert). The aims: server CPU per sync at most 0.3 ms; a 1,000-entry reply decoded in at most
10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_private_key
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_restart_sync import AgentCredentials, attest, write_entries
from empty_grpc_server import EMPTY_CALL
from event_loops import loop_environment
from grpclib.client import Channel
from processes import (
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    short_temp_dir,
)

from pyspire.agent.client import ServerClient
from pyspire.agent.entry_set import HeldEntries
from pyspire.proto import descriptor_set
from pyspire.proto.entries import (
    decode_entries,
    encode_entry,
    read_sync_page,
    sync_authorized_entries_response,
)
from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_wire
from pyspire.proto.messages import EncodedMessage, call_unary
from pyspire.transport.tls import build_client_context
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.pki import TestAuthority

_Client = TypeVar("_Client")

TD = TrustDomain("example.org")
SERVER_AIM_MS = 0.3
DECODE_AIM_MS = 10.0
ATTESTATION_GAP = 1.05
_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def make_entries(count: int, parent: SpiffeId, tag: str) -> list[RegistrationEntry]:
    """``count`` typical workload entries parented by ``parent`` (three selectors, a DNS name, a
    hint and TTLs, like a Kubernetes workload's)."""
    return [
        RegistrationEntry(
            spiffe_id=SpiffeId.from_segments(TD, "ns", f"team-{number % 40}", f"{tag}-{number}"),
            parent_id=parent,
            selectors=(
                Selector("k8s", f"ns:team-{number % 40}"),
                Selector("k8s", f"sa:{tag}-{number}"),
                Selector("k8s", "container-name:main"),
            ),
            x509_svid_ttl=3600,
            jwt_svid_ttl=300,
            dns_names=(f"{tag}-{number}.team-{number % 40}.svc.cluster.local",),
            hint=f"{tag}-{number}",
        )
        for number in range(count)
    ]


async def sync_once(client: ServerClient, expected: int) -> None:
    """What the sync manager asks at every sync: the authorized entries, then the bundles
    (fetched only when the digest offered with the entries says they changed)."""
    entries = await client.fetch_authorized_entries()
    if len(entries) != expected:
        raise ProcessError(f"a sync gave {len(entries)} entries, expected {expected}")
    await client.fetch_bundles(entries)


async def sync_twice(client: ServerClient, expected: int) -> None:
    """A sync as SPIRE's agent makes it: the authorized entries, then GetBundle every time."""
    entries = await client.fetch_authorized_entries()
    if len(entries) != expected:
        raise ProcessError(f"a sync gave {len(entries)} entries, expected {expected}")
    await client.fetch_bundle()


class EmptyServer:
    """``empty_grpc_server.py`` in its own process, and clients of it presenting an SVID."""

    def __init__(self, root: Path, loop: str = "asyncio") -> None:
        authority = TestAuthority(TD)
        server_svid = authority.issue(SpiffeId.from_segments(TD, "spire", "server"))
        self._client_svid = authority.issue(SpiffeId.from_segments(TD, "spire", "agent", "x"))
        self._bundle = [authority.der]
        directory = root / f"empty-server-{loop}"
        directory.mkdir()
        (directory / "chain.der").write_bytes(server_svid.cert_chain[0])
        (directory / "key.der").write_bytes(server_svid.private_key)
        (directory / "bundle.der").write_bytes(authority.der)
        script = Path(__file__).resolve().parent / "empty_grpc_server.py"
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(directory)],
            stdout=subprocess.PIPE,
            text=True,
            env=loop_environment(loop),
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def channel(self) -> Channel:
        key = load_der_private_key(self._client_svid.private_key, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        context = build_client_context(self._bundle, self._client_svid.cert_chain, key)
        return Channel("127.0.0.1", self.port, ssl=context)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


async def empty_call(channel: Channel) -> None:
    """One call of the method that does nothing."""
    await call_unary(channel, EMPTY_CALL, EncodedMessage(b""), bytes, call_timeout=30.0)


async def idle_rate(pid: int) -> float:
    """CPU seconds per second the process burns with nothing to do (its timers)."""
    started, cpu = time.perf_counter(), process_cpu(pid)
    await asyncio.sleep(1.0)
    return (process_cpu(pid) - cpu) / (time.perf_counter() - started)


async def server_cpu(
    pid: int,
    idle: float,
    clients: list[_Client],
    rounds: int,
    call: Callable[[_Client], Awaitable[None]],
) -> float:
    """Server CPU seconds per ``call``: ``rounds`` rounds of every client at once, less the
    ``idle`` server's CPU over the same wall time."""
    started, cpu = time.perf_counter(), process_cpu(pid)
    for _ in range(rounds):
        await asyncio.gather(*(call(client) for client in clients))
    elapsed = time.perf_counter() - started
    used = process_cpu(pid) - cpu - idle * elapsed
    return max(used, 0.0) / (rounds * len(clients))


async def measure(
    credentials: list[AgentCredentials],
    servers: dict[str, tuple[int, int, EmptyServer]],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Server CPU seconds per steady-state sync, one call (pyspire's agent) and two (SPIRE's
    way), and the empty server's per empty call, for each event loop of ``servers`` (the
    pyspire-server's port and pid, and the empty server, by loop): the median of
    ``args.blocks`` blocks of ``args.rounds`` rounds each, every kind on every loop taken in
    turn so that the machine's load weighs on each alike. Keys are ``<kind>-<loop>``."""
    entries = args.entries
    clients: list[ServerClient] = []
    channels: list[Channel] = []
    kinds: dict[str, tuple[int, list[Any], Callable[[Any], Awaitable[None]]]] = {}
    for loop, (port, pid, empty) in servers.items():
        loop_clients = [agent.client(port) for agent in credentials]
        loop_channels = [empty.channel() for _ in credentials]
        clients += loop_clients
        channels += loop_channels
        kinds[f"floor-{loop}"] = (empty.process.pid, loop_channels, empty_call)
        kinds[f"one-{loop}"] = (pid, loop_clients, lambda c: sync_once(c, entries))
        kinds[f"two-{loop}"] = (pid, loop_clients, lambda c: sync_twice(c, entries))
    try:
        await asyncio.gather(*(sync_once(client, entries) for client in clients))
        await asyncio.gather(*(empty_call(channel) for channel in channels))
        idle = {kind: await idle_rate(owner) for kind, (owner, _, _) in kinds.items()}
        samples: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.blocks):
            for kind, (owner, callers, call) in kinds.items():
                samples[kind].append(
                    await server_cpu(owner, idle[kind], callers, args.rounds, call)
                )
        return {kind: statistics.median(values) for kind, values in samples.items()}
    finally:
        for client in clients:
            await client.close()
        for channel in channels:
            channel.close()


def best_of(runs: int, action: Callable[[], object]) -> float:
    """The fastest of ``runs`` timings of ``action``, in seconds, each from a collected heap
    (the garbage collector stays on: a cold read allocates enough to run it)."""
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def measure_decode(count: int, runs: int) -> dict[str, float]:
    """Seconds to read a ``count``-entry SyncAuthorizedEntries reply: cold, warm and floor."""
    agent = SpiffeId.from_segments(TD, "spire", "agent", "join_token", "decode")
    entries = make_entries(count, agent, "app")
    data = sync_authorized_entries_response(entries=[encode_entry(entry) for entry in entries])
    warm = HeldEntries()
    warm.replace(read_sync_page(data).entries)

    def cold_read() -> None:
        HeldEntries().replace(read_sync_page(data).entries)

    google = google_class("spire.api.server.entry.v1.SyncAuthorizedEntriesResponse")
    return {
        "cold": best_of(runs, cold_read),
        "warm": best_of(runs, lambda: warm.replace(read_sync_page(data).entries)),
        "floor": best_of(runs, lambda: google.FromString(data)),
        "codec": best_of(runs, lambda: entry_wire.decode_SyncAuthorizedEntriesResponse(data)),
        "general": best_of(
            runs,
            lambda: decode_entries(entry_wire.decode_SyncAuthorizedEntriesResponse(data).entries),
        ),
        "bytes": float(len(data)),
    }


def google_class(full_name: str) -> Any:
    """Google's runtime (upb, in C) class of a message, from the project's descriptors."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set()).file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


def run_server(args: argparse.Namespace, loops: list[str]) -> dict[str, float]:
    """Server CPU seconds per steady-state sync (``one`` call, ``two`` calls) and the empty
    server's per empty call (``floor``) on each of ``loops``, see :func:`measure`."""
    root = short_temp_dir()
    settings = ServerSettings(root=root, port=free_port(), log_level="WARN")
    server = ServerProcess(settings)
    servers: dict[str, ServerProcess] = {}
    empties: list[EmptyServer] = []
    try:
        server.start(loop_environment(loops[0]))
        attested = []
        for number in range(args.agents):
            if number:
                time.sleep(ATTESTATION_GAP)  # the server admits one attestation a second per IP
            token = server.generate_token()
            attested.append(asyncio.run(attest(settings.port, token, root / f"agent-{number}")))
        server.terminate()
        entries = [
            entry
            for number, (agent_id, _) in enumerate(attested)
            for entry in make_entries(args.entries, agent_id, f"a{number}")
        ]
        asyncio.run(write_entries(settings.database_path, entries))
        servers[loops[0]] = server
        for loop in loops[1:]:
            # The same data directory (CA, agents, entries) under another root and port.
            copy = ServerSettings(root=root / loop, port=free_port(), log_level="WARN")
            copy.root.mkdir()
            shutil.copytree(settings.database_path.parent, copy.database_path.parent)
            servers[loop] = ServerProcess(copy)
        for loop, process in servers.items():
            process.start(loop_environment(loop))
            empties.append(EmptyServer(root, loop))
        figures = asyncio.run(
            measure(
                [credentials for _, credentials in attested],
                {
                    loop: (process.settings.port, process.pid, empty)
                    for (loop, process), empty in zip(servers.items(), empties, strict=True)
                },
                args,
            )
        )
    except ProcessError as error:
        print(f"benchmark failed: {error}\nserver log:\n{server.log()[-4000:]}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        for empty in empties:
            empty.stop()
        server.kill()
        for process in servers.values():
            process.kill()
        shutil.rmtree(root, ignore_errors=True)
    return figures


def server_report(figures: dict[str, float], loops: list[str]) -> list[str]:
    """The lines that print :func:`run_server`'s figures against their floors.

    ``/proc`` counts CPU time in clock ticks (10 ms here) and a block's figure is what is left after
    the idle server's share, so a run too small for a tick measures 0 and a ratio to it means
    nothing: such a ratio reads ``n/a`` and the last line says which figures were 0 and
    how to make the blocks larger, rather than the report failing half printed."""
    lines = []
    for loop in loops:
        floor = figures[f"floor-{loop}"]
        lines.append(f"  on {loop}")
        lines.append(f"    floor: empty gRPC call, same TLS {floor * 1e3:7.3f} ms")
        for label, per_sync in (
            ("one call (bundles digest same)", figures[f"one-{loop}"]),
            ("two calls (+ GetBundle, SPIRE)", figures[f"two-{loop}"]),
        ):
            lines.append(
                f"    {label:<32} {per_sync * 1e3:7.3f} ms  "
                f"{_ratio(per_sync, floor)} floor  (aim: {SERVER_AIM_MS:g} ms)"
            )
    first = loops[0]
    for loop in loops[1:]:
        lines.append(
            f"  {loop} / {first}: "
            + ", ".join(
                f"{kind} {_ratio(figures[f'{kind}-{loop}'], figures[f'{kind}-{first}'])}"
                for kind in ("floor", "one", "two")
            )
            + f"; {loop}'s one call / {first}'s floor "
            f"{_ratio(figures[f'one-{loop}'], figures[f'floor-{first}'])}"
        )
    unmeasured = [kind for kind, value in figures.items() if value <= 0.0]
    if unmeasured:
        lines.append(
            f"  not measured (no server CPU above idle in a block): {', '.join(unmeasured)}; "
            f"CPU time is counted in {1000 / _TICKS:g} ms ticks: raise --rounds or --agents"
        )
    return lines


def _ratio(value: float, floor: float) -> str:
    """``value / floor`` as ``1.23x``, or ``n/a`` when the floor is 0 (not measured)."""
    return f"{value / floor:5.2f}x" if floor > 0.0 else "  n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=20, help="agents, one connection each")
    parser.add_argument("--entries", type=int, default=20, help="entries per agent")
    parser.add_argument("--rounds", type=int, default=40, help="syncs per agent per block")
    parser.add_argument("--blocks", type=int, default=5, help="blocks of each kind, in turn")
    parser.add_argument("--decode-entries", type=int, default=1000, help="entries per reply")
    parser.add_argument("--runs", type=int, default=20, help="timed decode runs (best kept)")
    parser.add_argument("--skip-server", action="store_true", help="only the agent decode")
    parser.add_argument(
        "--loops", default="asyncio", help="event loops the servers run on: asyncio,uvloop"
    )
    args = parser.parse_args(argv)
    loops = args.loops.split(",")
    for loop in loops:
        loop_environment(loop)  # an unknown loop fails here, before any server starts

    # The decode first, in a fresh process: the server part leaves objects the collector
    # would walk during a cold read, which says more about that part than about the reader.
    decode = measure_decode(args.decode_entries, args.runs)
    if not args.skip_server:
        figures = run_server(args, loops)
        print(
            f"server CPU per steady-state sync ({args.agents} agents x {args.entries} entries, "
            f"median of {args.blocks} blocks of {args.agents * args.rounds} calls or syncs)"
        )
        print("\n".join(server_report(figures, loops)))

    floor = decode["floor"]
    print(
        f"agent decode of a {args.decode_entries:,}-entry SyncAuthorizedEntries reply "
        f"({decode['bytes'] / 1024:.0f} KiB, best of {args.runs})"
    )
    print(f"  floor: Google's upb parse          {floor * 1e3:7.3f} ms")
    for name, label in (
        ("codec", "generated codec parse only"),
        ("general", "codec, then entry_from_proto"),
        ("cold", "cold (nothing held)"),
        ("warm", "warm (all held)"),
    ):
        seconds = decode[name]
        print(
            f"  {label:<32} {seconds * 1e3:7.3f} ms  {seconds / floor:5.2f}x floor"
            f"  (aim: {DECODE_AIM_MS:g} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
