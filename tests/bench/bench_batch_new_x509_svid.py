"""BatchNewX509SVID throughput over loopback mTLS, as a ratio to raw X.509 leaf signing.

    .venv/bin/python tests/bench/bench_batch_new_x509_svid.py [--batches 40] [--batch-size 50]
        [--uniqueid]

The floor is ``cryptography`` building and signing the same kind of leaf (URI SAN, the SVID
extensions, ECDSA P-256) with an in-process key, measured in the same run. The measured path is
the whole server, with the agent side in its own process as in production: TLS handshake done
once, the TCP gate checking the agent SVID, CSR parsing and signature checks, authorization
against the registry, signing through the key manager and encoding the reply; and on the agent
side what an agent does, the agent's own ``ServerClient.new_x509_svids`` (server ID check,
request encoding, reading the reply into SDK SVIDs). Prints SVIDs per second for both and their
ratio (target: ≥ 0.40). By default no credential composer is configured, the path every server
without one takes; ``--uniqueid`` configures the ``uniqueid`` composer, so every leaf goes
through a composer chain and gets a composed subject.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpclib.server
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyspire_credentialcomposer_uniqueid import UniqueIdComposer
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig

from pyspire.agent.client import ServerClient
from pyspire.agent.server_api import SvidRequest
from pyspire.ca.composition import CredentialComposition
from pyspire.ca.manager import CaManager, CaSettings
from pyspire.catalog import NamedPlugin
from pyspire.registry.cache import RegistryCache
from pyspire.server.api.gate import serial_hex
from pyspire.server.context import ServerContext
from pyspire.server.endpoints import ServerServices, tcp_servables
from pyspire.server.identity import ServerIdentity
from pyspire.server.issuer import IssuancePolicy, SvidIssuer
from pyspire.server.runtime import SERVER_API_LIMITS
from pyspire.transport.calls import InFlight
from pyspire.transport.tls import RotatingServerContext
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.model import AttestedNode, RegistrationEntry
from pyspire_sdk.plugin import NoConfig
from pyspire_sdk.plugins.credential_composer import CredentialComposer
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import RecordingMetrics

TD = TrustDomain("example.org")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/bench/node1")


def raw_signing_rate(count: int) -> float:
    """Leaves per second that cryptography alone signs with the same template."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bench")])
    leaf_keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(count)]
    now = datetime.now(UTC)
    start = time.perf_counter()
    for index, public_key in enumerate(leaf_keys):
        (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(index + 1)
            .not_valid_before(now)
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, True, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://example.org/w/{index}")]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
    return count / (time.perf_counter() - start)


def csr_for(key: ec.EllipticCurvePrivateKey) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


async def server_rate(
    batches: int, batch_size: int, in_flight: int = 4, uniqueid: bool = False
) -> float:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as folder:
        from pyspire_sdk.plugin import HostServices

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
        entries = [
            await datastore.create_entry(
                RegistrationEntry(
                    spiffe_id=SpiffeId.parse(f"spiffe://example.org/workload/{index}"),
                    parent_id=AGENT,
                    selectors=(Selector("unix", f"uid:{index}"),),
                )
            )
            for index in range(batch_size)
        ]
        registry = RegistryCache(datastore, TD, clock)
        composers: list[NamedPlugin[CredentialComposer]] = (
            [NamedPlugin("uniqueid", UniqueIdComposer())] if uniqueid else []
        )
        issuer = SvidIssuer(
            ca=ca,
            clock=clock,
            policy=IssuancePolicy(),
            composition=CredentialComposition(composers),
        )
        agent_key = ec.generate_private_key(ec.SECP256R1())
        agent_svid = await issuer.agent_x509(AGENT, agent_key.public_key())
        agent_leaf = x509.load_der_x509_certificate(agent_svid.cert_chain[0])
        await datastore.create_attested_node(
            AttestedNode(
                spiffe_id=AGENT,
                attestation_type="bench",
                x509_svid_serial_number=serial_hex(agent_leaf),
                x509_svid_expires_at=agent_svid.expires_at,
            )
        )
        await registry.start()
        context = ServerContext(
            trust_domain=TD,
            clock=clock,
            datastore=datastore,
            ca=ca,
            registry=registry,
            issuer=issuer,
            node_attestors={},
            started_at=clock.now(),
        )
        tls = RotatingServerContext()

        async def bundle():  # type: ignore[no-untyped-def]
            return await datastore.get_bundle(TD)

        identity = ServerIdentity(
            trust_domain=TD, ca=ca, bundle=bundle, clock=clock, tls=tls, ttl=timedelta(hours=1)
        )
        await identity.rotate()
        server = grpclib.server.Server(
            tcp_servables(
                ServerServices.build(context), context, InFlight(), limits=SERVER_API_LIMITS
            )
        )
        await server.start("127.0.0.1", 0, ssl=tls.listening)
        port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        authorities = [a.der for a in (await datastore.get_bundle(TD)).x509_authorities]  # type: ignore[union-attr]
        job = ClientJob(
            port=port,
            authorities=tuple(authorities),
            chain=agent_svid.cert_chain,
            key_pem=agent_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            entry_ids=tuple(entry.id for entry in entries),
            batches=batches,
            in_flight=in_flight,
        )
        loop = asyncio.get_running_loop()
        with concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            elapsed, timings = await loop.run_in_executor(pool, run_client, job)
        server.close()
        await server.wait_closed()
        await keys.close()
        await datastore.close()
        print(f"  batch p50 {statistics.median(timings) * 1000:.1f} ms")
        return batches * batch_size / elapsed


@dataclass(frozen=True)
class ClientJob:
    """What the agent-side process needs to call the server."""

    port: int
    authorities: tuple[bytes, ...]
    chain: tuple[bytes, ...]
    key_pem: bytes
    entry_ids: tuple[str, ...]
    batches: int
    in_flight: int


def run_client(job: ClientJob) -> tuple[float, list[float]]:
    """In its own process (as an agent would be): make CSRs, then time the batches."""
    return asyncio.run(_client(job))


async def _client(job: ClientJob) -> tuple[float, list[float]]:
    key = serialization.load_pem_private_key(job.key_pem, None)
    client = ServerClient(
        trust_domain=TD,
        address="127.0.0.1",
        port=job.port,
        bundle=Bundle(TD, tuple(X509Authority(der) for der in job.authorities)),
    )
    client.use_identity(job.chain, key)
    batches = [
        [
            SvidRequest(entry_id, csr_for(ec.generate_private_key(ec.SECP256R1())))
            for entry_id in job.entry_ids
        ]
        for _ in range(job.batches + 1)
    ]
    await client.new_x509_svids(batches[0])  # warm up: connection, caches
    timings: list[float] = []
    pending = iter(batches[1:])

    async def worker() -> None:
        for batch in pending:
            began = time.perf_counter()
            results = await client.new_x509_svids(batch)
            timings.append(time.perf_counter() - began)
            failed = [result for result in results if result.svid is None]
            if failed:
                raise RuntimeError(f"a batch failed: {failed[0].error}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(job.in_flight)))
    elapsed = time.perf_counter() - start
    await client.close()
    return elapsed, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument(
        "--in-flight", type=int, default=4, help="batches the agent side keeps in flight"
    )
    parser.add_argument(
        "--uniqueid", action="store_true", help="sign through the uniqueid credential composer"
    )
    args = parser.parse_args()
    floor = raw_signing_rate(args.batches * args.batch_size)
    measured = asyncio.run(
        server_rate(args.batches, args.batch_size, args.in_flight, uniqueid=args.uniqueid)
    )
    print(f"raw cryptography leaf signing: {floor:,.0f} SVIDs/s (floor)")
    composed = "with the uniqueid composer" if args.uniqueid else "no credential composer"
    print(
        f"BatchNewX509SVID over mTLS, batches of {args.batch_size}, {args.in_flight} in flight, "
        f"{composed}: {measured:,.0f} SVIDs/s"
    )
    print(f"ratio to floor: {measured / floor:.2f} (target >= 0.40)")


if __name__ == "__main__":
    main()
