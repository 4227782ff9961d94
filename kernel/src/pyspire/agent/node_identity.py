"""The agent's own identity: its X509-SVID, the key behind it, and the bundle it trusts.

:class:`NodeIdentity` gets the agent an SVID and keeps it valid:

- **Start.** Resume from :mod:`pyspire.agent.storage` when the stored SVID is unexpired and its
  key is still in the agent's key manager with the same public key; nothing is asked of the
  server (a one-time join token is not needed again). Otherwise attest with the bundle the
  agent already trusts (the stored one, else the bootstrap bundle), as SPIRE's agent does: no
  call comes before AttestAgent, whose connection verifies the server with that bundle, and the
  new SVID must chain to it; the server's current bundle arrives with the first sync. Only when
  the SVID does not chain to it (the server moved to a CA the bundle lacks) is the bundle
  fetched, on the same verified connection. With insecure bootstrap there is no bundle: the
  server's is fetched and pinned as received before attesting, and held for the first sync, so
  that sync does not fetch it again. A server that cannot take the attestation now
  (away, or over its rate limit of one attestation per second per address) is tried again
  with backoff and jitter (the SDK's one retry policy, :mod:`pyspire_sdk.backoff`); only a
  refusal ends the start.
- **Rotation.** Every 5 s on the injected clock, check whether the SVID's remaining lifetime is
  at most half its lifetime, ±10% jitter drawn once per SVID (SPIRE's rule). Reattestable
  agents then attest again; others call RenewAgent with a CSR for a new key. Keys alternate
  between the key IDs ``agent-svid-A`` and ``agent-svid-B``, so the key of the stored SVID is
  never replaced before the new SVID is stored.
- **Errors.** A server that cannot be reached is retried with exponential backoff (capped)
  while the current SVID stays in use. A refusal (PERMISSION_DENIED: banned, evicted, or an
  expired SVID that cannot be re-attested) revokes the identity: the server's reason is logged,
  the stored state is removed, and listeners are told so the agent stops serving identities.
- **Consistency.** The new SVID is checked (its key is ours, it chains to the bundle, it names
  an agent of our trust domain) and persisted before it is used; then the server client
  presents it and listeners are called, in that order.

Everything that waits uses the injected :class:`~pyspire_sdk.clock.Clock`; jitter comes from an
injected :class:`random.Random`, so tests are deterministic.
"""

from __future__ import annotations

__all__ = [
    "AGENT_KEY_IDS",
    "BACKOFF_MAX",
    "ROTATION_CHECK_INTERVAL",
    "ROTATION_JITTER",
    "START_RETRY_INITIAL",
    "START_RETRY_JITTER",
    "START_RETRY_MAX",
    "NodeCredentials",
    "NodeIdentity",
    "NodeKeyManager",
    "rotation_threshold",
]

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from pyspire.agent.bootstrap import BootstrapTrust
from pyspire.agent.client import ServerCallError, ServerClient
from pyspire.agent.csr import agent_csr
from pyspire.agent.storage import AgentState, AgentStateStore
from pyspire.agent.tainted import signed_by_tainted
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PyspireError,
    UnavailableError,
)
from pyspire_sdk.keys import PrivateKey, private_key_from_pkcs8, public_key_der
from pyspire_sdk.model import X509Svid
from pyspire_sdk.plugins.key_manager import KeyManager, KeyType, PrivateKeyExport
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, agent_id, is_agent_id
from pyspire_sdk.spiffeid import SpiffeId

AGENT_KEY_IDS = ("agent-svid-A", "agent-svid-B")
"""The key manager IDs the agent SVID's key alternates between."""

JOIN_TOKEN_ATTESTOR = "join_token"  # noqa: S105 - a plugin name, not a secret
"""The node attestor whose agent IDs name the join token they were attested with."""

ROTATION_CHECK_INTERVAL = 5.0
"""Seconds between checks of whether the agent SVID should rotate (SPIRE's interval)."""

ROTATION_JITTER = 0.10
"""The rotation threshold is half the lifetime, moved by up to this fraction either way."""

BACKOFF_MAX = 300.0
"""The longest wait, in seconds, between failed rotation attempts."""

START_RETRY_INITIAL = 1.0
"""Seconds before the first retry of a start-up attestation the server could not take now."""

