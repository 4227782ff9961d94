"""SVID issuance policy: which TTL, which names, and which chain each kind of SVID gets.

The CA (:mod:`pyspire.ca`) knows how to sign; this module decides what: workload SVIDs take the
entry's TTL (or the server default) and DNS names, agent SVIDs take ``agent_ttl``, JWT-SVIDs the
entry's JWT TTL (or the default), and every expiry is capped by the signing authority. The
configured credential composers then adjust each one before it is signed
(:mod:`pyspire.ca.composition`): agent SVIDs as agents', everything else as workloads'.

With a :class:`~pyspire.ca.worker_pool.SigningPool` (``signing_processes``), batches of CSRs are
checked and batches of workload leaves signed in worker processes; without one, both run in
worker threads (``cryptography`` releases the GIL while it verifies and signs;
:mod:`pyspire.ca.thread_signer`), and a key that stays in a KMS signs through its key manager.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pyspire.ca.composition import CredentialComposition, SvidKind
from pyspire.ca.jwt import mint_jwt_svid
from pyspire.ca.manager import CaManager
from pyspire.ca.thread_signer import ThreadSigner
from pyspire.ca.worker_pool import SigningPool
from pyspire.ca.x509svid import (
    CheckedKey,
    LeafRequest,
    MintedSvid,
    checked_csr,
    mint_leaf,
    mint_x509_svids,
)
from pyspire.telemetry.metrics import SVID_JWT_SIGNED, SVID_X509_SIGNED, PrometheusMetrics
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PyspireError
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.plugins.credential_composer import JwtSvidClaims
from pyspire_sdk.spiffeid import SpiffeId


@dataclass(frozen=True)
class IssuancePolicy:
    """TTLs and the JWT issuer, from the server configuration."""

    default_x509_svid_ttl: timedelta = timedelta(hours=1)
    default_jwt_svid_ttl: timedelta = timedelta(minutes=5)
    agent_ttl: timedelta = timedelta(hours=1)
    jwt_issuer: str = ""


class SvidIssuer:
    """Mints X509- and JWT-SVIDs with the CA's active authorities."""

    def __init__(
        self,
        *,
        ca: CaManager,
        clock: Clock,
        policy: IssuancePolicy,
        composition: CredentialComposition | None = None,
        metrics: PrometheusMetrics | None = None,
        pool: SigningPool | None = None,
    ) -> None:
        self._ca = ca
        self._pool = pool
        self._signer = pool if pool is not None else ThreadSigner()
        self._clock = clock
        self.policy = policy
        self._composition = composition or CredentialComposition()
        self._metrics = metrics if metrics is not None else PrometheusMetrics("pyspire_server")

    async def check_csrs(
        self, csrs: Sequence[bytes]
    ) -> list[CertificatePublicKeyTypes | PyspireError]:
        """The public key of each CSR whose self-signature holds, or why it was refused; off
        the event loop (in the pool's workers, or a worker thread)."""
        return [
            checked if isinstance(checked, PyspireError) else checked.public_key
            for checked in await self.check_csr_keys(csrs)
        ]

    async def check_csr_keys(self, csrs: Sequence[bytes]) -> list[CheckedKey | PyspireError]:
        """:meth:`check_csrs` with each key's encoding, which the leaf for it then carries as
        it is (see :func:`~pyspire.ca.x509svid.checked_csr`)."""
        if self._pool is not None:
            return await self._pool.check_csrs(csrs)
        return await asyncio.to_thread(_checked_keys, csrs)

    async def x509(
        self,
        spiffe_id: SpiffeId,
        public_key: CertificatePublicKeyTypes,
        *,
        ttl: timedelta | None = None,
        dns_names: Sequence[str] = (),
    ) -> X509Svid:
        """A workload X509-SVID for ``public_key``; ``ttl`` None means the default workload
        TTL."""
        return await self._sign(
            SvidKind.WORKLOAD,
            spiffe_id,
            public_key,
            ttl or self.policy.default_x509_svid_ttl,
            dns_names,
        )

    async def _sign(
        self,
        kind: SvidKind,
        spiffe_id: SpiffeId,
        public_key: CertificatePublicKeyTypes,
        ttl: timedelta,
        dns_names: Sequence[str] = (),
    ) -> X509Svid:
        request = await self._composition.leaf(
            kind, spiffe_id, public_key, ttl=ttl, dns_names=dns_names
        )
        minted = await mint_leaf(self._ca.x509_ca, request, now=self._clock.now())
        self._metrics.increment(SVID_X509_SIGNED)
        return X509Svid(spiffe_id=spiffe_id, cert_chain=minted.chain, expires_at=minted.not_after)

    async def workload_x509(
        self, entry: RegistrationEntry, public_key: CertificatePublicKeyTypes
    ) -> X509Svid:
        """The X509-SVID an entry describes, for a key its agent generated."""
        ttl = timedelta(seconds=entry.x509_svid_ttl) if entry.x509_svid_ttl else None
        svid = await self.x509(entry.spiffe_id, public_key, ttl=ttl, dns_names=entry.dns_names)
        return X509Svid(
            spiffe_id=svid.spiffe_id,
            cert_chain=svid.cert_chain,
            expires_at=svid.expires_at,
            hint=entry.hint,
        )

    async def workload_x509_batch(
        self, requests: Sequence[tuple[RegistrationEntry, CheckedKey]]
    ) -> list[X509Svid | PyspireError]:
        """The X509-SVID each (entry, key) pair describes, as :meth:`workload_x509` makes it,
        or why that one could not be signed; in request order.

        The whole batch is signed by the same CA at the same ``now``; a failed item does not
        affect the others. An error that concerns the whole batch (no active CA) is raised.
        """
        default_ttl = self.policy.default_x509_svid_ttl
        minted: list[MintedSvid | PyspireError]
        if not self._composition.active:
            leaves = [
                LeafRequest(
                    entry.spiffe_id,
                    key.public_key,
                    timedelta(seconds=entry.x509_svid_ttl) if entry.x509_svid_ttl else default_ttl,
                    entry.dns_names,
                    spki=key.spki,
                )
                for entry, key in requests
            ]
            minted = await mint_x509_svids(
                self._ca.x509_ca, leaves, now=self._clock.now(), signer=self._signer
            )
        else:
            composed = [
                await self._composed_leaf(entry, key.public_key, default_ttl)
                for entry, key in requests
            ]
            signable = [leaf for leaf in composed if isinstance(leaf, LeafRequest)]
            signed = iter(
                await mint_x509_svids(
                    self._ca.x509_ca, signable, now=self._clock.now(), signer=self._signer
                )
            )
            minted = [leaf if isinstance(leaf, PyspireError) else next(signed) for leaf in composed]
        self._metrics.increment(SVID_X509_SIGNED, sum(isinstance(m, MintedSvid) for m in minted))
        return [
            result
            if isinstance(result, PyspireError)
            else X509Svid(
                spiffe_id=entry.spiffe_id,
                cert_chain=result.chain,
                expires_at=result.not_after,
                hint=entry.hint,
            )
            for (entry, _), result in zip(requests, minted, strict=True)
        ]

    async def _composed_leaf(
        self,
        entry: RegistrationEntry,
        public_key: CertificatePublicKeyTypes,
        default_ttl: timedelta,
    ) -> LeafRequest | PyspireError:
        try:
            return await self._composition.leaf(
                SvidKind.WORKLOAD,
                entry.spiffe_id,
                public_key,
                ttl=timedelta(seconds=entry.x509_svid_ttl) if entry.x509_svid_ttl else default_ttl,
                dns_names=entry.dns_names,
            )
        except PyspireError as error:
            return error

    async def agent_x509(
        self, agent_id: SpiffeId, public_key: CertificatePublicKeyTypes
    ) -> X509Svid:
        """An agent's own X509-SVID."""
        return await self._sign(SvidKind.AGENT, agent_id, public_key, self.policy.agent_ttl)

    async def jwt(
        self,
        spiffe_id: SpiffeId,
        audience: Sequence[str],
        *,
        ttl: timedelta | None = None,
        hint: str = "",
    ) -> JwtSvid:
        """A JWT-SVID for every audience given; ``ttl`` None means the default JWT TTL.

        Composers see the claims beside those the JWT-SVID standard reserves, ``iss`` included
        when ``jwt_issuer`` is configured, and decide them all."""
        issuer = self.policy.jwt_issuer
        extra_claims = None
        if self._composition.active:
            composed = await self._composition.jwt_claims(
                spiffe_id, JwtSvidClaims({"iss": issuer} if issuer else {})
            )
            extra_claims, issuer = composed.to_dict(), ""
        now = self._clock.now()
        token, expires_at = await mint_jwt_svid(
            self._ca.jwt_key,
            spiffe_id=spiffe_id,
            audience=audience,
            ttl=ttl or self.policy.default_jwt_svid_ttl,
            now=now,
            issuer=issuer,
            extra_claims=extra_claims,
        )
        self._metrics.increment(SVID_JWT_SIGNED)
        return JwtSvid(
            spiffe_id=spiffe_id,
            token=token,
            audience=tuple(audience),
            expires_at=expires_at,
            issued_at=now.replace(microsecond=0),
            hint=hint,
        )

    async def workload_jwt(self, entry: RegistrationEntry, audience: Sequence[str]) -> JwtSvid:
        """The JWT-SVID an entry describes."""
        ttl = timedelta(seconds=entry.jwt_svid_ttl) if entry.jwt_svid_ttl else None
        return await self.jwt(entry.spiffe_id, audience, ttl=ttl, hint=entry.hint)


def _checked_keys(csrs: Sequence[bytes]) -> list[CheckedKey | PyspireError]:
    keys: list[CheckedKey | PyspireError] = []
    for csr in csrs:
        try:
            keys.append(checked_csr(csr))
        except PyspireError as error:
            keys.append(error)
    return keys
