"""The server's own X509-SVID (``spiffe://<td>/spire/server``) and the TLS it serves with.

The SVID is minted from the active CA with a fresh in-process key, re-minted at half-life,
whenever the CA changes (a new authority prepared or activated) and whenever the trust bundle
changes (another server sharing the datastore published its CA), and handed to the TLS listener
together with the current bundle, so agents always see a server SVID that chains to what they
trust and the server always trusts agent SVIDs from every published authority, whichever
server signed them. Credential
composers adjust it as the server's own SVID (``ComposeServerX509SVID``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire.ca.composition import CredentialComposition, SvidKind
from pyspire.ca.manager import CaManager
from pyspire.ca.x509svid import mint_leaf
from pyspire.transport.tls import RotatingServerContext
from pyspire.waiting import sleep_or_wake
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PyspireError
from pyspire_sdk.model import X509Svid
from pyspire_sdk.spiffeid import TrustDomain, server_id

BundleSource = Callable[[], Awaitable[Bundle | None]]
SvidListener = Callable[[Sequence[bytes], PrivateKeyTypes], Awaitable[None]]
"""Told each new server SVID (chain, DER, and its key): other listeners serving with it."""

ROTATION_RETRY = BackoffPolicy(initial=1.0, maximum=60.0)
"""How a failed rotation of the server SVID is retried: 1 s, 2 s, 4 s, ... at most 60 s."""


class ServerIdentity:
    """Keeps the server SVID fresh and the TLS listener in step with it."""

    def __init__(
        self,
        *,
        trust_domain: TrustDomain,
        ca: CaManager,
        bundle: BundleSource,
        clock: Clock,
        tls: RotatingServerContext,
        ttl: timedelta,
        composition: CredentialComposition | None = None,
    ) -> None:
        self._trust_domain = trust_domain
        self._ca = ca
        self._bundle = bundle
        self._clock = clock
        self.tls = tls
        self._ttl = ttl
        self._composition = composition or CredentialComposition()
        self._svid: X509Svid | None = None
        self._issued_at: datetime | None = None
        self._changed = asyncio.Event()
        self._svid_listeners: list[SvidListener] = []
        self._key: PrivateKeyTypes | None = None
        self._log = structlog.get_logger("pyspire.server.identity")

    @property
    def svid(self) -> X509Svid:
        if self._svid is None:
            raise RuntimeError("server SVID not minted yet")
        return self._svid

    @property
    def key(self) -> PrivateKeyTypes:
        """The private key of :attr:`svid` (held in memory only)."""
        if self._key is None:
            raise RuntimeError("server SVID not minted yet")
        return self._key

    def add_svid_listener(self, listener: SvidListener) -> None:
        """Hand ``listener`` every SVID minted from now on."""
        self._svid_listeners.append(listener)

    async def ca_changed(self) -> None:
        """CA listener: mint again soon (the run loop does it, off the CA's own call path)."""
        self._changed.set()

    def bundle_changed(self, _bundle: Bundle) -> None:
        """Bundle feed listener: serve with the new trust anchors soon (the run loop mints
        again and hands the TLS listener the bundle as it is then)."""
        self._changed.set()

    async def rotate(self) -> None:
        """Mint a new server SVID and serve new TLS connections with it."""
        key = await asyncio.to_thread(ec.generate_private_key, ec.SECP256R1())
        request = await self._composition.leaf(
            SvidKind.SERVER, server_id(self._trust_domain), key.public_key(), ttl=self._ttl
        )
        now = self._clock.now()
        minted = await mint_leaf(self._ca.x509_ca, request, now=now)
        chain_der = minted.chain
        bundle = await self._bundle()
        authorities = [a.der for a in bundle.x509_authorities] if bundle else []
        await self.tls.update(chain_der, key, authorities)
        for listener in self._svid_listeners:
            await listener(chain_der, key)
        self._svid = X509Svid(
            spiffe_id=server_id(self._trust_domain),
            cert_chain=chain_der,
            expires_at=minted.not_after,
        )
        self._key = key
        self._issued_at = now
        self._log.info("server SVID rotated", expires_at=self._svid.expires_at.isoformat())

    def _half_life(self) -> float:
        if self._svid is None or self._issued_at is None:
            return 0.0
        remaining = self._issued_at + (self._svid.expires_at - self._issued_at) / 2
        return max(0.0, (remaining - self._clock.now()).total_seconds())

    async def run(self) -> None:
        """Rotate at half-life or on a CA change, until cancelled. A rotation that fails (a
        credential composer or the key manager unavailable) is logged and retried after the
        delay :data:`ROTATION_RETRY` gives, while the current SVID stays in use."""
        backoff = Backoff(ROTATION_RETRY)
        retry_in: float | None = None
        while True:
            wait = self._half_life() if retry_in is None else retry_in
            await sleep_or_wake(self._clock, wait, self._changed)
            self._changed.clear()
            try:
                await self.rotate()
            except PyspireError as error:
                retry_in = backoff.failed()
                self._log.error(
                    "server SVID not rotated", error=str(error), retry_in=round(retry_in, 3)
                )
            else:
                backoff.succeeded()
                retry_in = None