START_RETRY_MAX = 10.0
"""The longest wait, in seconds, between start-up attempts. A refused attempt costs the server
next to nothing (the rate limit answers before any attestation work), while a long wait leaves
the server's allowance unused: twenty agents behind one address, capped at 30 s, took four
times the one second each that the limit allows (``tests/bench/bench_agent_fleet_start.py``)."""

START_RETRY_JITTER = 1.0
"""Full jitter: each start-up retry waits a random part of its backoff, so agents refused
together by the server's attestation rate limit (one per second per address) come back spread
over the whole interval instead of in a bunch."""

Listener = Callable[["NodeIdentity"], Awaitable[None]]
BootstrapSource = Callable[[], Awaitable[BootstrapTrust]]

_log = structlog.get_logger("pyspire.agent.node_identity")


class NodeKeyManager(KeyManager, PrivateKeyExport, Protocol):
    """A key manager that can also hand the agent its own SVID key (for TLS)."""


@dataclass(frozen=True)
class NodeCredentials:
    """The agent's current SVID (no key inside), its private key and the bundle it trusts."""

    svid: X509Svid
    private_key: PrivateKey
    key_id: str
    bundle: Bundle
    reattestable: bool

    @property
    def spiffe_id(self) -> SpiffeId:
        return self.svid.spiffe_id


def rotation_threshold(leaf: x509.Certificate, jitter: float) -> datetime:
    """When an SVID with certificate ``leaf`` should rotate: once its remaining lifetime is at
    most half its lifetime times ``1 + jitter`` (``jitter`` in [-0.1, 0.1])."""
    not_before = leaf.not_valid_before_utc
    not_after = leaf.not_valid_after_utc
    lifetime = not_after - not_before
    return not_after - (lifetime / 2) * (1 + jitter)


def _make_csr_on_loop(key_type: KeyType) -> bool:
    """Whether the agent's CSR for a key of ``key_type`` is signed on the event loop: a P-256
    request (one ECDSA signature and its encoding, about 50 us) holds the loop about as long as
    a hop to a worker thread and back holds it by itself (about 50 us of the hop's 80 us of
    CPU), so the hop would only add CPU. A P-384 signature (about 300 us) or an RSA one
    (milliseconds for 4096 bits) goes to a thread."""
    return key_type is KeyType.EC_P256


def _verify_chain(chain: tuple[bytes, ...], bundle: Bundle) -> None:
    """Raise ServerCallError unless every certificate of ``chain`` is issued by the next and
    the last is issued by (or is) an authority of ``bundle``."""
    try:
        certificates = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError:
        raise ServerCallError("the agent SVID chain holds an invalid certificate") from None
    try:
        for child, parent in itertools.pairwise(certificates):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        raise ServerCallError("the agent SVID chain is broken") from None
    last = certificates[-1]
    for authority in bundle.x509_authorities:
        if authority.der == chain[-1]:
            return
        try:
            last.verify_directly_issued_by(authority.certificate())
        except (ValueError, TypeError, InvalidSignature):
            continue
        return
    raise ServerCallError("the agent SVID does not chain to an authority of the trust bundle")


