"""An in-memory server for sync manager tests: it signs real X509-SVIDs with a real CA key,
mints JWT-SVIDs, and fails on demand (away, refusing the agent, refusing one entry)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from pyspire.agent.server_api import SvidRequest, SvidResult, TrustBundles, fetch_each_bundle
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.errors import PermissionDeniedError, UnavailableError
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock

TRUST_DOMAIN = TrustDomain("example.org")
AGENT_ID = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/abc")


def entry(
    name: str,
    *,
    selectors: Sequence[str] = ("unix:uid:1000",),
    revision: int = 1,
    federates_with: Sequence[str] = (),
    created: int = 0,
    x509_svid_ttl: int = 0,
    store_svid: bool = False,
) -> RegistrationEntry:
    """An entry with id ``name`` for ``spiffe://example.org/<name>`` under the agent."""
    return RegistrationEntry(
        id=name,
        spiffe_id=SpiffeId.parse(f"spiffe://example.org/{name}"),
        parent_id=AGENT_ID,
        selectors=tuple(Selector.parse(value) for value in selectors),
        revision_number=revision,
        federates_with=tuple(TrustDomain(value) for value in federates_with),
        created_at=datetime(2029, 1, 1, tzinfo=UTC) + timedelta(seconds=created),
        x509_svid_ttl=x509_svid_ttl,
        store_svid=store_svid,
    )


_BACKDATE = timedelta(seconds=10)


class FakeCa:
    """A self-signed CA with an in-process key; every CA made has the same subject name, as
    rotated CAs of one trust domain do."""

    def __init__(self, clock: FakeClock, trust_domain: TrustDomain = TRUST_DOMAIN) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")])
        key_id = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        now = clock.now()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(key_id, critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def sign_leaf(
        self,
        spiffe_id: SpiffeId,
        public_key: CertificatePublicKeyTypes,
        now: datetime,
        ttl: timedelta,
    ) -> x509.Certificate:
        issuer_key_id = self.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + ttl, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key_id),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def authority(self) -> X509Authority:
        return X509Authority(self.certificate.public_bytes(serialization.Encoding.DER))


class FakeServerApi:
    """An :class:`~pyspire.agent.server_api.AgentServerApi` held in memory."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        svid_ttl: timedelta = timedelta(hours=1),
        jwt_ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self.clock = clock
        self.svid_ttl = svid_ttl
        self.jwt_ttl = jwt_ttl
        self.ca = FakeCa(clock)
        self.entries: dict[str, RegistrationEntry] = {}
        self.bundle = Bundle(
            trust_domain=TRUST_DOMAIN, x509_authorities=(self.ca.authority,), sequence_number=1
        )
        self.federated: dict[TrustDomain, Bundle] = {}
        self.unavailable = False
        self.denied: str | None = None
        self.refuse: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.federated_requests: list[TrustDomain] = []
        self.batches: list[list[str]] = []
        self.jwt_gate: asyncio.Event | None = None
        self.jwt_error: Exception | None = None
        self.jwt_audiences: list[tuple[str, ...]] = []
        self.csr_public_keys: dict[str, bytes] = {}
        self._jwt_serial = 0

    # -- test controls -----------------------------------------------------------------------

    def add(self, *entries: RegistrationEntry) -> None:
        for item in entries:
            self.entries[item.id] = item

    def bump(self, entry_id: str) -> RegistrationEntry:
        """Give an entry a new revision, as an update on the server would."""
        updated = replace(
            self.entries[entry_id], revision_number=self.entries[entry_id].revision_number + 1
        )
        self.entries[entry_id] = updated
        return updated

    def rotate_ca(self, *, keep_old: bool, taint_old: bool = False) -> None:
        """Sign with a new CA from now on; the old one stays in the bundle only if asked."""
        old = replace(self.ca.authority, tainted=taint_old)
        self.ca = FakeCa(self.clock)
        authorities = (old, self.ca.authority) if keep_old else (self.ca.authority,)
        self.bundle = self.bundle.with_changes(x509_authorities=authorities)

    def _gate(self, name: str) -> None:
        self.calls[name] += 1
        if self.denied is not None:
            raise PermissionDeniedError(self.denied)
        if self.unavailable:
            raise UnavailableError("connection refused")

    # -- AgentServerApi ----------------------------------------------------------------------

    async def fetch_authorized_entries(self) -> list[RegistrationEntry]:
        self._gate("fetch_authorized_entries")
        return list(self.entries.values())

    async def fetch_bundle(self) -> Bundle:
        self._gate("fetch_bundle")
        return self.bundle

    async def fetch_bundles(self, entries: Sequence[RegistrationEntry]) -> TrustBundles:
        return await fetch_each_bundle(self, entries)

    async def fetch_federated_bundle(self, trust_domain: TrustDomain) -> Bundle | None:
        self._gate("fetch_federated_bundle")
        self.federated_requests.append(trust_domain)
        return self.federated.get(trust_domain)

    async def new_x509_svids(self, requests: Sequence[SvidRequest]) -> list[SvidResult]:
        self._gate("new_x509_svids")
        self.batches.append([request.entry_id for request in requests])
        results = []
        for request in requests:
            registered = self.entries.get(request.entry_id)
            if registered is None:
                results.append(
                    SvidResult(request.entry_id, None, "entry not found or not authorized")
                )
                continue
            if request.entry_id in self.refuse:
                results.append(SvidResult(request.entry_id, None, self.refuse[request.entry_id]))
                continue
            try:
                csr = x509.load_der_x509_csr(request.csr_der)
            except ValueError:
                results.append(SvidResult(request.entry_id, None, "malformed CSR"))
                continue
            if not csr.is_signature_valid:
                results.append(SvidResult(request.entry_id, None, "invalid CSR signature"))
                continue
            public_key = csr.public_key()
            self.csr_public_keys[request.entry_id] = public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            ttl = (
                timedelta(seconds=registered.x509_svid_ttl)
                if registered.x509_svid_ttl
                else self.svid_ttl
            )
            certificate = self.ca.sign_leaf(registered.spiffe_id, public_key, self.clock.now(), ttl)
            results.append(
                SvidResult(
                    request.entry_id,
                    X509Svid(
                        spiffe_id=registered.spiffe_id,
                        cert_chain=(certificate.public_bytes(serialization.Encoding.DER),),
                        expires_at=certificate.not_valid_after_utc,
                        hint=registered.hint,
                    ),
                )
            )
        return results

    async def new_jwt_svid(self, entry_id: str, audience: Sequence[str]) -> JwtSvid:
        self._gate("new_jwt_svid")
        self.jwt_audiences.append(tuple(audience))
        if self.jwt_gate is not None:
            await self.jwt_gate.wait()
        if self.jwt_error is not None:
            raise self.jwt_error
        registered = self.entries[entry_id]
        self._jwt_serial += 1
        now = self.clock.now()
        return JwtSvid(
            spiffe_id=registered.spiffe_id,
            token=f"token-{self._jwt_serial}",
            audience=tuple(audience),
            expires_at=now + self.jwt_ttl,
            issued_at=now,
        )


def leaf(svid: X509Svid) -> x509.Certificate:
    return x509.load_der_x509_certificate(svid.cert_chain[0])
