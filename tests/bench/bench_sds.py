"""Benchmark of Envoy's Secret Discovery Service: the first StreamSecrets response (and a
FetchSecrets call) against the first FetchX509SVID message, in the same run.

Run from the repository root: ``.venv/bin/python tests/bench/bench_sds.py``.

This process serves the agent's Workload API socket exactly as the agent does
(:class:`~pyspire.agent.workload.WorkloadEndpoint` with the Workload API and the Secret
Discovery Service beside it) over an identity source holding one cached X509-SVID for this uid
(:mod:`bench_workload_api`'s); every call is attested by the real ``unix`` workload attestor
from the caller's peer credentials and ``/proc``.

A client in a separate process (this script with ``--client``) keeps one connection to the
socket and, alternating so all see the same machine noise, times: a new StreamSecrets stream
from its first request (an Envoy 1.30 node, no names: everything the caller may have) until the
first response, then cancelled; a FetchSecrets call for the same; and, as the floor, a new
FetchX509SVID stream until its first message. It prints p50 and p99 of each and the ratio of
the SDS calls to the floor: SDS sends PEM (the Workload API sends DER) inside ``Any`` wrappers,
and builds a SPIFFE validator configuration, so it may cost a little more.

Then many Envoys on one agent: the client opens ``--streams`` StreamSecrets streams (each past
its first response) and the server, serving from the agent's own ``WorkloadCache``, rotates the
SVID (and its CA; each made and checked before the timing) ``--pushes`` times, each when the
client asks for it (SIGUSR1); the time from the signal until
every stream has its push is set against the same with as many FetchX509SVID streams, the
floor, in alternating rounds.

First of all, in this process and without sockets, the agent's work for one stream's push is
timed: the answer as the service makes it (the secrets of one revision built and encoded once
for every stream), the same answer rebuilt for each stream (as before that cache), and the
floor, FetchX509SVID's cached response. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import structlog
from bench_workload_api import WORKLOAD, CachedIdentities, make_snapshot, percentile, unix_attestor
from grpclib.client import Channel
from grpclib.const import Cardinality

from pyspire.agent.cache import IssuedSvid, WorkloadCache
from pyspire.agent.identities import Snapshot
from pyspire.agent.workload import (
    SECURITY_HEADER,
    SecretDiscoveryService,
    WorkloadApiService,
    WorkloadAttestation,
    WorkloadEndpoint,
)
from pyspire.agent.workload.sds_secrets import CallerSecrets, uses_spiffe_validator
from pyspire.config.sds import SdsConfig
from pyspire.proto.gen import workload as pb
from pyspire.proto.gen.codec import envoy_config_core_v3 as core
from pyspire.proto.gen.codec import envoy_service_discovery_v3 as discovery
from pyspire.proto.gen.codec import envoy_type_v3
from pyspire.proto.secrets import SECRET_TYPE_URL, discovery_resources, discovery_response
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.selector import Selector

SDS = "/envoy.service.secret.v3.SecretDiscoveryService/"


class _NoServer:
    """The server side of the agent's cache: never called, the benchmark mints nothing."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the benchmark's cache called the server ({name})")


class RotatingCache:
    """The agent's own :class:`~pyspire.agent.cache.WorkloadCache`, holding one identity for
    this uid, whose SVID (and CA) :meth:`rotate` replaces with the next of ``rotations``, each
    made and checked in advance."""

    def __init__(self, rotations: int) -> None:
        self.cache = WorkloadCache(_NoServer(), SystemClock())  # type: ignore[arg-type]
        self._rotations = iter([_issued(make_snapshot()) for _ in range(rotations)])
        self._load(_issued(make_snapshot()))

    def rotate(self) -> None:
        self._load(next(self._rotations))

    def _load(self, issued: tuple[Snapshot, IssuedSvid]) -> None:
        snapshot, svid = issued
        assert snapshot.bundle is not None
        self.cache.update([snapshot.identities[0].entry], snapshot.bundle, {})
        self.cache.store([svid])


