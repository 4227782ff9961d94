"""This test process as a workload: X.509 fetches through py-spiffe, timed and judged.

Scenarios call :func:`fetch` once per tick against an agent's Workload API, or let a
:class:`Fetcher` do so in the background, and keep what comes back: when the call ended, how
long it took, which SVID arrived, whether it was valid at that moment and which authority of the
bundle delivered with it the SVID chains to. A failed call is an :class:`Outcome` too (with the
gRPC status name), so scenarios count failures instead of stopping at the first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from spiffe import TrustDomain, WorkloadApiClient

FETCH_TIMEOUT = 5.0
"""Seconds one fetch may take before it counts as failed."""

_EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True)
class Outcome:
    """One X.509 fetch: ``error`` is empty when an SVID came back."""

    started: datetime
    """When the call was made."""
    ended: datetime
    """When the answer (or the failure) arrived."""
    latency: float
    """Seconds the call took."""
    error: str = ""
    spiffe_id: str = ""
    serial: int = 0
    not_after: datetime = _EPOCH
    issuer_key: bytes = b""
    """The public key (DER) of the bundle authority the SVID chains to; empty when none."""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def chains(self) -> bool:
        return bool(self.issuer_key)

    @property
    def valid(self) -> bool:
        """An SVID came back that had not expired when the call was made (one that expires
        while the answer travels was still the agent's to give)."""
        return self.ok and self.started < self.not_after


def _key(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _valid_at(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc


def chained_authority(
    chain: Sequence[x509.Certificate], authorities: Iterable[x509.Certificate], now: datetime
) -> x509.Certificate | None:
    """The authority of ``authorities`` that ``chain`` (leaf first) leads to, every link's
    signature verified and every certificate valid at ``now``; None when there is none."""
    trusted = list(authorities)
    current = chain[0]
    rest = list(chain[1:])
    for _ in range(len(chain)):
        if not _valid_at(current, now):
            return None
        for issuer in [*trusted, *rest]:
            if issuer.subject != current.issuer or not _valid_at(issuer, now):
                continue
            try:
                current.verify_directly_issued_by(issuer)
            except (InvalidSignature, ValueError, TypeError):
                continue
            if issuer in trusted:
                return issuer
            current = issuer
            rest.remove(issuer)
            break
        else:
            return None
    return None


def status_name(error: BaseException) -> str:
    """The gRPC status behind a py-spiffe error (it chains the grpc.RpcError), else the
    exception's type."""
    cause: BaseException | None = error
    while cause is not None:
        code = getattr(cause, "code", None)
        if callable(code):
            return str(code().name)
        cause = cause.__cause__
    return type(error).__name__


def fetch(client: WorkloadApiClient, trust_domain: str) -> Outcome:
    """Fetch the X.509 context once and judge the default SVID against the bundle that came
    with it."""
    started = time.monotonic()
    made = datetime.now(UTC)
    try:
        context = client.fetch_x509_context(timeout=FETCH_TIMEOUT)
    except Exception as error:
        return Outcome(
            started=made,
            ended=datetime.now(UTC),
            latency=time.monotonic() - started,
            error=status_name(error),
        )
    latency = time.monotonic() - started
    now = datetime.now(UTC)
    svid = context.default_svid
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(trust_domain))
    authorities = bundle.x509_authorities if bundle is not None else set()
    issuer = chained_authority(svid.cert_chain, authorities, made)
    return Outcome(
        started=made,
        ended=now,
        latency=latency,
        spiffe_id=str(svid.spiffe_id),
        serial=svid.leaf.serial_number,
        not_after=svid.leaf.not_valid_after_utc,
        issuer_key=_key(issuer) if issuer is not None else b"",
    )


class Fetcher:
    """Fetches every ``period`` seconds on a thread of its own until stopped; :attr:`outcomes`
    grows as it goes (read it after :meth:`stop`, or copy it while running)."""

    def __init__(self, endpoint: str, trust_domain: str, period: float) -> None:
        self._endpoint = endpoint
        self._trust_domain = trust_domain
        self._period = period
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fetcher", daemon=True)
        self.outcomes: list[Outcome] = []

    def _run(self) -> None:
        with WorkloadApiClient(socket_path=self._endpoint) as client:
            tick = time.monotonic()
            while not self._stopping.is_set():
                self.outcomes.append(fetch(client, self._trust_domain))
                tick += self._period
                self._stopping.wait(max(0.0, tick - time.monotonic()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=FETCH_TIMEOUT * 2)

    def first_valid_after(self, moment: datetime) -> Outcome | None:
        """The first fetch that ended at or after ``moment`` with an unexpired SVID."""
        return next((o for o in list(self.outcomes) if o.valid and o.ended >= moment), None)


@contextmanager
def fetching(endpoint: str, trust_domain: str, period: float) -> Iterator[Fetcher]:
    """A running :class:`Fetcher`, stopped on exit."""
    fetcher = Fetcher(endpoint, trust_domain, period)
    fetcher.start()
    try:
        yield fetcher
    finally:
        fetcher.stop()
