"""Workload X509-SVID signing in the server's issuer, as a ratio to raw X.509 leaf signing.

    .venv/bin/python tests/bench/bench_issuance.py [--batches 40] [--batch-size 50] [--rounds 3]

The floor is ``cryptography`` building and signing the same kind of leaf with an in-process
key (``raw_signing_rate`` of ``bench_batch_new_x509_svid.py``). The measured path is
``SvidIssuer.workload_x509_batch``, in process, without the network: leaf templates, DER
encoding, signing through the in-process key manager, assembling the chain. It is measured
with no credential composer (what every server without one does) and with the ``uniqueid``
composer (every leaf composed, with its own subject), with the CPU each SVID costs on the event
loop's thread and in the whole process (leaves are signed in a worker thread: the two differ by
what the thread took off the loop). Rounds interleave the three measurements and the best of
each is printed, so a busy machine disturbs the ratios least.
Targets: ≥ 0.5 with no composer; the composed ratio shows what a chain costs.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from bench_batch_new_x509_svid import raw_signing_rate
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire_credentialcomposer_uniqueid import UniqueIdComposer
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig

from pyspire.ca.composition import CredentialComposition
from pyspire.ca.manager import CaManager, CaSettings
from pyspire.ca.x509svid import CheckedKey
from pyspire.catalog import NamedPlugin
from pyspire.server.issuer import IssuancePolicy, SvidIssuer
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.plugins.credential_composer import CredentialComposer
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import RecordingMetrics

TD = TrustDomain("example.org")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/bench/node1")


@dataclass
class Issuance:
    """The best of the rounds: SVIDs per second, and CPU microseconds per SVID on the event
    loop's thread and in the whole process (the loop and the threads signing and checking)."""

    rate: float = 0.0
    loop_cpu: float = float("inf")
    process_cpu: float = float("inf")


async def issuance_rates(batches: int, batch_size: int, rounds: int) -> dict[str, Issuance]:
    """The best of ``rounds``, with no composer and with ``uniqueid``."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as folder:
        host = HostServices(
            trust_domain=TD,
            clock=clock,
            logger=structlog.get_logger(),
            metrics=RecordingMetrics(),
            data_dir=Path(folder),
        )
        datastore = SqliteDataStore()
        await datastore.configure(SqliteDataStoreConfig(), host)
        keys = InProcessKeyManager()
        await keys.configure(NoConfig(), host)
        ca = CaManager(CaSettings(trust_domain=TD), key_manager=keys, store=datastore, clock=clock)
        await ca.start()
        uniqueid: list[NamedPlugin[CredentialComposer]] = [
            NamedPlugin("uniqueid", UniqueIdComposer())
        ]
        issuers = {
            "no composer": SvidIssuer(ca=ca, clock=clock, policy=IssuancePolicy()),
            "uniqueid composer": SvidIssuer(
                ca=ca,
                clock=clock,
                policy=IssuancePolicy(),
                composition=CredentialComposition(uniqueid),
            ),
        }
        entries = [
            RegistrationEntry(
                id=f"entry-{index}",
                spiffe_id=SpiffeId.parse(f"spiffe://example.org/workload/{index}"),
                parent_id=AGENT,
                selectors=(Selector("unix", f"uid:{index}"),),
            )
            for index in range(batch_size)
        ]
        public_keys = [
            CheckedKey.of(ec.generate_private_key(ec.SECP256R1()).public_key()) for _ in entries
        ]
        requests = list(zip(entries, public_keys, strict=True))
        best = {name: Issuance() for name in issuers}
        count = batches * batch_size
        for _ in range(rounds):
            for name, issuer in issuers.items():
                await issuer.workload_x509_batch(requests)  # warm up: caches, templates
                start = time.perf_counter()
                loop_start, process_start = time.thread_time(), time.process_time()
                for _ in range(batches):
                    results = await issuer.workload_x509_batch(requests)
                elapsed = time.perf_counter() - start
                loop_cpu = (time.thread_time() - loop_start) / count * 1e6
                process_cpu = (time.process_time() - process_start) / count * 1e6
                if any(isinstance(result, Exception) for result in results):
                    raise RuntimeError(f"a batch failed with {name}")
                kept = best[name]
                kept.rate = max(kept.rate, count / elapsed)
                kept.loop_cpu = min(kept.loop_cpu, loop_cpu)
                kept.process_cpu = min(kept.process_cpu, process_cpu)
        await keys.close()
        await datastore.close()
        return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    count = args.batches * args.batch_size
    floor = max(raw_signing_rate(count) for _ in range(args.rounds))
    rates = asyncio.run(issuance_rates(args.batches, args.batch_size, args.rounds))
    print(f"raw cryptography leaf signing: {floor:,.0f} SVIDs/s (floor, best of {args.rounds})")
    for name, issuance in rates.items():
        print(
            f"workload_x509_batch, {name}: {issuance.rate:,.0f} SVIDs/s, ratio to floor "
            f"{issuance.rate / floor:.2f}; CPU per SVID {issuance.loop_cpu:.1f} us on the event "
            f"loop, {issuance.process_cpu:.1f} us in the process"
        )
    print("target: >= 0.50 with no composer")


if __name__ == "__main__":
    main()
