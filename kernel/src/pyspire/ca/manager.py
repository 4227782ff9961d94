"""The CA manager: keeps an active X.509 CA and JWT key, rotating them through two slots.

Each kind of credential has slots A and B. At most one slot is active (signs); the other is
empty, prepared (published in the bundle, waiting) or old (retired, still in the bundle until it
expires). The state is journaled through the datastore after every change, so a restart resumes
with the same CA and the same keys (when the key manager keeps them) instead of minting new ones.
Timing follows :mod:`pyspire.ca.rotation`; time comes from the injected clock.

Several servers of one trust domain may share the datastore, each with its own key manager and
CA. Each keeps its journal under a name of its own (:func:`journal_name`), and the bundle they
share is only ever appended to and pruned of *expired* authorities, so every server's CA and JWT
keys are trusted everywhere and no server's rotation removes a key another still signs with.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import string
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.ca.authorities import X509CA, JwtKey
from pyspire.ca.composition import CredentialComposition
from pyspire.ca.rotation import (
    ROTATION_INTERVAL,
    SlotStatus,
    activate_at,
    other_slot,
    prepare_at,
)
from pyspire.ca.signing import ManagedKey, sign_certificate, sign_csr
from pyspire.ca.tainting import chains_to, subject_key_id, taint_x509_ca
from pyspire.ca.templates import CaSubject, ca_builder, ca_csr_builder
from pyspire.ca.upstream import accept_upstream_ca
from pyspire.telemetry.metrics import (
    CA_JWT_ACTIVATED,
    CA_JWT_PREPARED,
    CA_X509_ACTIVATED,
    CA_X509_PREPARED,
    PrometheusMetrics,
)
from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PyspireError,
)
from pyspire_sdk.plugins.key_manager import KeyManager, KeyType
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority
from pyspire_sdk.spiffeid import TrustDomain

JOURNAL_NAME = "ca-journal"
"""The journal of a server without an ID, and the one read once by a server that finds no
journal of its own (written before journals were kept per server): its slots are adopted only
when the server's key manager holds their keys, so only the server that wrote it resumes it."""
JOURNAL_VERSION = 1
KID_ALPHABET = string.ascii_letters + string.digits


class CaStore(Protocol):
    """The part of the datastore the CA manager needs."""

    async def get_ca_journal(self, name: str) -> bytes | None: ...

    async def set_ca_journal(self, name: str, data: bytes) -> None: ...

    async def update_bundle(
        self, trust_domain: TrustDomain, mutate: Callable[[Bundle | None], Bundle]
    ) -> Bundle: ...

    async def prune_bundle(self, trust_domain: TrustDomain, expires_before: datetime) -> bool: ...


@dataclass(frozen=True)
class CaSettings:
    """How the CA makes its credentials (from the server configuration)."""

    trust_domain: TrustDomain
    ca_ttl: timedelta = timedelta(hours=24)
    x509_key_type: KeyType = KeyType.EC_P256
    jwt_key_type: KeyType = KeyType.EC_P256
    ca_subject: CaSubject = field(default_factory=CaSubject)
    refresh_hint: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class X509Slot:
    """One X.509 CA slot."""

    slot_id: str
    status: SlotStatus
    ca: X509CA

    kind = "x509 CA"
    activated_metric = CA_X509_ACTIVATED

    @property
    def not_before(self) -> datetime:
        return self.ca.not_before

    @property
    def not_after(self) -> datetime:
        return self.ca.not_after

    @property
    def authority_id(self) -> str:
        return self.ca.authority_id

    @property
    def upstream_authority_id(self) -> str:
        """The hex subject key ID of the upstream CA that signed this CA (its authority key
        ID), empty for a self-signed CA."""
        return self.ca.upstream_authority_id


@dataclass(frozen=True)
class JwtSlot:
    """One JWT key slot."""

    slot_id: str
    status: SlotStatus
    key: JwtKey

    kind = "jwt key"
    activated_metric = CA_JWT_ACTIVATED

    @property
    def not_before(self) -> datetime:
        return self.key.not_before

    @property
    def not_after(self) -> datetime:
        return self.key.not_after

    @property
    def authority_id(self) -> str:
        return self.key.kid

    upstream_authority_id = ""


SlotT = TypeVar("SlotT", X509Slot, JwtSlot)


Listener = Callable[[], Awaitable[None]]


def journal_name(server_id: str) -> str:
    """The name of the journal of the server ``server_id``."""
    return f"{JOURNAL_NAME}/{server_id}"


