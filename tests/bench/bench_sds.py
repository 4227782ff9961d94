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
and builds a SPIFFE validator configuration, so it may cost a little more. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog
from bench_workload_api import WORKLOAD, CachedIdentities, make_snapshot, percentile, unix_attestor
from grpclib.client import Channel
from grpclib.const import Cardinality

from pyspire.agent.workload import (
    SECURITY_HEADER,
    SecretDiscoveryService,
    WorkloadApiService,
    WorkloadAttestation,
    WorkloadEndpoint,
)
from pyspire.proto.gen import workload as pb
from pyspire.proto.gen.codec import envoy_config_core_v3 as core
from pyspire.proto.gen.codec import envoy_service_discovery_v3 as discovery
from pyspire.proto.gen.codec import envoy_type_v3
from pyspire.proto.secrets import SECRET_TYPE_URL
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire_sdk.clock import SystemClock

SDS = "/envoy.service.secret.v3.SecretDiscoveryService/"


async def serve_and_measure(args: argparse.Namespace) -> dict[str, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="ps-bench-", dir="/tmp"))
    socket = root / "public" / "api.sock"
    attestation = WorkloadAttestation([("unix", await unix_attestor(root))])
    source = CachedIdentities(make_snapshot())
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
                stdout=subprocess.PIPE,
            )
            out, _ = await client.communicate()
            if client.returncode != 0:
                raise SystemExit(f"the client process exited {client.returncode}")
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)
    timings: dict[str, list[float]] = json.loads(out)
    return timings


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


async def measure(socket: str, calls: int, warmup: int) -> dict[str, list[float]]:
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

    timings: dict[str, list[float]] = {"stream_secrets": [], "fetch_secrets": [], "x509": []}
    try:
        for number in range(warmup + calls):
            streamed = await stream_first()
            fetched = await fetch_secrets()
            floor = await fetch_x509_first()
            if number >= warmup:
                timings["stream_secrets"].append(streamed)
                timings["fetch_secrets"].append(fetched)
                timings["x509"].append(floor)
    finally:
        channel.close()
    return timings


# -- report ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls of each kind")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls of each kind")
    parser.add_argument("--client", nargs=3, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.client:
        socket, calls, warmup = args.client
        print(json.dumps(asyncio.run(measure(socket, int(calls), int(warmup)))))
        return 0

    timings = asyncio.run(serve_and_measure(args))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
