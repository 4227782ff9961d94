"""Workload X509-SVID issuance with the CA key in KMS (moto on loopback), as a ratio to the
same issuance with the CA key on disk, measured in the same run.

    .venv/bin/python tests/bench/bench_kms_issuance.py [--batches 4] [--batch-size 25] [--rounds 3]

What is measured, for each key manager: ``SvidIssuer.workload_x509_batch`` in process, without
the server's network API, through the server's ``CaManager`` whose X.509 CA key is held by the
key manager: leaf templates, DER encoding, one signature per leaf, chain assembly. The
floor is the same path with the ``disk`` key manager (the key in process, signing in
microseconds). With ``aws_kms`` each leaf costs one KMS ``Sign`` call over HTTP to moto's server
on 127.0.0.1 (a thread of this process, so it shares the interpreter with the issuer) plus the
key manager's verification of the returned signature. The key manager sends each TBSCertificate
whole (``MessageType=RAW``), which moto, unpatched, signs as AWS does; after the timed rounds
every SVID of the last batch is checked against its CA certificate. Against AWS itself a
``Sign`` call takes a network round trip and KMS's own time instead, so the ratio here says
what the plugin and the HTTP exchange cost, not what AWS costs. Rounds interleave the two
measurements and the best of each is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig
from pyspire_keymanager_aws_kms import AwsKmsKeyManager, AwsKmsKeyManagerConfig
from pyspire_keymanager_disk import DiskKeyManager, DiskKeyManagerConfig

from pyspire.ca.manager import CaManager, CaSettings
from pyspire.ca.x509svid import CheckedKey
from pyspire.server.issuer import IssuancePolicy, SvidIssuer
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.errors import PyspireError
from pyspire_sdk.model import RegistrationEntry, X509Svid
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.key_manager import KeyManager
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import RecordingMetrics
from pyspire_sdk.testing.aws import MotoServer

TD = TrustDomain("example.org")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/bench/node1")


async def _issuer(
    name: str, host: HostServices, folder: Path
) -> tuple[SvidIssuer, KeyManager, SqliteDataStore, x509.Certificate]:
    keys: KeyManager
    if name == "disk":
        keys = DiskKeyManager()
        await keys.configure(DiskKeyManagerConfig(), host)
    else:
        keys = AwsKmsKeyManager()
        config = AwsKmsKeyManagerConfig(region="us-east-1", key_identifier_value="bench")
        await keys.configure(config, host)
    datastore = SqliteDataStore()
    await datastore.configure(SqliteDataStoreConfig(database_path=folder / f"{name}.sqlite3"), host)
    clock = host.clock
    ca = CaManager(CaSettings(trust_domain=TD), key_manager=keys, store=datastore, clock=clock)
    await ca.start()
    issuer = SvidIssuer(ca=ca, clock=clock, policy=IssuancePolicy())
    return issuer, keys, datastore, ca.x509_ca.certificate


def _check(kind: str, results: Sequence[X509Svid | PyspireError], ca: x509.Certificate) -> None:
    """Every SVID of a batch was signed by the CA: a wrong signature fails the run."""
    for result in results:
        if isinstance(result, PyspireError):
            raise RuntimeError(f"a batch failed with {kind}: {result}")
        x509.load_der_x509_certificate(result.cert_chain[0]).verify_directly_issued_by(ca)


async def issuance_rates(batches: int, batch_size: int, rounds: int) -> dict[str, float]:
    """Best SVIDs per second over ``rounds`` with each key manager."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    entries = [
        RegistrationEntry(
            id=f"entry-{index}",
            spiffe_id=SpiffeId.parse(f"spiffe://example.org/workload/{index}"),
            parent_id=AGENT,
            selectors=(Selector("unix", f"uid:{index}"),),
        )
        for index in range(batch_size)
    ]
    requests = [
        (entry, CheckedKey.of(ec.generate_private_key(ec.SECP256R1()).public_key()))
        for entry in entries
    ]
    best = {"disk": 0.0, "aws_kms": 0.0}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        issuers = {}
        cas: dict[str, x509.Certificate] = {}
        for kind in best:
            (folder / kind).mkdir()
            host = HostServices(
                trust_domain=TD,
                clock=SystemClock(),
                logger=structlog.get_logger(),
                metrics=RecordingMetrics(),
                data_dir=folder / kind,
            )
            issuer, keys, datastore, ca = await _issuer(kind, host, folder)
            issuers[kind] = (issuer, keys, datastore)
            cas[kind] = ca
        for _ in range(rounds):
            for kind, (issuer, _keys, _store) in issuers.items():
                await issuer.workload_x509_batch(requests)  # warm up
                start = time.perf_counter()
                for _ in range(batches):
                    results = await issuer.workload_x509_batch(requests)
                elapsed = time.perf_counter() - start
                best[kind] = max(best[kind], batches * batch_size / elapsed)
                _check(kind, results, cas[kind])
        for _svid_issuer, keys, datastore in issuers.values():
            await keys.close()
            await datastore.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with MotoServer() as aws:
        os.environ.update(aws.environment())
        rates = asyncio.run(issuance_rates(args.batches, args.batch_size, args.rounds))
    floor = rates["disk"]
    print(f"workload_x509_batch, disk key manager: {floor:,.0f} SVIDs/s (floor)")
    kms = rates["aws_kms"]
    print(
        f"workload_x509_batch, aws_kms key manager (moto on loopback): {kms:,.0f} SVIDs/s, "
        f"ratio to floor {kms / floor:.3f}"
    )


if __name__ == "__main__":
    main()