def _issued(snapshot: Snapshot) -> tuple[Snapshot, IssuedSvid]:
    [identity] = snapshot.identities
    return snapshot, IssuedSvid.inspect(identity.entry, identity.svid)


async def serve_and_measure(args: argparse.Namespace) -> dict[str, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="ps-bench-", dir="/tmp"))
    socket = root / "public" / "api.sock"
    attestation = WorkloadAttestation([("unix", await unix_attestor(root))])
    costs = answer_costs(CachedIdentities(make_snapshot()), attestation, args.samples, 100)
    rounds = 2 * args.pushes + 2  # warm-up rounds included
    rotating = RotatingCache(rounds)
    source = rotating.cache
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, rotating.rotate)
    clock = SystemClock()
    endpoint = WorkloadEndpoint(
        socket,
        WorkloadApiService(source, attestation, clock),
        sds=SecretDiscoveryService(source, attestation, clock),
        drain_timeout=1.0,
        metrics=PrometheusMetrics("bench"),
    )
    try:
        async with endpoint:
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--client",
                str(socket),
                str(args.calls),
                str(args.warmup),
                str(args.streams),
                str(args.pushes),
                stdout=subprocess.PIPE,
            )
            out, _ = await client.communicate()
            if client.returncode != 0:
                raise SystemExit(f"the client process exited {client.returncode}")
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)
    timings: dict[str, list[float]] = json.loads(out)
    timings.update((f"answer_{name}", values) for name, values in costs.items())
    return timings


def answer_costs(
    source: CachedIdentities, attestation: WorkloadAttestation, samples: int, batch: int
) -> dict[str, list[float]]:
    """Seconds per answer of the work a stream's push makes the agent do, each sample the mean
    of ``batch`` answers at one revision: the state-of-the-world answer as the service makes it
    (taken from its per-revision cache), the same answer rebuilt for every stream (the secrets
    built, PEM-encoded and wrapped each time), and the floor, FetchX509SVID's per-revision
    encoded response."""
    snapshot = source.snapshot()
    selectors = frozenset({Selector("unix", f"uid:{os.getuid()}")})
    node = envoy_request().node
    clock = SystemClock()
    sds = SecretDiscoveryService(source, attestation, clock)
    api = WorkloadApiService(source, attestation, clock)
    bundle = snapshot.bundle
    assert bundle is not None

    def cached() -> None:
        caller = sds._caller(snapshot, selectors, node)
        discovery_response("1", caller.resources(()), "nonce")

    def rebuilt() -> None:
        spiffe = uses_spiffe_validator(SdsConfig(), node)
        secrets = CallerSecrets(snapshot, selectors, SdsConfig(), spiffe_validator=spiffe)
        resources = discovery_resources([secret for _, secret in secrets.resolve(())])
        discovery_response("1", resources, "nonce")

    def floor() -> None:
        view = snapshot.view(selectors)
        api._x509_svid_response(snapshot.revision, view.identities, bundle, {})

    costs: dict[str, list[float]] = {"cached": [], "rebuilt": [], "floor": []}
    for _ in range(samples):
        for name, work in (("cached", cached), ("rebuilt", rebuilt), ("floor", floor)):
            start = time.perf_counter()
            for _ in range(batch):
                work()
            costs[name].append((time.perf_counter() - start) / batch)
    return costs


# -- the client process ------------------------------------------------------------------------


def envoy_request() -> discovery.DiscoveryRequest:
    version = envoy_type_v3.SemanticVersion(major_number=1, minor_number=30)
    node = core.Node(
        id="bench",
        cluster="bench",
        user_agent_name="envoy",
        user_agent_build_version=core.BuildVersion(version=version),
    )
    return discovery.DiscoveryRequest(node=node, type_url=SECRET_TYPE_URL)


