"""The agent-side CPU of one attesting agent, piece by piece, before and after, against floors.

    .venv/bin/python tests/bench/bench_agent_attest_cost.py [--entries 20] [--rounds 15]
        [--agents 25]

An agent that attests builds two TLS client contexts (trust only, for AttestAgent; with its new
SVID, for every later call), then makes a key and a CSR for each of its entries and checks each
X509-SVID the server returns. Each piece is timed in this thread's CPU time (so other processes
on a shared machine weigh little), per agent, as:

* **before**: the code the agent ran until now, kept here as it was: contexts whose identity
  went through a temporary directory (two files) and whose PEM came from ``cryptography``;
  CSRs from ``cryptography``'s builder; each SVID parsed with its private key decoded again.
* **after**: the agent's code as it is (:func:`pyspire.transport.tls.build_client_context`,
  ``pyspire.agent.sync._make_requests`` and ``IssuedSvid.inspect`` as the sync manager calls
  it).
* **floor**, measured in the same run: for the contexts, ``ssl.SSLContext()`` and the OpenSSL
  loads alone (``load_verify_locations`` from DER; ``load_cert_chain`` from a file already
  written); for the CSRs, ``ec.generate_private_key`` and one ``key.sign`` of a request's
  size per entry; for the SVIDs, one ``load_der_x509_certificate`` per SVID.

The SVIDs are encoded as the server encodes them (:func:`pyspire.ca.svid_der.svid_tbs`), signed
by a P-256 CA. The kinds are taken in turn within every round, and each figure is the median over
``--rounds`` rounds of ``--agents`` agents (with the lowest and highest round), so that a
shared machine's changing load weighs on all alike. Nothing is asserted: benchmarks print.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from pyspire.agent.cache import IssuedSvid
from pyspire.agent.sync import _make_requests
from pyspire.ca.svid_der import svid_tbs
from pyspire.der import join_signed, signature_algorithm_der, split_signed
from pyspire.transport.tls import ALPN, build_client_context
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry, X509Svid
from pyspire_sdk.plugins.key_manager import KeyType
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId

TRUST_DOMAIN = "example.org"
AGENT_ID = SpiffeId.parse(f"spiffe://{TRUST_DOMAIN}/spire/agent/join_token/bench")


# -- the code before, kept as it was --------------------------------------------------------


def before_pem_chain(chain_der: Sequence[bytes]) -> bytes:
    return b"".join(
        x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        for der in chain_der
    )


def before_load_identity(
    context: ssl.SSLContext, chain_der: Sequence[bytes], key: PrivateKeyTypes
) -> None:
    with tempfile.TemporaryDirectory(prefix="pyspire-tls-") as folder:
        os.chmod(folder, 0o700)
        cert_path = Path(folder) / "svid.pem"
        key_path = Path(folder) / "svid.key"
        cert_path.write_bytes(before_pem_chain(chain_der))
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        context.load_cert_chain(cert_path, key_path)


def before_client_context(
    bundle_der: Sequence[bytes],
    chain_der: Sequence[bytes] = (),
    private_key: PrivateKeyTypes | None = None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=before_pem_chain(bundle_der).decode("ascii"))
    if chain_der and private_key is not None:
        before_load_identity(context, chain_der, private_key)
    return context


def before_make_requests(entries: Sequence[RegistrationEntry]) -> list[tuple[bytes, bytes]]:
    made = []
    for entry in entries:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(entry.spiffe_id))]),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        pkcs8 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        made.append((pkcs8, csr.public_bytes(serialization.Encoding.DER)))
    return made


def _before_spki(public_key: object) -> bytes:
    encoded: bytes = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


def _before_issuer_ids(chain: list[x509.Certificate]) -> frozenset[bytes]:
    top = chain[-1]
    ids = {
        b"cert:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
        for cert in chain[1:]
    }
    try:
        aki = top.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        aki = None
    if aki is not None and aki.key_identifier:
        ids.add(b"key:" + aki.key_identifier)
    else:
        ids.add(b"name:" + top.issuer.public_bytes())
    return frozenset(ids)


def before_inspect(entry: RegistrationEntry, svid: X509Svid) -> IssuedSvid:
    if not svid.cert_chain or svid.private_key is None:
        raise InvalidArgumentError("x509 svid is incomplete")
    chain = [x509.load_der_x509_certificate(der) for der in svid.cert_chain]
    leaf = chain[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris != [str(entry.spiffe_id)]:
        raise InvalidArgumentError("x509 svid leaf names another id")
    private_key = serialization.load_der_private_key(svid.private_key, password=None)
    if _before_spki(private_key.public_key()) != _before_spki(leaf.public_key()):
        raise InvalidArgumentError("x509 svid leaf does not certify the private key")
    return IssuedSvid(
        entry_id=entry.id,
        entry_revision=entry.revision_number,
        svid=svid,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        issuer_ids=_before_issuer_ids(chain),
    )


# -- what is measured -------------------------------------------------------------------------


class Authority:
    """A P-256 CA that signs SVIDs as the server encodes them."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")])
        self.key_id = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(self.key_id, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.der = self.certificate.public_bytes(serialization.Encoding.DER)

    def sign(self, spiffe_id: str, spki: bytes) -> bytes:
        now = datetime.now(UTC)
        algorithm = signature_algorithm_der(KeyType.EC_P256)
        tbs = svid_tbs(
            serial=secrets.randbits(127),
            signature_algorithm=algorithm,
            issuer=self.certificate.subject.public_bytes(),
            not_before=now - timedelta(seconds=10),
            not_after=now + timedelta(hours=1),
            spki=spki,
            authority_key_id=self.key_id.digest,
            spiffe_id=spiffe_id,
        )
        return join_signed(tbs, algorithm, self.key.sign(tbs, ec.ECDSA(hashes.SHA256())))


def entries_of(count: int) -> list[RegistrationEntry]:
    return [
        RegistrationEntry(
            id=f"entry-{number:04d}",
            spiffe_id=SpiffeId.parse(f"spiffe://{TRUST_DOMAIN}/workload/service-{number:04d}"),
            parent_id=AGENT_ID,
            selectors=(Selector.parse(f"unix:uid:{1000 + number}"),),
            revision_number=1,
        )
        for number in range(count)
    ]


def cpu(operation: Callable[[], object], agents: int) -> float:
    """CPU seconds of this thread per call of ``operation``, over ``agents`` calls."""
    start = time.thread_time()
    for _ in range(agents):
        operation()
    return (time.thread_time() - start) / agents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=20, help="entries of each agent")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of every kind")
    parser.add_argument("--agents", type=int, default=25, help="agents timed in each round")
    args = parser.parse_args(argv)

    authority = Authority()
    bundle = [authority.der]
    entries = entries_of(args.entries)
    agent_key = ec.generate_private_key(ec.SECP256R1())
    agent_spki = agent_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    agent_chain = [authority.sign(str(AGENT_ID), agent_spki)]

    # The SVIDs the server returns for one agent's requests, made once.
    made = _make_requests(KeyType.EC_P256, entries)
    now = datetime.now(UTC)
    svids = [
        X509Svid(
            entry.spiffe_id,
            (authority.sign(str(entry.spiffe_id), key.public_key_info),),
            now,
            key.private_key,
        )
        for entry, key in zip(entries, made, strict=True)
    ]

    identity_pem = agent_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + "".join(ssl.DER_cert_to_PEM_cert(der) for der in agent_chain).encode("ascii")
    folder = tempfile.TemporaryDirectory(prefix="bench-attest-")
    identity_path = Path(folder.name) / "identity.pem"  # written once: not part of the floor
    identity_path.write_bytes(identity_pem)
    cadata = b"".join(bundle)
    request_size = len(split_signed(made[0].csr)[0])  # what a CSR's signature covers

    def floor_trust() -> None:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cadata)

    def floor_identity() -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=cadata)
        context.load_cert_chain(identity_path)

    def floor_csrs() -> None:
        message = bytes(request_size)
        for _ in entries:
            ec.generate_private_key(ec.SECP256R1()).sign(message, ec.ECDSA(hashes.SHA256()))

    def floor_svids() -> None:
        for svid in svids:
            x509.load_der_x509_certificate(svid.cert_chain[0])

    def after_inspect() -> None:
        for entry, svid, key in zip(entries, svids, made, strict=True):
            IssuedSvid.inspect(entry, svid, public_key_info=key.public_key_info)

    def before_inspect_all() -> None:
        for entry, svid in zip(entries, svids, strict=True):
            before_inspect(entry, svid)

    pieces: dict[str, dict[str, Callable[[], object]]] = {
        "context, trust only (AttestAgent)": {
            "floor": floor_trust,
            "before": lambda: before_client_context(bundle),
            "after": lambda: build_client_context(bundle),
        },
        "context with the agent SVID": {
            "floor": floor_identity,
            "before": lambda: before_client_context(bundle, agent_chain, agent_key),
            "after": lambda: build_client_context(bundle, agent_chain, agent_key),
        },
        f"{args.entries} keys + CSRs": {
            "floor": floor_csrs,
            "before": lambda: before_make_requests(entries),
            "after": lambda: _make_requests(KeyType.EC_P256, entries),
        },
        f"inspecting {args.entries} SVIDs": {
            "floor": floor_svids,
            "before": before_inspect_all,
            "after": after_inspect,
        },
    }
    kinds = ("floor", "before", "after")
    samples: dict[tuple[str, str], list[float]] = {
        (piece, kind): [] for piece in pieces for kind in kinds
    }
    for operations in pieces.values():  # warm up
        for operation in operations.values():
            operation()
    for _ in range(args.rounds):
        for piece, operations in pieces.items():
            for kind in kinds:
                samples[piece, kind].append(cpu(operations[kind], args.agents))
    folder.cleanup()

    print(
        f"agent-side CPU per attesting agent, ms (median of {args.rounds} rounds of "
        f"{args.agents} agents, [lowest-highest round]); {ssl.OPENSSL_VERSION}; "
        f"{args.entries} entries, EC P-256"
    )
    print(f"{'piece':<36}{'floor':>22}{'before':>22}{'after':>22}   before/floor after/floor")
    totals = dict.fromkeys(kinds, 0.0)
    for piece in pieces:
        cells = []
        for kind in kinds:
            values = samples[piece, kind]
            median = statistics.median(values)
            totals[kind] += median
            cells.append(f"{median * 1e3:7.3f} [{min(values) * 1e3:.3f}-{max(values) * 1e3:.3f}]")
        floor = statistics.median(samples[piece, "floor"])
        before = statistics.median(samples[piece, "before"])
        after = statistics.median(samples[piece, "after"])
        print(
            f"{piece:<36}"
            + "".join(f"{cell:>22}" for cell in cells)
            + f"   {before / floor:11.2f} {after / floor:11.2f}"
        )
    print(
        f"{'total':<36}{totals['floor'] * 1e3:>22.3f}{totals['before'] * 1e3:>22.3f}"
        f"{totals['after'] * 1e3:>22.3f}   {totals['before'] / totals['floor']:11.2f}"
        f" {totals['after'] / totals['floor']:11.2f}"
    )
    print(
        f"saved per attesting agent: {(totals['before'] - totals['after']) * 1e3:.3f} ms of CPU "
        f"({(1 - totals['after'] / totals['before']) * 100:.0f} % of these pieces)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