class NodeIdentity:
    """The agent's identity; see the module documentation.

    ``attestor_name`` is the node attestor's plugin name (the attestation data type).
    ``bootstrap`` is the trust for a first attestation (or a coroutine function producing it, so
    that a bundle URL is only fetched when needed). ``key_type`` is the agent key's type.
    """

    def __init__(
        self,
        *,
        client: ServerClient,
        attestor_name: str,
        attestor: AgentNodeAttestor,
        key_manager: NodeKeyManager,
        store: AgentStateStore,
        bootstrap: BootstrapTrust | BootstrapSource,
        clock: Clock,
        key_type: KeyType = KeyType.EC_P256,
        rng: random.Random | None = None,
        check_interval: float = ROTATION_CHECK_INTERVAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self._client = client
        self._trust_domain = client.trust_domain
        self._attestor_name = attestor_name
        self._attestor = attestor
        self._keys = key_manager
        self._store = store
        self._bootstrap = bootstrap
        self._clock = clock
        self._key_type = key_type
        self._rng = rng if rng is not None else random.SystemRandom()
        self._check_interval = check_interval
        self._backoff = Backoff(BackoffPolicy(check_interval, backoff_max, jitter=0.0))
        self._resumed = False
        self._credentials: NodeCredentials | None = None
        self._rotate_at: datetime | None = None
        self._retry_at: datetime | None = None
        self._revoked = False
        self._revocation_reason = ""
        self._generation = 0
        self._changed = asyncio.Event()
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._unannounced = False
        self._pending_key: tuple[str, PrivateKey, bytes] | None = None

    # -- what others read -------------------------------------------------------------------

    @property
    def credentials(self) -> NodeCredentials:
        """The current credentials; RuntimeError before :meth:`start` succeeded."""
        if self._credentials is None:
            raise RuntimeError("the agent has no identity yet: start() has not succeeded")
        return self._credentials

    @property
    def svid(self) -> X509Svid:
        """The agent SVID (chain leaf first, DER; no private key)."""
        return self.credentials.svid

    @property
    def chain(self) -> tuple[bytes, ...]:
        return self.credentials.svid.cert_chain

    @property
    def private_key(self) -> PrivateKey:
        return self.credentials.private_key

    @property
    def bundle(self) -> Bundle:
        return self.credentials.bundle

    @property
    def spiffe_id(self) -> SpiffeId:
        return self.credentials.spiffe_id

    @property
    def reattestable(self) -> bool:
        return self.credentials.reattestable

    @property
    def revoked(self) -> bool:
        """True once the server refused this agent; the identity then never changes again."""
        return self._revoked

    @property
    def revocation_reason(self) -> str:
        return self._revocation_reason

    @property
    def generation(self) -> int:
        """Increases by one on every change (new SVID, new bundle, revocation)."""
        return self._generation

    @property
    def rotate_at(self) -> datetime | None:
        """When the current SVID becomes due for rotation."""
        return self._rotate_at

    @property
    def retry_at(self) -> datetime | None:
        """When a failed rotation is tried again; None when not backing off."""
        return self._retry_at

    @property
    def consecutive_failures(self) -> int:
        """Rotation attempts that failed since the last success."""
        return self._backoff.failures

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(self)`` after every change, in registration order."""
        self._listeners.append(listener)

    async def wait_updated(self, after: int) -> int:
        """Wait until :attr:`generation` exceeds ``after``; return the new generation."""
        while self._generation <= after:
            await self._changed.wait()
        return self._generation

    # -- start ------------------------------------------------------------------------------

    @property
    def resumed(self) -> bool:
        """True when :meth:`start` resumed the stored identity instead of attesting."""
        return self._resumed

    def ignores_join_token(self, token: str) -> bool:
        """True when :meth:`start` resumed an identity that ``token`` did not give: a join
        token handed to this run was not used (the identity it would give is another)."""
        if not self._resumed:
            return False
        try:
            offered = agent_id(self._trust_domain, JOIN_TOKEN_ATTESTOR, token)
        except InvalidArgumentError:
            return True
        return offered != self.spiffe_id

    async def start(self) -> None:
        """Resume the stored identity or attest.

        A server that cannot take the attestation now — away, overloaded, over its attestation
        rate limit, or answering wrongly — is tried again with backoff and jitter until it
        does. Only a definitive answer ends the start with its error:
        :class:`~pyspire_sdk.errors.PermissionDeniedError` when the server refuses the node
        (unknown or used join token, banned agent), and the errors of a misconfiguration (the
        node attestor's, an unusable bootstrap bundle).
        """
        backoff = Backoff(
            BackoffPolicy(START_RETRY_INITIAL, START_RETRY_MAX, jitter=START_RETRY_JITTER),
            rng=self._rng,
        )
        while True:
            try:
                async with self._lock:
                    await self._start()
                return
            except (UnavailableError, ServerCallError) as error:
                delay = backoff.failed()
                _log.warning(
                    "agent attestation did not go through; retrying",
                    error=str(error),
                    error_type=type(error).__name__,
                    attempts=backoff.failures,
                    retry_in_seconds=round(delay, 3),
                )
            finally:
                await self._notify()
            await self._clock.sleep(delay)

    async def _start(self) -> None:
        state = await self._store.load()
        if state is not None and await self._resume(state):
            return
        if state is not None:
            # The stored bundle is newer than any bootstrap bundle: trust the server with it.
            self._client.use_bundle(state.bundle)
        else:
            trust = await self._bootstrap_trust()
            if trust.bundle is not None:
                self._client.use_bundle(trust.bundle)
            else:
                await self._pin_bundle()
        await self._attest(avoid_key_id=state.key_id if state is not None else None)

    async def _bootstrap_trust(self) -> BootstrapTrust:
        if isinstance(self._bootstrap, BootstrapTrust):
            return self._bootstrap
        return await self._bootstrap()

    async def _resume(self, state: AgentState) -> bool:
        now = self._clock.now()
        log = _log.bind(agent_id=str(state.svid.spiffe_id), key_id=state.key_id)
        if state.svid.expires_at <= now:
            log.info("stored agent SVID has expired; attesting again")
            return False
        try:
            public = await self._keys.get_public_key(state.key_id)
        except NotFoundError:
            log.warning("key of the stored agent SVID is not in the key manager; attesting again")
            return False
        try:
            _verify_chain(state.svid.cert_chain, state.bundle)
        except ServerCallError as error:
            log.warning("stored agent SVID is not trusted by the stored bundle", reason=str(error))
            return False
        leaf = x509.load_der_x509_certificate(state.svid.cert_chain[0])
        if public.der != public_key_der(leaf.public_key()):  # type: ignore[arg-type]
            log.warning(
                "key manager holds another key than the stored agent SVID's; attesting again"
            )
            return False
        private_key = private_key_from_pkcs8(await self._keys.export_private_key(state.key_id))
        credentials = NodeCredentials(
            svid=state.svid,
            private_key=private_key,
            key_id=state.key_id,
            bundle=state.bundle,
            reattestable=state.reattestable,
        )
        await self._install(credentials, persist=False)
        self._resumed = True
        log.info("agent identity resumed", expires_at=state.svid.expires_at.isoformat())
        return True

    async def _pin_bundle(self) -> None:
        """Insecure bootstrap: fetch the bundle of whichever server answers, over an unverified
        connection, and trust the server with it from now on. This is the moment the agent
        decides whom to trust."""
        bundle = await self._client.fetch_bundle()
        self._client.use_bundle(bundle)
        _log.warning(
            "INSECURE BOOTSTRAP: pinned the bundle of an unauthenticated server",
            server=self._client.target,
            x509_authorities=len(bundle.x509_authorities),
        )

    # -- getting SVIDs ----------------------------------------------------------------------

    async def _new_key(self, key_id: str) -> tuple[PrivateKey, bytes]:
        """A fresh key under ``key_id`` and a CSR for it. A key made for an attempt that failed
        is reused by the next attempt, so an outage does not churn the key manager."""
        if self._pending_key is not None and self._pending_key[0] == key_id:
            return self._pending_key[1], self._pending_key[2]
        await self._keys.generate_key(key_id, self._key_type)
        private_key = private_key_from_pkcs8(await self._keys.export_private_key(key_id))
        if _make_csr_on_loop(self._key_type):
            csr = agent_csr(private_key, self._key_type)
        else:
            csr = await asyncio.to_thread(agent_csr, private_key, self._key_type)
        self._pending_key = (key_id, private_key, csr)
        return private_key, csr

    def _next_key_id(self, avoid: str | None) -> str:
        current = self._credentials.key_id if self._credentials is not None else avoid
        return AGENT_KEY_IDS[1] if current == AGENT_KEY_IDS[0] else AGENT_KEY_IDS[0]

    def _check_svid(self, svid: X509Svid, private_key: PrivateKey, bundle: Bundle) -> None:
        leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
        if public_key_der(leaf.public_key()) != public_key_der(private_key):  # type: ignore[arg-type]
            raise ServerCallError("server issued the agent SVID for another key than the CSR's")
        if not is_agent_id(svid.spiffe_id, self._trust_domain):
            raise ServerCallError(
                f"server issued {str(svid.spiffe_id)!r}, not an agent ID of "
                f"{self._trust_domain.name!r}"
            )
        _verify_chain(svid.cert_chain, bundle)

    async def _attest(self, *, avoid_key_id: str | None = None) -> None:
        bundle = self._client.bundle
        if bundle is None:
            raise RuntimeError("the server bundle must be pinned before attesting")
        key_id = self._next_key_id(avoid_key_id)
        private_key, csr = await self._new_key(key_id)
        result = await self._client.attest(self._attestor_name, self._attestor, csr)
        bundle = await self._bundle_for(result.svid, private_key, bundle)
        credentials = NodeCredentials(
            svid=result.svid,
            private_key=private_key,
            key_id=key_id,
            bundle=bundle,
            reattestable=result.reattestable,
        )
        await self._install(credentials, persist=True)
        _log.info(
            "agent SVID obtained by attestation",
            agent_id=str(result.svid.spiffe_id),
            reattestable=result.reattestable,
            expires_at=result.svid.expires_at.isoformat(),
        )

    async def _bundle_for(self, svid: X509Svid, private_key: PrivateKey, bundle: Bundle) -> Bundle:
        """The bundle to keep with ``svid``, just issued by attestation: ``bundle``, the one
        the attestation's connection verified the server with, when the SVID chains to it; else
        the server's current bundle, fetched on that same connection (still verified with
        ``bundle``, still open until the SVID is installed), when the SVID chains to that: the
        server moved to a CA that ``bundle`` lacks (it rotated since the bundle was stored or
        the bootstrap bundle was made). The join token is spent by now, so the SVID is not
        given up while a bundle the server vouches for trusts it."""
        try:
            self._check_svid(svid, private_key, bundle)
        except ServerCallError as error:
            fetched = await self._client.fetch_bundle()
            if fetched == bundle:
                raise
            _log.info(
                "agent SVID does not chain to the bundle the server was verified with; "
                "checking it with the server's current bundle",
                reason=str(error),
            )
            self._check_svid(svid, private_key, fetched)
            return fetched
        return bundle

    async def _renew(self) -> None:
        current = self.credentials
        key_id = self._next_key_id(None)
        private_key, csr = await self._new_key(key_id)
        svid = await self._client.renew(csr)
        self._check_svid(svid, private_key, current.bundle)
        if svid.spiffe_id != current.spiffe_id:
            raise ServerCallError(
                f"server renewed the agent SVID as {str(svid.spiffe_id)!r}, "
                f"expected {str(current.spiffe_id)!r}"
            )
        credentials = NodeCredentials(
            svid=svid,
            private_key=private_key,
            key_id=key_id,
            bundle=current.bundle,
            reattestable=current.reattestable,
        )
        await self._install(credentials, persist=True)
        _log.info(
            "agent SVID renewed",
            agent_id=str(svid.spiffe_id),
            expires_at=svid.expires_at.isoformat(),
        )

    async def _install(self, credentials: NodeCredentials, *, persist: bool) -> None:
        if persist:
            await self._store.save(
                AgentState(
                    svid=credentials.svid,
                    key_id=credentials.key_id,
                    reattestable=credentials.reattestable,
                    bundle=credentials.bundle,
                )
            )
        self._client.use_bundle(credentials.bundle)
        self._client.use_identity(credentials.svid.cert_chain, credentials.private_key)
        self._credentials = credentials
        self._pending_key = None
        leaf = x509.load_der_x509_certificate(credentials.svid.cert_chain[0])
        jitter = self._rng.uniform(-ROTATION_JITTER, ROTATION_JITTER)
        self._rotate_at = rotation_threshold(leaf, jitter)
        self._mark_changed()

    def _mark_changed(self) -> None:
        """Record a change; listeners hear of it in :meth:`_notify`, once the lock is free, so
        a listener may call back into this object (e.g. :meth:`update_bundle`)."""
        self._generation += 1
        self._unannounced = True
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _notify(self) -> None:
        if not self._unannounced:
            return
        self._unannounced = False
        for listener in list(self._listeners):
            try:
                await listener(self)
            except Exception:
                _log.exception("node identity listener failed", listener=repr(listener))

    # -- changes from outside ---------------------------------------------------------------

    async def update_bundle(self, bundle: Bundle) -> None:
        """Trust the server with ``bundle`` from now on (the sync manager fetched a newer one):
        persisted, handed to the client, listeners told. No-op when unchanged or revoked;
        :class:`~pyspire_sdk.errors.InvalidArgumentError` for a bundle of another trust domain
        or without X.509 authorities (it could not verify the server)."""
        if bundle.trust_domain != self._trust_domain:
            raise InvalidArgumentError(
                f"bundle is of trust domain {bundle.trust_domain.name!r}, "
                f"expected {self._trust_domain.name!r}"
            )
        if not bundle.x509_authorities:
            raise InvalidArgumentError("bundle has no X.509 authority to verify the server with")
        try:
            async with self._lock:
                current = self.credentials
                if self._revoked or bundle == current.bundle:
                    return
                await self._store.save(
                    AgentState(
                        svid=current.svid,
                        key_id=current.key_id,
                        reattestable=current.reattestable,
                        bundle=bundle,
                    )
                )
                self._client.use_bundle(bundle)
                self._credentials = NodeCredentials(
                    svid=current.svid,
                    private_key=current.private_key,
                    key_id=current.key_id,
                    bundle=bundle,
                    reattestable=current.reattestable,
                )
                self._rotate_if_tainted(current.svid.cert_chain, bundle)
                self._mark_changed()
        finally:
            await self._notify()

    def _rotate_if_tainted(self, chain: tuple[bytes, ...], bundle: Bundle) -> None:
        """Bring the rotation forward to now when ``bundle`` marks our SVID's issuer tainted:
        once revoked, the server would no longer trust the SVID."""
        now = self._clock.now()
        if (self._rotate_at is None or self._rotate_at > now) and signed_by_tainted(chain, bundle):
            _log.info("agent SVID signed by a tainted authority; rotating it now")
            self._rotate_at = now

    async def revoke(self, reason: str) -> None:
        """Stop being this agent: the server refused it (``reason`` is the server's word).
        The stored state is removed; listeners are told. Idempotent."""
        await self._revoke(reason)
        await self._notify()

    async def _revoke(self, reason: str) -> None:
        if self._revoked:
            return
        self._revoked = True
        self._revocation_reason = reason
        agent_id = str(self._credentials.spiffe_id) if self._credentials is not None else ""
        _log.error("agent identity revoked by the server", agent_id=agent_id, reason=reason)
        self._client.forget_identity()
        try:
            await self._store.clear()
        except OSError as error:
            _log.warning("cannot remove the stored agent state", reason=str(error))
        self._mark_changed()

    # -- rotation ---------------------------------------------------------------------------

    def due(self) -> bool:
        """Whether the SVID should rotate now (and no backoff delays it)."""
        now = self._clock.now()
        if self._revoked or self._rotate_at is None or now < self._rotate_at:
            return False
        return self._retry_at is None or now >= self._retry_at

    async def rotate(self) -> None:
        """Rotate the SVID now: attest again when reattestable or expired, else renew.

        Raises what failed; a :class:`~pyspire_sdk.errors.PermissionDeniedError` revokes the
        identity first.
        """
        try:
            async with self._lock:
                await self._rotate()
        finally:
            await self._notify()

    async def _rotate(self) -> None:
        if self._revoked:
            raise PermissionDeniedError(f"agent identity revoked: {self._revocation_reason}")
        current = self.credentials
        expired = self._clock.now() >= current.svid.expires_at
        try:
            if current.reattestable or expired:
                if expired and not current.reattestable:
                    _log.warning(
                        "agent SVID expired before it could be renewed; attesting again",
                        agent_id=str(current.spiffe_id),
                    )
                await self._attest()
            else:
                await self._renew()
        except PermissionDeniedError as error:
            await self._revoke(str(error))
            raise

    async def run(self) -> None:
        """Check for rotation every ``check_interval`` seconds until revoked (then return) or
        cancelled. Failed rotations are retried with exponential backoff."""
        self.credentials  # noqa: B018 - fail early when not started
        while not self._revoked:
            await self._clock.sleep(self._check_interval)
            if not self.due():
                continue
            try:
                await self.rotate()
            except PermissionDeniedError:
                return
            except PyspireError as error:
                delay = self._backoff.failed()
                self._retry_at = self._clock.now() + timedelta(seconds=delay)
                _log.warning(
                    "agent SVID rotation failed; keeping the current SVID",
                    error=str(error),
                    error_type=type(error).__name__,
                    failures=self._backoff.failures,
                    retry_in_seconds=delay,
                )
            else:
                self._backoff.succeeded()
                self._retry_at = None