def new_kid() -> str:
    """A JWT key ID: 32 random letters and digits."""
    return "".join(secrets.choice(KID_ALPHABET) for _ in range(32))


class CaNotReadyError(PyspireError):
    """The CA has no active credential yet (the manager was not started)."""


class CaManager:
    """Owns the CA's slots, their rotation, and the trust bundle entries they imply."""

    def __init__(
        self,
        settings: CaSettings,
        *,
        key_manager: KeyManager,
        store: CaStore,
        clock: Clock,
        upstream: UpstreamAuthority | None = None,
        composition: CredentialComposition | None = None,
        metrics: PrometheusMetrics | None = None,
        journal: str = JOURNAL_NAME,
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._composition = composition or CredentialComposition()
        self._metrics = metrics if metrics is not None else PrometheusMetrics("pyspire_server")
        self._key_manager = key_manager
        self._store = store
        self._clock = clock
        self._upstream = upstream
        self._x509: dict[str, X509Slot] = {}
        self._jwt: dict[str, JwtSlot] = {}
        self._listeners: list[Listener] = []
        self._log = structlog.get_logger("pyspire.ca").bind(trust_domain=str(settings.trust_domain))

    # -- reading ---------------------------------------------------------------------------

    @property
    def x509_ca(self) -> X509CA:
        """The active X.509 CA."""
        slot = self._active(self._x509)
        if slot is None:
            raise CaNotReadyError("no active X.509 CA")
        return slot.ca  # type: ignore[no-any-return]

    @property
    def jwt_key(self) -> JwtKey:
        """The active JWT signing key."""
        slot = self._active(self._jwt)
        if slot is None:
            raise CaNotReadyError("no active JWT key")
        return slot.key  # type: ignore[no-any-return]

    @property
    def x509_slots(self) -> dict[str, X509Slot]:
        return dict(self._x509)

    @property
    def jwt_slots(self) -> dict[str, JwtSlot]:
        return dict(self._jwt)

    @property
    def has_upstream(self) -> bool:
        """Whether an upstream authority signs our X.509 CAs."""
        return self._upstream is not None

    def current_x509(self) -> X509Slot | None:
        """The active X.509 CA slot (``None`` while starting)."""
        return self._active(self._x509)  # type: ignore[no-any-return]

    def next_x509(self) -> X509Slot | None:
        """The X.509 slot beside the active one: prepared, old, or ``None`` when empty."""
        return self._next(self._x509)  # type: ignore[no-any-return]

    def current_jwt(self) -> JwtSlot | None:
        """The active JWT key slot (``None`` while starting)."""
        return self._active(self._jwt)  # type: ignore[no-any-return]

    def next_jwt(self) -> JwtSlot | None:
        """The JWT slot beside the active one: prepared, old, or ``None`` when empty."""
        return self._next(self._jwt)  # type: ignore[no-any-return]

    def _next(self, slots: dict[str, Any]) -> Any:
        active = self._active(slots)
        return None if active is None else slots.get(other_slot(active.slot_id))

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` after every preparation and activation (of an X.509 CA or a JWT
        key): the bundle or the signing authority changed."""
        self._listeners.append(listener)

    @staticmethod
    def _active(slots: dict[str, Any]) -> Any:
        for slot in slots.values():
            if slot.status is SlotStatus.ACTIVE:
                return slot
        return None

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the journal and make sure an X.509 CA and a JWT key are active."""
        await self._load_journal()
        await self.rotate()

    async def run(self) -> None:
        """Rotate every :data:`ROTATION_INTERVAL` until cancelled; a failed step is logged and
        retried at the next tick, since the current credentials stay valid meanwhile."""
        while True:
            await self._clock.sleep(ROTATION_INTERVAL.total_seconds())
            try:
                await self.rotate()
            except PyspireError as error:
                self._log.error("ca rotation failed", error=str(error))

    async def rotate(self) -> None:
        """One rotation step for both kinds, then drop expired authorities from the bundle."""
        now = self._clock.now()
        await self._rotate_slots(self._x509, now, self._prepare_x509)
        await self._rotate_slots(self._jwt, now, self._prepare_jwt)
        await self._prune(now)

    # -- forced rotation (the LocalAuthority API) ------------------------------------------

    async def prepare_x509_now(self) -> X509Slot:
        """Prepare a new X.509 CA in the slot beside the active one, replacing what it held."""
        active = self.current_x509()
        if active is None:
            raise CaNotReadyError("no active X.509 CA")
        return await self._prepare_x509(other_slot(active.slot_id), self._clock.now())

    async def prepare_jwt_now(self) -> JwtSlot:
        """Prepare a new JWT key in the slot beside the active one, replacing what it held."""
        active = self.current_jwt()
        if active is None:
            raise CaNotReadyError("no active JWT key")
        return await self._prepare_jwt(other_slot(active.slot_id), self._clock.now())

    async def activate_x509_now(self) -> X509Slot:
        """Make the prepared X.509 CA the active one; the active one becomes old."""
        prepared = self.next_x509()
        if prepared is None or prepared.status is not SlotStatus.PREPARED:
            raise FailedPreconditionError("no prepared X.509 CA")
        await self._activate(self._x509, prepared)
        return self._x509[prepared.slot_id]

    async def activate_jwt_now(self) -> JwtSlot:
        """Make the prepared JWT key the active one; the active one becomes old."""
        prepared = self.next_jwt()
        if prepared is None or prepared.status is not SlotStatus.PREPARED:
            raise FailedPreconditionError("no prepared JWT key")
        await self._activate(self._jwt, prepared)
        return self._jwt[prepared.slot_id]

    # -- tainted upstream roots (SPIRE's processTaintedUpstreamAuthorities) -----------------

    async def replace_tainted_upstream(self, tainted: Sequence[bytes]) -> bool:
        """Act on upstream roots (DER) that the upstream newly marks tainted: when the active
        X.509 CA chains to one, make the prepared CA active, or prepare one from the upstream
        first when there is none or it chains to a tainted root too; then mark the roots
        tainted in our bundle. In that order, as SPIRE, so agents and servers below see the
        taint only once a CA they can re-mint from is active. Returns whether a new CA was
        activated. Raises FailedPreconditionError without an upstream authority."""
        if self._upstream is None:
            raise FailedPreconditionError("no upstream authority: no upstream root to act on")
        activated = False
        active = self.current_x509()
        if active is not None and chains_to(active.ca.chain_der(), tainted):
            self._log.info(
                "active x509 CA chains to a tainted upstream authority; rotating",
                authority_id=active.authority_id,
            )
            following = self.next_x509()
            if (
                following is None
                or following.status is not SlotStatus.PREPARED
                or chains_to(following.ca.chain_der(), tainted)
            ):
                following = await self.prepare_x509_now()
            await self._activate(self._x509, following)
            activated = True
        for der in tainted:
            # Already tainted here (by an operator, or an earlier attempt) is fine.
            with contextlib.suppress(InvalidArgumentError):
                await self._store.update_bundle(
                    self._settings.trust_domain, taint_x509_ca(subject_key_id(der))
                )
            self._log.info("upstream x509 authority tainted", subject_key_id=subject_key_id(der))
        return activated

    # -- the schedule, the same for both kinds ---------------------------------------------

    async def _rotate_slots(
        self,
        slots: dict[str, SlotT],
        now: datetime,
        prepare: Callable[[str, datetime], Awaitable[SlotT]],
    ) -> None:
        active: SlotT | None = self._active(slots)
        if active is None or active.not_after <= now:
            waiting = [
                slot
                for slot in slots.values()
                if slot.status is SlotStatus.PREPARED and slot.not_after > now
            ]
            if waiting:
                successor = waiting[0]
            else:
                successor = await prepare(other_slot(active.slot_id) if active else "A", now)
            await self._activate(slots, successor)
            return
        successor_id = other_slot(active.slot_id)
        successor_slot = slots.get(successor_id)
        if (
            successor_slot is None or successor_slot.status is SlotStatus.OLD
        ) and now >= prepare_at(active.not_before, active.not_after):
            await prepare(successor_id, now)
        elif (
            successor_slot is not None
            and successor_slot.status is SlotStatus.PREPARED
            and now >= activate_at(active.not_before, active.not_after)
        ):
            await self._activate(slots, successor_slot)

    async def _activate(self, slots: dict[str, SlotT], slot: SlotT) -> None:
        for other in list(slots.values()):
            if other.status is SlotStatus.ACTIVE:
                slots[other.slot_id] = replace(other, status=SlotStatus.OLD)
        slots[slot.slot_id] = replace(slot, status=SlotStatus.ACTIVE)
        await self._save_journal()
        self._log.info(f"{slot.kind} activated", slot=slot.slot_id, authority_id=slot.authority_id)
        self._metrics.increment(slot.activated_metric)
        await self._notify()

    # -- X.509 -------------------------------------------------------------------------------

    async def _prepare_x509(self, slot_id: str, now: datetime) -> X509Slot:
        settings = self._settings
        template = await self._composition.x509_ca(settings.ca_subject.ca_template(settings.ca_ttl))
        public_key = await self._key_manager.generate_key(
            f"x509-CA-{slot_id}", settings.x509_key_type
        )
        key = ManagedKey(self._key_manager, public_key)
        if self._upstream is None:
            builder = ca_builder(
                trust_domain=settings.trust_domain,
                template=template,
                public_key=key.load_public_key(),  # type: ignore[arg-type]
                now=now,
            )
            certificate = await sign_certificate(builder, key)
            ca = X509CA(certificate, key)
            roots: tuple[bytes, ...] = (ca.der,)
        else:
            csr = await sign_csr(
                ca_csr_builder(trust_domain=settings.trust_domain, template=template), key
            )
            minted = await self._upstream.mint_x509_ca(csr, template.ttl)
            # Checked at the time it came back: an upstream that does not backdate starts the
            # CA's validity at its issuance, after ``now`` when the minting took a while.
            accepted = accept_upstream_ca(
                minted,
                public_key_der=public_key.der,
                trust_domain=settings.trust_domain,
                now=self._clock.now(),
            )
            ca = X509CA(accepted.certificate, key, accepted.intermediates, upstream_signed=True)
            roots = minted.upstream_roots
        await self._add_to_bundle(x509_authorities=roots)
        slot = X509Slot(slot_id, SlotStatus.PREPARED, ca)
        self._x509[slot_id] = slot
        await self._save_journal()
        self._metrics.increment(CA_X509_PREPARED)
        self._log.info(
            "x509 CA prepared",
            slot=slot_id,
            authority_id=ca.authority_id,
            not_after=ca.not_after.isoformat(),
        )
        await self._notify()
        return slot

    # -- JWT ---------------------------------------------------------------------------------

    async def _prepare_jwt(self, slot_id: str, now: datetime) -> JwtSlot:
        settings = self._settings
        public_key = await self._key_manager.generate_key(
            f"JWT-Signer-{slot_id}", settings.jwt_key_type
        )
        key = JwtKey(
            kid=new_kid(),
            key=ManagedKey(self._key_manager, public_key),
            not_before=now,
            not_after=now + settings.ca_ttl,
        )
        authority = JwtAuthority(
            key_id=key.kid, public_key=public_key.der, expires_at=key.not_after
        )
        published: list[JwtAuthority] = []
        if self._upstream is not None:
            published = await self._upstream.publish_jwt_key(authority)
        await self._add_to_bundle(jwt_authorities=tuple(published) or (authority,))
        slot = JwtSlot(slot_id, SlotStatus.PREPARED, key)
        self._jwt[slot_id] = slot
        await self._save_journal()
        self._metrics.increment(CA_JWT_PREPARED)
        self._log.info(
            "jwt key prepared", slot=slot_id, kid=key.kid, not_after=key.not_after.isoformat()
        )
        await self._notify()
        return slot

    # -- bundle ------------------------------------------------------------------------------

    async def _add_to_bundle(
        self,
        *,
        x509_authorities: tuple[bytes, ...] = (),
        jwt_authorities: tuple[JwtAuthority, ...] = (),
    ) -> None:
        trust_domain = self._settings.trust_domain
        refresh_hint = int(self._settings.refresh_hint.total_seconds())

        def mutate(current: Bundle | None) -> Bundle:
            bundle = current or Bundle(trust_domain=trust_domain, refresh_hint=refresh_hint)
            known_x509 = {authority.der for authority in bundle.x509_authorities}
            known_jwt = {authority.key_id for authority in bundle.jwt_authorities}
            new_x509 = tuple(
                X509Authority(der=der) for der in x509_authorities if der not in known_x509
            )
            new_jwt = tuple(a for a in jwt_authorities if a.key_id not in known_jwt)
            if not new_x509 and not new_jwt and current is not None:
                return current
            return replace(
                bundle,
                x509_authorities=bundle.x509_authorities + new_x509,
                jwt_authorities=bundle.jwt_authorities + new_jwt,
                sequence_number=bundle.sequence_number + 1,
                refresh_hint=bundle.refresh_hint or refresh_hint,
            )

        await self._store.update_bundle(trust_domain, mutate)

    async def _prune(self, now: datetime) -> None:
        try:
            if await self._store.prune_bundle(self._settings.trust_domain, now):
                self._log.info("expired authorities pruned from the bundle")
        except PyspireError as error:
            self._log.warning("bundle not pruned", error=str(error))
        for slot_id, x509_slot in list(self._x509.items()):
            if x509_slot.status is SlotStatus.OLD and x509_slot.ca.not_after <= now:
                del self._x509[slot_id]
        for slot_id, jwt_slot in list(self._jwt.items()):
            if jwt_slot.status is SlotStatus.OLD and jwt_slot.key.not_after <= now:
                del self._jwt[slot_id]

    async def _notify(self) -> None:
        if self._active(self._x509) is None or self._active(self._jwt) is None:
            return  # still starting: listeners hear once both credentials are active
        for listener in list(self._listeners):
            await listener()

    # -- journal -----------------------------------------------------------------------------

    async def _save_journal(self) -> None:
        document = {
            "version": JOURNAL_VERSION,
            "x509": [
                {
                    "slot": slot.slot_id,
                    "status": slot.status.value,
                    "key_id": slot.ca.key.public_key.key_id,
                    "certificate": _b64(slot.ca.der),
                    "upstream_chain": [
                        _b64(cert.public_bytes(serialization.Encoding.DER))
                        for cert in slot.ca.upstream_chain
                    ],
                    "upstream_signed": slot.ca.upstream_signed,
                }
                for slot in self._x509.values()
            ],
            "jwt": [
                {
                    "slot": slot.slot_id,
                    "status": slot.status.value,
                    "key_id": slot.key.key.public_key.key_id,
                    "kid": slot.key.kid,
                    "public_key": _b64(slot.key.key.public_key.der),
                    "not_before": slot.key.not_before.isoformat(),
                    "not_after": slot.key.not_after.isoformat(),
                }
                for slot in self._jwt.values()
            ],
        }
        await self._store.set_ca_journal(self._journal, json.dumps(document).encode())

    async def _load_journal(self) -> None:
        raw = await self._store.get_ca_journal(self._journal)
        if raw is None and self._journal != JOURNAL_NAME:
            raw = await self._store.get_ca_journal(JOURNAL_NAME)
            if raw is not None:
                await self._read_journal(raw)
                if self._x509 or self._jwt:
                    await self._save_journal()  # adopted: kept under our own name from now on
                return
        if raw is not None:
            await self._read_journal(raw)

    async def _read_journal(self, raw: bytes) -> None:
        try:
            document = json.loads(raw)
            if document.get("version") != JOURNAL_VERSION:
                raise ValueError(f"unsupported journal version {document.get('version')!r}")
            x509_records = list(document["x509"])
            jwt_records = list(document["jwt"])
        except (ValueError, KeyError, TypeError) as error:
            self._log.warning("ca journal unreadable, starting fresh", error=str(error))
            return
        for record in x509_records:
            try:
                certificate = x509.load_der_x509_certificate(_unb64(record["certificate"]))
                public_key = await self._key_manager.get_public_key(record["key_id"])
                managed = ManagedKey(self._key_manager, public_key)
                held = certificate.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                if held != public_key.der:
                    raise ValueError("the key manager holds a different key for this CA")
                chain = tuple(
                    x509.load_der_x509_certificate(_unb64(der)) for der in record["upstream_chain"]
                )
                slot = X509Slot(
                    record["slot"],
                    SlotStatus(record["status"]),
                    X509CA(certificate, managed, chain, bool(record.get("upstream_signed"))),
                )
            except (NotFoundError, ValueError, KeyError, TypeError) as error:
                self._log.warning(
                    "x509 CA slot dropped from journal", slot=record.get("slot"), error=str(error)
                )
                continue
            self._x509[slot.slot_id] = slot
        for record in jwt_records:
            try:
                public_key = await self._key_manager.get_public_key(record["key_id"])
                if public_key.der != _unb64(record["public_key"]):
                    raise ValueError("the key manager holds a different key for this JWT key")
                jwt_slot = JwtSlot(
                    record["slot"],
                    SlotStatus(record["status"]),
                    JwtKey(
                        kid=record["kid"],
                        key=ManagedKey(self._key_manager, public_key),
                        not_before=datetime.fromisoformat(record["not_before"]),
                        not_after=datetime.fromisoformat(record["not_after"]),
                    ),
                )
            except (NotFoundError, ValueError, KeyError, TypeError) as error:
                self._log.warning(
                    "jwt key slot dropped from journal", slot=record.get("slot"), error=str(error)
                )
                continue
            self._jwt[jwt_slot.slot_id] = jwt_slot


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
