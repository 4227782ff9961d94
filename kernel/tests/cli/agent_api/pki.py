"""Real certificates, keys and signed JWTs for the agent's ``api`` commands, and an identity source
a test drives: what the Workload API serves, without a server or a sync manager.

The CAs and X509-SVIDs come from the SDK's test PKI (:mod:`pyspire_sdk.testing.pki`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.agent.identities import Identity, Snapshot
from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.clock import Clock
from pyspire_sdk.model import JwtSvid, RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.pki import TestAuthority, jwt_authority

TD = TrustDomain("example.org")
FOREIGN = TrustDomain("foreign.test")
AGENT_ID = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/t")
MY_UID = Selector("unix", f"uid:{os.getuid()}")


@dataclass
class JwtKey:
    """The JWT signing key of a trust domain."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    kid: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def authority(self) -> JwtAuthority:
        return jwt_authority(self.key, self.kid)

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})


class Pki:
    """Our trust domain's CA and JWT key, and a federated trust domain's CA."""

    def __init__(self) -> None:
        self.ca = TestAuthority(TD)
        self.foreign_ca = TestAuthority(FOREIGN)
        self.jwt = JwtKey()

    def bundle(self) -> Bundle:
        return self.ca.bundle(jwt_authorities=(self.jwt.authority,))

    def foreign_bundle(self) -> Bundle:
        return self.foreign_ca.bundle()

    def identity(self, entry: RegistrationEntry) -> Identity:
        return Identity(entry=entry, svid=self.ca.issue(entry.spiffe_id, hint=entry.hint))


def make_entry(
    path: str,
    *,
    selectors: Sequence[Selector] = (MY_UID,),
    hint: str = "",
    federates_with: Sequence[TrustDomain] = (),
    age: int = 0,
) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=SpiffeId.parse(f"spiffe://{TD.name}{path}"),
        parent_id=AGENT_ID,
        selectors=tuple(selectors),
        id=path.strip("/").replace("/", "-"),
        hint=hint,
        federates_with=tuple(federates_with),
        created_at=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=age),
    )


class FakeIdentitySource:
    """An identity source whose snapshot a test replaces; JWT-SVIDs are really signed."""

    def __init__(self, pki: Pki, clock: Clock, snapshot: Snapshot) -> None:
        self.pki = pki
        self.clock = clock
        self._snapshot = snapshot
        self._changed = asyncio.Event()

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def publish(self, **changes: Any) -> Snapshot:
        """The next revision with ``changes``; every open stream sees it."""
        self._snapshot = replace(self._snapshot, revision=self._snapshot.revision + 1, **changes)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._snapshot

    async def watch(self) -> AsyncIterator[Snapshot]:
        seen = -1
        while True:
            changed = self._changed
            if self._snapshot.revision != seen:
                seen = self._snapshot.revision
                yield self._snapshot
                continue
            await changed.wait()

    def demand(self, selectors: frozenset[Selector]) -> AbstractContextManager[None]:
        return nullcontext()

    async def fetch_jwt_svid(self, entry: RegistrationEntry, audience: Sequence[str]) -> JwtSvid:
        now = self.clock.now()
        expires = now + timedelta(minutes=5)
        token = self.pki.jwt.sign(
            {
                "sub": str(entry.spiffe_id),
                "aud": list(audience),
                "exp": int(expires.timestamp()),
                "iat": int(now.timestamp()),
            }
        )
        return JwtSvid(
            spiffe_id=entry.spiffe_id,
            token=token,
            audience=tuple(audience),
            expires_at=expires,
            issued_at=now,
            hint=entry.hint,
        )