def check_sds(response: discovery.DiscoveryResponse | None) -> None:
    if response is None or len(response.resources) != 2:
        raise SystemExit(f"unexpected SDS response: {response!r}")


async def measure(
    socket: str, calls: int, warmup: int, streams: int, pushes: int
) -> dict[str, list[float]]:
    channel = Channel(path=socket)
    request = envoy_request()

    async def stream_first() -> float:
        start = time.perf_counter()
        async with channel.request(
            SDS + "StreamSecrets",
            Cardinality.STREAM_STREAM,
            discovery.DiscoveryRequest,
            discovery.DiscoveryResponse,
        ) as stream:
            await stream.send_message(request)
            response = await stream.recv_message()
            elapsed = time.perf_counter() - start
            check_sds(response)
            await stream.cancel()
        return elapsed

    async def fetch_secrets() -> float:
        start = time.perf_counter()
        async with channel.request(
            SDS + "FetchSecrets",
            Cardinality.UNARY_UNARY,
            discovery.DiscoveryRequest,
            discovery.DiscoveryResponse,
        ) as stream:
            await stream.send_message(request, end=True)
            response = await stream.recv_message()
        elapsed = time.perf_counter() - start
        check_sds(response)
        return elapsed

    async def fetch_x509_first() -> float:
        start = time.perf_counter()
        async with channel.request(
            "/SpiffeWorkloadAPI/FetchX509SVID",
            Cardinality.UNARY_STREAM,
            pb.X509SvidRequest,
            pb.X509SvidResponse,
            metadata={SECURITY_HEADER: "true"},
        ) as stream:
            await stream.send_message(pb.X509SvidRequest(), end=True)
            response = await stream.recv_message()
            elapsed = time.perf_counter() - start
            if response is None or response.svids[0].spiffe_id != str(WORKLOAD):
                raise SystemExit(f"unexpected FetchX509SVID response: {response!r}")
            await stream.cancel()
        return elapsed

    timings: dict[str, list[float]] = {
        "stream_secrets": [],
        "fetch_secrets": [],
        "x509": [],
        "sds_push": [],
        "x509_push": [],
    }
    try:
        for number in range(warmup + calls):
            streamed = await stream_first()
            fetched = await fetch_secrets()
            floor = await fetch_x509_first()
            if number >= warmup:
                timings["stream_secrets"].append(streamed)
                timings["fetch_secrets"].append(fetched)
                timings["x509"].append(floor)
        for number in range(pushes + 1):  # the first round of each kind warms up
            sds = await push_round(channel, streams, SDS_STREAMS)
            x509 = await push_round(channel, streams, X509_STREAMS)
            if number > 0:
                timings["sds_push"].append(sds)
                timings["x509_push"].append(x509)
    finally:
        channel.close()
    return timings


class Streams:
    """How to open one kind of stream and send what starts it."""

    def __init__(self, method: str, cardinality: Cardinality, send: Any, recv: Any) -> None:
        self.method = method
        self.cardinality = cardinality
        self.send_type = send
        self.recv_type = recv

    def open(self, channel: Channel) -> AbstractAsyncContextManager[Any]:
        metadata = None if self.send_type is discovery.DiscoveryRequest else WORKLOAD_HEADER
        return channel.request(
            self.method, self.cardinality, self.send_type, self.recv_type, metadata=metadata
        )

    async def start(self, stream: Any) -> None:
        if self.send_type is discovery.DiscoveryRequest:
            await stream.send_message(envoy_request())
        else:
            await stream.send_message(pb.X509SvidRequest(), end=True)


WORKLOAD_HEADER = {SECURITY_HEADER: "true"}
SDS_STREAMS = Streams(
    SDS + "StreamSecrets",
    Cardinality.STREAM_STREAM,
    discovery.DiscoveryRequest,
    discovery.DiscoveryResponse,
)
X509_STREAMS = Streams(
    "/SpiffeWorkloadAPI/FetchX509SVID",
    Cardinality.UNARY_STREAM,
    pb.X509SvidRequest,
    pb.X509SvidResponse,
)


