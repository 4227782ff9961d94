"""Real certificates, keys and JWTs for Workload API tests, and a fake identity source.

The CAs and X509-SVIDs come from the SDK's test PKI (:mod:`pyspire_sdk.testing.pki`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pyspire.agent.identities import Identity, Snapshot
from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.clock import Clock
from pyspire_sdk.model import JwtSvid, RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.pki import TestAuthority, jwt_authority

TD = TrustDomain("example.org")
FOREIGN = TrustDomain("foreign.test")
AGENT_ID = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/t")
UID_SELECTOR = Selector("unix", f"uid:{os.getuid()}")

T = TypeVar("T")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@functools.cache
def rsa_key(size: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


@dataclass
class JwtSigner:
    """A JWT authority of one trust domain: a key and its ``kid``."""

    trust_domain: TrustDomain
    key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    kid: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def authority(self) -> JwtAuthority:
        return jwt_authority(self.key, self.kid)

    def default_alg(self) -> str:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return "RS256"
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[
            self.key.curve.name
        ]

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        header: Mapping[str, Any] | None = None,
        alg: str | None = None,
    ) -> str:
        algorithm = alg or self.default_alg()
        head = (
            dict(header)
            if header is not None
            else {"alg": algorithm, "kid": self.kid, "typ": "JWT"}
        )
        signing_input = (
            b64url(json.dumps(head).encode()) + "." + b64url(json.dumps(dict(claims)).encode())
        ).encode()
        return signing_input.decode() + "." + b64url(sign_raw(self.key, algorithm, signing_input))


def sign_raw(key: Any, algorithm: str, data: bytes) -> bytes:
    """A JWS signature of ``data`` with ``key`` under ``algorithm`` (also the bad ones)."""
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}.get(
        algorithm[2:], hashes.SHA256()
    )
    if algorithm == "none":
        return b""
    if algorithm.startswith("HS"):
        return hmac.new(b"secret", data, hashlib.sha256).digest()
    if algorithm.startswith("RS"):
        return bytes(key.sign(data, padding.PKCS1v15(), digest))
    if algorithm.startswith("PS"):
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return bytes(key.sign(data, pss, digest))
    size = (key.curve.key_size + 7) // 8
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def make_entry(
    path: str,
    selectors: Sequence[Selector] = (UID_SELECTOR,),
    *,
    entry_id: str | None = None,
    hint: str = "",
    federates_with: Sequence[TrustDomain] = (),
    created: int = 0,
) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=SpiffeId.parse(f"spiffe://{TD.name}{path}"),
        parent_id=AGENT_ID,
        selectors=tuple(selectors),
        id=entry_id or path.strip("/").replace("/", "-"),
        hint=hint,
        federates_with=tuple(federates_with),
        created_at=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=created),
    )


class Pki:
    """The CAs and JWT keys of our trust domain and a federated one."""

    def __init__(self) -> None:
        self.ca = TestAuthority(TD)
        self.foreign_ca = TestAuthority(FOREIGN)
        self.jwt = JwtSigner(TD)
        self.foreign_jwt = JwtSigner(FOREIGN)

    def bundle(self, *extra_x509: X509Authority) -> Bundle:
        return self.ca.bundle(
            extra_x509_authorities=extra_x509, jwt_authorities=(self.jwt.authority,)
        )

    def foreign_bundle(self) -> Bundle:
        return self.foreign_ca.bundle(jwt_authorities=(self.foreign_jwt.authority,))

    def identity(self, entry: RegistrationEntry) -> Identity:
        return Identity(entry=entry, svid=self.ca.issue(entry.spiffe_id, hint=entry.hint))


class FakeIdentitySource:
    """An :class:`~pyspire.agent.identities.IdentitySource` whose state a test sets.

    JWT-SVIDs are really signed with our trust domain's JWT key, so they validate.
    """

    def __init__(self, pki: Pki, clock: Clock, snapshot: Snapshot) -> None:
        self.pki = pki
        self.clock = clock
        self._snapshot = snapshot
        self._changed = asyncio.Event()
        self.jwt_requests: list[tuple[str, tuple[str, ...]]] = []
        self.jwt_error: Exception | None = None
        self.watchers = 0
        self._watchers_changed = asyncio.Condition()
        self.demands: list[frozenset[Selector]] = []
        self.open_demands = 0

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def publish(self, **changes: Any) -> Snapshot:
        """A new snapshot with ``changes`` and the next revision; wakes every watcher."""
        self._snapshot = replace(self._snapshot, revision=self._snapshot.revision + 1, **changes)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._snapshot

    async def watch(self) -> AsyncIterator[Snapshot]:
        self.watchers += 1
        try:
            seen = -1
            while True:
                changed = self._changed
                if self._snapshot.revision != seen:
                    seen = self._snapshot.revision
                    yield self._snapshot
                    continue
                await changed.wait()
        finally:
            self.watchers -= 1
            async with self._watchers_changed:
                self._watchers_changed.notify_all()

    async def wait_for_watchers(self, count: int) -> None:
        """Return once exactly ``count`` streams are watching."""
        async with self._watchers_changed:
            await self._watchers_changed.wait_for(lambda: self.watchers == count)

    def demand(self, selectors: frozenset[Selector]) -> contextlib.AbstractContextManager[None]:
        """Record the caller's selectors for as long as its stream is open."""
        return self._demanding(selectors)

    @contextlib.contextmanager
    def _demanding(self, selectors: frozenset[Selector]) -> Iterator[None]:
        self.demands.append(selectors)
        self.open_demands += 1
        try:
            yield
        finally:
            self.open_demands -= 1

    async def fetch_jwt_svid(self, entry: RegistrationEntry, audience: Sequence[str]) -> JwtSvid:
        self.jwt_requests.append((entry.id, tuple(audience)))
        if self.jwt_error is not None:
            raise self.jwt_error
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


@contextlib.asynccontextmanager
async def opened(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close a client stream (cancel the call) when the block ends."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
