"""Benchmark of encoding a GetAuthorizedEntries response: cached entry bytes vs betterproto.

Run from the repository root: ``.venv/bin/python tests/bench/bench_authorized_entries_rpc.py``.

One agent holds 1,000 entries (each with three selectors, a DNS name, a hint and TTLs, like a
typical Kubernetes workload entry). Three ways to produce the response bytes are timed:

- **uncached**: build ``GetAuthorizedEntriesResponse`` messages and let betterproto encode them,
  as a service without the cache would on every call;
- **cold cache**: :class:`~pyspire.server.api.encoded.EncodedEntries` encodes each entry once
  with the generated codec and the response is assembled from the bytes (the first call after
  a change);
- **cached**: every entry's bytes are already cached; the response is only assembled (every
  later call).

Absolute times depend on the machine; the numbers to read are the ratios (uncached / cached),
measured in the same run. Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pyspire.proto.convert import entry_to_proto
from pyspire.proto.entries import get_authorized_entries_response
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.server.api.encoded import EncodedEntries
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId

AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/k8s_psat/cluster/node-1")


def make_entries(count: int) -> list[RegistrationEntry]:
    created = datetime(2030, 1, 1, tzinfo=UTC)
    return [
        RegistrationEntry(
            id=f"00000000-0000-4000-8000-{number:012d}",
            spiffe_id=SpiffeId.parse(f"spiffe://example.org/ns/team-{number % 40}/sa/app-{number}"),
            parent_id=AGENT,
            selectors=(
                Selector("k8s", f"ns:team-{number % 40}"),
                Selector("k8s", f"sa:app-{number}"),
                Selector("k8s", "container-name:main"),
            ),
            x509_svid_ttl=3600,
            jwt_svid_ttl=300,
            dns_names=(f"app-{number}.team-{number % 40}.svc.cluster.local",),
            revision_number=number % 7,
            hint=f"app-{number}",
            created_at=created,
        )
        for number in range(count)
    ]


def best_of(runs: int, action: Callable[[], bytes]) -> tuple[float, bytes]:
    """The fastest of ``runs`` timings of ``action`` (seconds) and its last result."""
    timings = []
    result = b""
    for _ in range(runs):
        start = time.perf_counter()
        result = action()
        timings.append(time.perf_counter() - start)
    return min(timings), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=1000, help="entries per response")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per variant (best kept)")
    args = parser.parse_args(argv)
    entries = make_entries(args.entries)

    def uncached() -> bytes:
        return bytes(
            entry_pb.GetAuthorizedEntriesResponse(
                entries=[entry_to_proto(entry) for entry in entries]
            )
        )

    def cold() -> bytes:
        cache = EncodedEntries()
        return bytes(get_authorized_entries_response(cache.encoded_many(entries)))

    warm_cache = EncodedEntries()
    warm_cache.encoded_many(entries)

    def cached() -> bytes:
        return bytes(get_authorized_entries_response(warm_cache.encoded_many(entries)))

    uncached_time, expected = best_of(args.runs, uncached)
    cold_time, cold_bytes = best_of(args.runs, cold)
    cached_time, cached_bytes = best_of(max(args.runs, 20), cached)
    if not expected == cold_bytes == cached_bytes:
        print("error: the assembled response differs from betterproto's encoding")
        return 1

    print(f"GetAuthorizedEntries response: {args.entries} entries, {len(expected):,} bytes")
    rows = [("uncached (betterproto)", uncached_time), ("cold cache", cold_time)]
    rows.append(("cached", cached_time))
    for name, seconds in rows:
        per_entry = seconds / args.entries * 1e6
        print(f"  {name:<24} {seconds * 1e3:9.2f} ms  ({per_entry:7.2f} µs per entry)")
    print(f"ratio uncached / cached: {uncached_time / cached_time:8.1f}x")
    print(f"ratio cold / cached:     {cold_time / cached_time:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
