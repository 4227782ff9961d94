"""Benchmark of the Delegated Identity API's encoding: the SubscribeToX509SVIDs and
FetchJWTSVIDs responses written by the generated codecs (as the service writes them) against
the same messages built and serialized with betterproto (as the service did before), in the
same run.

Run from the repository root: ``.venv/bin/python tests/bench/bench_delegated.py``.

The snapshot holds ``--svids`` identities of one delegated workload (real certificates and
keys, :mod:`bench_workload_api`'s); each sample is the mean of 100 encodings. The betterproto
figure is the floor the ratios are given against: below 1.0x the codecs cost less. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bench_workload_api import make_snapshot, percentile

from pyspire.agent.admin import DelegatedIdentityService
from pyspire.agent.identities import Identity, Snapshot
from pyspire.agent.workload import WorkloadAttestation
from pyspire.proto.convert import jwt_svid_to_proto, x509_svid_to_proto
from pyspire.proto.gen.codec import spire_api_agent_delegatedidentity_v1 as wire
from pyspire.proto.gen.spire.api.agent.delegatedidentity import v1 as delegated_pb
from pyspire.proto.svids import encode_jwt_svid
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.model import JwtSvid
from pyspire_sdk.selector import Selector


class _NoAttestor:
    """Never called: the benchmark encodes without calls."""

    async def attest(self, pid: int) -> tuple[Selector, ...]:
        raise AssertionError("not called")


def snapshot_with(count: int) -> Snapshot:
    base = make_snapshot()
    [identity] = base.identities
    identities = tuple(
        Identity(
            entry=replace(identity.entry, id=f"bench-{index}", hint=f"h{index}"),
            svid=identity.svid,
        )
        for index in range(count)
    )
    return replace(base, identities=identities)


def betterproto_x509(snapshot: Snapshot) -> bytes:
    """The SubscribeToX509SVIDs response as the service built it with betterproto."""
    svids = [
        delegated_pb.X509SvidWithKey(
            x509_svid=x509_svid_to_proto(replace(i.svid, hint=i.entry.hint)),
            x509_svid_key=i.svid.private_key or b"",
        )
        for i in snapshot.identities
    ]
    return bytes(delegated_pb.SubscribeToX509SviDsResponse(x509_svids=svids, federates_with=[]))


def jwt_svids(snapshot: Snapshot) -> list[JwtSvid]:
    now = datetime.now(UTC)
    return [
        JwtSvid(
            spiffe_id=i.entry.spiffe_id,
            token="eyJhbGciOiJFUzI1NiJ9." + "x" * 300 + ".sig",
            audience=("db",),
            expires_at=now + timedelta(minutes=5),
            issued_at=now,
            hint=i.entry.hint,
        )
        for i in snapshot.identities
    ]


def sample(work: Callable[[], object], batch: int) -> float:
    start = time.perf_counter()
    for _ in range(batch):
        work()
    return (time.perf_counter() - start) / batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--svids", type=int, default=10, help="identities of the workload")
    parser.add_argument("--samples", type=int, default=100, help="samples of each kind")
    args = parser.parse_args(argv)

    snapshot = snapshot_with(args.svids)
    selectors = frozenset({Selector("unix", f"uid:{os.getuid()}")})
    service = DelegatedIdentityService(
        _FixedSource(snapshot),  # type: ignore[arg-type]
        WorkloadAttestation([("none", _NoAttestor())]),  # type: ignore[list-item]
        SystemClock(),
        authorized_delegates=(),
    )
    tokens = jwt_svids(snapshot)
    assert service._x509_svids_response(snapshot, selectors) == betterproto_x509(snapshot)

    kinds: dict[str, Callable[[], object]] = {
        "x509 codec": lambda: service._x509_svids_response(snapshot, selectors),
        "x509 betterproto": lambda: betterproto_x509(snapshot),
        "jwt codec": lambda: wire.write_FetchJWTSVIDsResponse(
            svids=[encode_jwt_svid(svid) for svid in tokens]
        ),
        "jwt betterproto": lambda: bytes(
            delegated_pb.FetchJwtsviDsResponse(svids=[jwt_svid_to_proto(s) for s in tokens])
        ),
    }
    timings: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(args.samples):
        for name, work in kinds.items():
            timings[name].append(sample(work, 100))

    print(f"{args.svids} SVIDs a response, {args.samples} samples of 100 encodings")
    for name, values in timings.items():
        p50 = percentile(values, 0.5) * 1e6
        print(f"{name:20} p50 {p50:9.2f}us  mean {statistics.fmean(values) * 1e6:9.2f}us")
    for kind in ("x509", "jwt"):
        ratio = percentile(timings[f"{kind} codec"], 0.5) / percentile(
            timings[f"{kind} betterproto"], 0.5
        )
        print(f"ratio {kind} codec / betterproto floor: p50 {ratio:.2f}x")
    return 0


class _FixedSource:
    """Only what the encoding reads of an identity source."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> Snapshot:
        return self._snapshot


if __name__ == "__main__":
    sys.exit(main())
