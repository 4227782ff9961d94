"""Benchmark of a workload's first X509-SVID for an entry the agent has not minted yet, against
a fetch the cache answers at once, measured in the same run.

Run from the repository root: ``.venv/bin/python tests/bench/bench_svid_on_demand.py``.

The agent's own parts serve a real Workload API socket, as the agent wires them: the workload
cache (bounded to one SVID, so no entry is minted before a workload asks), the sync manager's
loop (woken by the Workload API's demand, it generates the key and CSR off the event loop,
has the server sign, checks the reply, and stores the SVID), and the Workload API service. The
server is an in-process signer answering the agent's server calls with ``cryptography``, so
the figures leave out the network round trip and the server's own work: they measure what the
agent adds. Each caller is told apart by one selector (a small attestor stands in for the unix
one), and each entry matches exactly one caller.

Each sample: a FetchX509SVID for a caller whose entry holds no SVID yet (the stream waits while
it is minted on demand), then the same fetch again (now cached), both timed from the call to
the first message. Prints p50 and p99 of both and their ratio. Nothing is asserted:
benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from grpclib.client import Channel
from grpclib.const import Cardinality

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.server_api import SvidRequest, SvidResult, TrustBundles, fetch_each_bundle
from pyspire.agent.sync import SyncManager
from pyspire.agent.workload import SECURITY_HEADER, WorkloadApiService, WorkloadAttestation
from pyspire.agent.workload.endpoint import WorkloadEndpoint
from pyspire.proto.gen import workload as pb
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.pki import TestAuthority

TRUST_DOMAIN = TrustDomain("example.org")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/bench")


class InProcessServer:
    """The agent's server calls answered in this process: N entries, one CA."""

    def __init__(self, entries: int) -> None:
        self.authority = TestAuthority(TRUST_DOMAIN)
        created = datetime(2030, 1, 1, tzinfo=UTC)
        self.entries = [
            RegistrationEntry(
                id=f"entry-{number}",
                spiffe_id=SpiffeId.parse(f"spiffe://example.org/bench/{number}"),
                parent_id=AGENT,
                selectors=(Selector("bench", f"caller:{number}"),),
                revision_number=1,
                created_at=created + timedelta(seconds=number),
            )
            for number in range(entries)
        ]
        self._by_id = {entry.id: entry for entry in self.entries}

    async def fetch_authorized_entries(self) -> list[RegistrationEntry]:
        return list(self.entries)

    async def fetch_bundle(self) -> Bundle:
        return self.authority.bundle()

    async def fetch_bundles(self, entries: Sequence[RegistrationEntry]) -> TrustBundles:
        return await fetch_each_bundle(self, entries)

    async def fetch_federated_bundle(self, trust_domain: TrustDomain) -> Bundle | None:
        return None

    async def new_x509_svids(self, requests: Sequence[SvidRequest]) -> list[SvidResult]:
        return [self._sign(request) for request in requests]

    async def new_jwt_svid(self, entry_id: str, audience: Sequence[str]) -> JwtSvid:
        raise UnavailableError("the benchmark's server mints no JWT-SVID")

    def _sign(self, request: SvidRequest) -> SvidResult:
        entry = self._by_id[request.entry_id]
        csr = x509.load_der_x509_csr(request.csr_der)
        now = datetime.now(UTC)
        ca = self.authority.certificate
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(ca.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(seconds=10))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(entry.spiffe_id))]),
                critical=False,
            )
            .sign(self.authority.key, hashes.SHA256())
        )
        return SvidResult(
            entry.id,
            X509Svid(
                spiffe_id=entry.spiffe_id,
                cert_chain=(leaf.public_bytes(serialization.Encoding.DER),),
                expires_at=leaf.not_valid_after_utc,
            ),
        )


class CallerAttestor:
    """Reports the caller the benchmark is playing now (one selector per caller)."""

    def __init__(self) -> None:
        self.caller = 0

    async def attest(self, pid: int) -> list[str]:
        return [f"caller:{self.caller}"]


async def first_message(channel: Channel, expected: str) -> float:
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
        if response is None or [svid.spiffe_id for svid in response.svids] != [expected]:
            raise SystemExit(f"unexpected FetchX509SVID response: {response!r}")
        await stream.cancel()
    return elapsed


async def measure(samples: int, warmup: int) -> dict[str, list[float]]:
    clock = SystemClock()
    server = InProcessServer(samples + warmup + 1)
    cache = WorkloadCache(server, clock, x509_svid_cache_max_size=1)
    sync = SyncManager(server, cache, clock)
    attestor = CallerAttestor()
    service = WorkloadApiService(cache, WorkloadAttestation([("bench", attestor)]), clock)
    root = Path(tempfile.mkdtemp(prefix="ps-bench-", dir="/tmp"))
    timings: dict[str, list[float]] = {"on_demand": [], "cached": []}
    try:
        await sync.sync_now()  # learns every entry; mints only the first (the bound is one)
        async with WorkloadEndpoint(root / "api.sock", service, drain_timeout=1.0) as endpoint:
            channel = Channel(path=str(endpoint.socket_path))
            loop = asyncio.create_task(sync.run())
            try:
                await asyncio.sleep(0.1)  # let the loop's first sync pass
                for number in range(1, samples + warmup + 1):
                    attestor.caller = number
                    expected = str(server.entries[number].spiffe_id)
                    if cache.issued(server.entries[number].id) is not None:
                        raise SystemExit(f"entry {number} was minted before it was asked for")
                    on_demand = await first_message(channel, expected)
                    cached = await first_message(channel, expected)
                    if number > warmup:
                        timings["on_demand"].append(on_demand)
                        timings["cached"].append(cached)
            finally:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
                channel.close()
    finally:
        await cache.close()
        await asyncio.to_thread(shutil.rmtree, root, True)
    return timings


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=300, help="timed pairs of fetches")
    parser.add_argument("--warmup", type=int, default=20, help="untimed pairs of fetches")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    timings = asyncio.run(measure(args.samples, args.warmup))
    demand, cached = timings["on_demand"], timings["cached"]
    print(f"samples: {len(demand)} (after {args.warmup} warm-up samples)")
    print(f"{'':44} {'p50':>9} {'p99':>9} {'mean':>9}")
    for label, values in (
        ("first SVID, minted on demand", demand),
        ("floor: the same fetch, cached", cached),
    ):
        p50, p99 = percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3
        print(f"{label:44} {p50:7.3f}ms {p99:7.3f}ms {statistics.fmean(values) * 1e3:7.3f}ms")
    print(
        f"ratio on demand / cached: p50 {percentile(demand, 0.5) / percentile(cached, 0.5):.2f}x, "
        f"p99 {percentile(demand, 0.99) / percentile(cached, 0.99):.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