async def push_round(channel: Channel, count: int, kind: Streams) -> float:
    """Open ``count`` streams, read each first message, then have the server rotate the SVID
    and time until every stream has the push."""
    async with contextlib.AsyncExitStack() as stack:
        opened = [await stack.enter_async_context(kind.open(channel)) for _ in range(count)]
        for stream in opened:
            await kind.start(stream)
            if await stream.recv_message() is None:
                raise SystemExit("a stream ended before its first message")
        start = time.perf_counter()
        os.kill(os.getppid(), signal.SIGUSR1)
        for stream in opened:
            if await stream.recv_message() is None:
                raise SystemExit("a stream ended before the push")
        elapsed = time.perf_counter() - start
        for stream in opened:
            await stream.cancel()
    return elapsed


# -- report ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls of each kind")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls of each kind")
    parser.add_argument("--streams", type=int, default=50, help="streams open at each push")
    parser.add_argument("--pushes", type=int, default=20, help="timed pushes of each kind")
    parser.add_argument("--samples", type=int, default=200, help="in-process answer samples")
    parser.add_argument("--client", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.client:
        socket, calls, warmup, streams, pushes = args.client
        timings = measure(socket, int(calls), int(warmup), int(streams), int(pushes))
        print(json.dumps(asyncio.run(timings)))
        return 0

    timings = asyncio.run(serve_and_measure(args))
    costs = {name: timings[f"answer_{name}"] for name in ("cached", "rebuilt", "floor")}
    print(f"answers to one stream's push, in-process ({args.samples} samples of 100 answers)")
    for label, values in (
        ("StreamSecrets answer, per-revision cache", costs["cached"]),
        ("StreamSecrets answer rebuilt per stream", costs["rebuilt"]),
        ("floor: FetchX509SVID cached response", costs["floor"]),
    ):
        print(f"{label:44} {percentile(values, 0.5) * 1e6:8.2f}us (p50)")
    for label, name in (("cached", "cached"), ("rebuilt", "rebuilt")):
        ratio = percentile(costs[name], 0.5) / percentile(costs["floor"], 0.5)
        print(f"ratio StreamSecrets answer {label} / floor: p50 {ratio:.2f}x")

    floor = timings["x509"]
    print(f"calls of each kind: {len(floor)} (after {args.warmup} warm-up calls)")
    print(f"{'':40} {'p50':>9} {'p99':>9} {'mean':>9}")
    rows = (
        ("StreamSecrets first response", timings["stream_secrets"]),
        ("FetchSecrets", timings["fetch_secrets"]),
        ("floor: FetchX509SVID first message", floor),
    )
    for label, values in rows:
        p50, p99 = percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3
        print(f"{label:40} {p50:7.3f}ms {p99:7.3f}ms {statistics.fmean(values) * 1e3:7.3f}ms")
    for label, values in rows[:2]:
        print(
            f"ratio {label} / floor: "
            f"p50 {percentile(values, 0.5) / percentile(floor, 0.5):.2f}x, "
            f"p99 {percentile(values, 0.99) / percentile(floor, 0.99):.2f}x"
        )
    push, push_floor = timings["sds_push"], timings["x509_push"]
    print(f"pushes of each kind: {len(push)}, to {args.streams} streams each")
    for label, values in (
        ("StreamSecrets push to every stream", push),
        ("floor: FetchX509SVID push to every stream", push_floor),
    ):
        p50 = percentile(values, 0.5) * 1e3
        print(f"{label:40} {p50:7.3f}ms {statistics.fmean(values) * 1e3:7.3f}ms (p50, mean)")
    print(
        f"ratio StreamSecrets push / floor: p50 "
        f"{percentile(push, 0.5) / percentile(push_floor, 0.5):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
