"""Benchmark of the Workload API: FetchX509SVID first-message latency against an empty unary call.

Run from the repository root: ``.venv/bin/python tests/bench/bench_workload_api.py``.

This process serves, on two unix sockets:

- the agent's Workload API (:class:`~pyspire.agent.workload.WorkloadApiService` behind
  :class:`~pyspire.agent.workload.WorkloadEndpoint`, exactly as the agent serves it, recording
  its RPC metrics) over an identity source holding one cached X509-SVID for this uid; every
  call is attested by the real ``unix`` workload attestor from the caller's peer credentials
  and ``/proc``, as in production;
- the floor: a bare grpclib server with the standard health service, whose ``Check`` is the
  cheapest call grpclib can answer.

A client in a separate process (this script with ``--client``) opens one connection to each
socket and, alternating between them so both see the same machine noise, times a new
FetchX509SVID stream until its first message (then cancels it, as clients that only want the
current SVID do) and a health Check. It prints p50 and p99 of each and their ratio; the
Workload API's goal is at most twice the floor. Nothing is asserted: benchmarks print, tests
assert.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpclib.server
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.health.service import Health
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest
from pyspire_workloadattestor_unix.config import UnixAttestorConfig
from pyspire_workloadattestor_unix.plugin import UnixAttestor

from pyspire.agent.identities import Identity, Snapshot
from pyspire.agent.workload import SECURITY_HEADER, WorkloadApiService, WorkloadAttestation
from pyspire.agent.workload.endpoint import WorkloadEndpoint
from pyspire.proto.gen import workload as pb
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import RecordingMetrics

TRUST_DOMAIN = TrustDomain("example.org")
WORKLOAD = SpiffeId.parse("spiffe://example.org/bench/workload")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/bench")


# -- the served side ---------------------------------------------------------------------------


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
    uri: str,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False)
        .sign(signer, hashes.SHA256())
    )


def make_snapshot() -> Snapshot:
    """One identity for this uid (``unix:uid:<uid>``): a real CA, a real leaf and its key."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("SPIFFE", ca_key, None, ca_key, "spiffe://example.org", ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("SPIRE", leaf_key, ca.subject, ca_key, str(WORKLOAD), ca=False)
    svid = X509Svid(
        spiffe_id=WORKLOAD,
        cert_chain=(leaf.public_bytes(serialization.Encoding.DER),),
        expires_at=leaf.not_valid_after_utc,
        private_key=leaf_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    entry = RegistrationEntry(
        id="bench",
        spiffe_id=WORKLOAD,
        parent_id=AGENT,
        selectors=(Selector("unix", f"uid:{os.getuid()}"),),
        created_at=datetime.now(UTC),
    )
    bundle = Bundle(
        trust_domain=TRUST_DOMAIN,
        x509_authorities=(X509Authority(ca.public_bytes(serialization.Encoding.DER)),),
        sequence_number=1,
    )
    return Snapshot(
        revision=1,
        identities=(Identity(entry=entry, svid=svid),),
        bundle=bundle,
        federated_bundles={},
    )


class CachedIdentities:
    """An identity source that holds one snapshot and never changes (a warm agent cache)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> Snapshot:
        return self._snapshot

    async def watch(self) -> AsyncIterator[Snapshot]:
        yield self._snapshot
        await asyncio.Event().wait()

    def demand(self, selectors: frozenset[Selector]) -> AbstractContextManager[None]:
        return nullcontext()

    async def fetch_jwt_svid(self, entry: RegistrationEntry, audience: Sequence[str]) -> JwtSvid:
        raise UnavailableError("the benchmark's identity source mints no JWT-SVID")


async def unix_attestor(data_dir: Path) -> UnixAttestor:
    attestor = UnixAttestor()
    await attestor.configure(
        UnixAttestorConfig(),
        HostServices(
            trust_domain=TRUST_DOMAIN,
            clock=SystemClock(),
            logger=structlog.get_logger("bench"),
            metrics=RecordingMetrics(),
            data_dir=data_dir,
            plugin_name="unix",
            plugin_type="workload_attestor",
        ),
    )
    return attestor


async def serve_and_measure(args: argparse.Namespace) -> dict[str, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="ps-bench-", dir="/tmp"))
    workload_socket = root / "workload" / "api.sock"
    floor_socket = root / "floor.sock"
    attestor = await unix_attestor(root)
    service = WorkloadApiService(
        CachedIdentities(make_snapshot()),
        WorkloadAttestation([("unix", attestor)]),
        SystemClock(),
    )
    floor = grpclib.server.Server([Health()])
    await floor.start(path=str(floor_socket))
    try:
        async with WorkloadEndpoint(
            workload_socket, service, drain_timeout=1.0, metrics=PrometheusMetrics("bench")
        ):
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--client",
                str(workload_socket),
                str(floor_socket),
                str(args.calls),
                str(args.warmup),
                stdout=subprocess.PIPE,
            )
            out, _ = await client.communicate()
            if client.returncode != 0:
                raise SystemExit(f"the client process exited {client.returncode}")
    finally:
        floor.close()
        await floor.wait_closed()
        await asyncio.to_thread(shutil.rmtree, root, True)
    timings: dict[str, list[float]] = json.loads(out)
    return timings


# -- the client process ------------------------------------------------------------------------


async def measure(
    workload_socket: str, floor_socket: str, calls: int, warmup: int
) -> dict[str, list[float]]:
    workload_channel = Channel(path=workload_socket)
    floor_channel = Channel(path=floor_socket)
    health = HealthStub(floor_channel)

    async def fetch_first() -> float:
        start = time.perf_counter()
        async with workload_channel.request(
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

    async def check() -> float:
        start = time.perf_counter()
        await health.Check(HealthCheckRequest())
        return time.perf_counter() - start

    timings: dict[str, list[float]] = {"fetch_x509_svid": [], "health_check": []}
    try:
        for number in range(warmup + calls):
            fetched, checked = await fetch_first(), await check()
            if number >= warmup:
                timings["fetch_x509_svid"].append(fetched)
                timings["health_check"].append(checked)
    finally:
        workload_channel.close()
        floor_channel.close()
    return timings


# -- report ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls of each kind")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls of each kind")
    parser.add_argument("--client", nargs=4, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.client:
        workload_socket, floor_socket, calls, warmup = args.client
        timings = asyncio.run(measure(workload_socket, floor_socket, int(calls), int(warmup)))
        print(json.dumps(timings))
        return 0

    timings = asyncio.run(serve_and_measure(args))
    fetch, floor = timings["fetch_x509_svid"], timings["health_check"]
    print(f"calls of each kind: {len(fetch)} (after {args.warmup} warm-up calls)")
    print(f"{'':36} {'p50':>9} {'p99':>9} {'mean':>9}")
    for label, values in (
        ("FetchX509SVID first message", fetch),
        ("floor: grpclib health Check", floor),
    ):
        p50, p99 = percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3
        print(f"{label:36} {p50:7.3f}ms {p99:7.3f}ms {statistics.fmean(values) * 1e3:7.3f}ms")
    print(
        f"ratio FetchX509SVID / floor: p50 {percentile(fetch, 0.5) / percentile(floor, 0.5):.2f}x, "
        f"p99 {percentile(fetch, 0.99) / percentile(floor, 0.99):.2f}x (goal: at most 2x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
