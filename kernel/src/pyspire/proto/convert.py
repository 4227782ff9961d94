"""Conversions between wire messages (``spire.api.types``) and SDK records.

The readers accept the betterproto messages and the generated codecs' messages alike (they
have the same field names).

Protobuf stays at the edge: services convert what arrives into SDK types here, and convert SDK
types back just before sending. Parsing a peer's message never trusts it: every ID and selector
is validated, and errors name the field (``entry.spiffe_id``) so a caller knows what to fix.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from pyspire.proto.gen.codec import spire_api_types as wire
from pyspire.proto.gen.spire.api import types as pb
from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import AttestedNode, JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

MIN_TIMESTAMP = -62_135_596_800
"""0001-01-01T00:00:00Z in seconds since the epoch: the earliest moment a wire timestamp may
name (protobuf's ``Timestamp`` range, and the first a ``datetime`` can hold)."""

MAX_TIMESTAMP = 253_402_300_799
"""9999-12-31T23:59:59Z in seconds since the epoch: the latest moment a wire timestamp may name."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_timestamp(moment: datetime | None) -> int:
    """Seconds since the epoch, 0 for unset (the wire's convention)."""
    return int(moment.timestamp()) if moment is not None else 0


def from_timestamp(seconds: int, field: str = "timestamp") -> datetime | None:
    """An aware UTC datetime, or None for 0.

    The wire carries any ``int64``; a value outside the years 1 to 9999 (:data:`MIN_TIMESTAMP`
    to :data:`MAX_TIMESTAMP`) names no moment and is refused with an InvalidArgumentError naming
    ``field`` ("invalid expires_at: ... is out of range"), so one bad timestamp fails the item
    that carries it rather than the whole call.
    """
    if not seconds:
        return None
    if not MIN_TIMESTAMP <= seconds <= MAX_TIMESTAMP:
        raise InvalidArgumentError(f"invalid {field}: {seconds} is out of range")
    return _EPOCH + timedelta(seconds=seconds)


def spiffe_id_to_proto(spiffe_id: SpiffeId) -> pb.Spiffeid:
    return pb.Spiffeid(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


def spiffe_id_from_proto(message: pb.Spiffeid | wire.SPIFFEID | None, field: str) -> SpiffeId:
    """Validate a wire SPIFFE ID; the error names ``field``."""
    if message is None or not message.trust_domain:
        raise InvalidArgumentError(f"invalid {field}: trust domain is missing")
    try:
        return _spiffe_id(message.trust_domain, message.path)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"invalid {field}: {error}") from None


_RECENT_VALUES = 1 << 16
"""How many validated SPIFFE IDs and selectors are remembered: peers send the same ones again
and again (an agent's entries share their parent, workloads share selectors), and the SDK
records are immutable, so a remembered one is the very value validation would build."""


_RECENT_TRUST_DOMAINS = 1024
"""How many validated trust domains are remembered: a server sees a handful, and every
remembered SPIFFE ID of one trust domain then shares its object (a server of many agents
remembers tens of thousands of IDs)."""


@functools.lru_cache(maxsize=_RECENT_VALUES)
def _spiffe_id(trust_domain: str, path: str) -> SpiffeId:
    return SpiffeId(_trust_domain(trust_domain), path)


@functools.lru_cache(maxsize=_RECENT_TRUST_DOMAINS)
def _trust_domain(name: str) -> TrustDomain:
    return TrustDomain(name)


@functools.lru_cache(maxsize=_RECENT_VALUES)
def _selector(kind: str, value: str) -> Selector:
    return Selector(kind, value)


def selector_to_proto(selector: Selector) -> pb.Selector:
    return pb.Selector(type=selector.type, value=selector.value)


def selectors_from_proto(
    messages: Iterable[pb.Selector | wire.Selector], field: str
) -> tuple[Selector, ...]:
    found = []
    for index, message in enumerate(messages):
        try:
            found.append(_selector(message.type, message.value))
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"invalid {field}[{index}]: {error}") from None
    return tuple(found)


def trust_domains_from_proto(names: Iterable[str], field: str) -> tuple[TrustDomain, ...]:
    found = []
    for index, name in enumerate(names):
        try:
            found.append(TrustDomain.parse(name))
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"invalid {field}[{index}]: {error}") from None
    return tuple(found)


def entry_to_proto(entry: RegistrationEntry) -> pb.Entry:
    return pb.Entry(
        id=entry.id,
        spiffe_id=spiffe_id_to_proto(entry.spiffe_id),
        parent_id=spiffe_id_to_proto(entry.parent_id),
        selectors=[selector_to_proto(s) for s in entry.selectors],
        x509_svid_ttl=entry.x509_svid_ttl,
        federates_with=[td.name for td in entry.federates_with],
        admin=entry.admin,
        downstream=entry.downstream,
        expires_at=to_timestamp(entry.expires_at),
        dns_names=list(entry.dns_names),
        revision_number=entry.revision_number,
        store_svid=entry.store_svid,
        jwt_svid_ttl=entry.jwt_svid_ttl,
        hint=entry.hint,
        created_at=to_timestamp(entry.created_at),
    )


def entry_from_proto(message: pb.Entry | wire.Entry, field: str = "entry") -> RegistrationEntry:
    """A registration entry from the wire; IDs and selectors validated, semantics not (that is
    the registry's job)."""
    if message.x509_svid_ttl < 0 or message.jwt_svid_ttl < 0:
        raise InvalidArgumentError(f"invalid {field}: TTLs must not be negative")
    return RegistrationEntry(
        id=message.id,
        spiffe_id=spiffe_id_from_proto(message.spiffe_id, f"{field}.spiffe_id"),
        parent_id=spiffe_id_from_proto(message.parent_id, f"{field}.parent_id"),
        selectors=selectors_from_proto(message.selectors, f"{field}.selectors"),
        x509_svid_ttl=message.x509_svid_ttl,
        jwt_svid_ttl=message.jwt_svid_ttl,
        federates_with=trust_domains_from_proto(message.federates_with, f"{field}.federates_with"),
        admin=message.admin,
        downstream=message.downstream,
        expires_at=from_timestamp(message.expires_at, f"{field}.expires_at"),
        dns_names=tuple(message.dns_names),
        revision_number=message.revision_number,
        store_svid=message.store_svid,
        hint=message.hint,
        created_at=from_timestamp(message.created_at, f"{field}.created_at"),
    )


def agent_to_proto(node: AttestedNode) -> pb.Agent:
    return pb.Agent(
        id=spiffe_id_to_proto(node.spiffe_id),
        attestation_type=node.attestation_type,
        x509_svid_serial_number=node.x509_svid_serial_number,
        x509_svid_expires_at=to_timestamp(node.x509_svid_expires_at),
        selectors=[selector_to_proto(s) for s in node.selectors],
        banned=node.banned,
        can_reattest=node.can_reattest,
        agent_version=node.agent_version,
    )


def bundle_to_proto(bundle: Bundle) -> pb.Bundle:
    return pb.Bundle(
        trust_domain=bundle.trust_domain.name,
        x509_authorities=[
            pb.X509Certificate(asn1=a.der, tainted=a.tainted) for a in bundle.x509_authorities
        ],
        jwt_authorities=[
            pb.JwtKey(
                public_key=a.public_key,
                key_id=a.key_id,
                expires_at=to_timestamp(a.expires_at),
                tainted=a.tainted,
            )
            for a in bundle.jwt_authorities
        ],
        refresh_hint=bundle.refresh_hint,
        sequence_number=bundle.sequence_number,
    )


def bundle_from_proto(message: pb.Bundle | wire.Bundle, field: str = "bundle") -> Bundle:
    try:
        trust_domain = TrustDomain.parse(message.trust_domain)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"invalid {field}.trust_domain: {error}") from None
    jwt_authorities: Sequence[pb.JwtKey | wire.JWTKey] = message.jwt_authorities
    x509_authorities: Sequence[pb.X509Certificate | wire.X509Certificate] = message.x509_authorities
    for index, key in enumerate(jwt_authorities):
        if not key.key_id:
            raise InvalidArgumentError(
                f"invalid {field}.jwt_authorities[{index}]: key_id is missing"
            )
        if not key.public_key:
            raise InvalidArgumentError(
                f"invalid {field}.jwt_authorities[{index}]: public_key is missing"
            )
    for index, certificate in enumerate(x509_authorities):
        if not certificate.asn1:
            raise InvalidArgumentError(
                f"invalid {field}.x509_authorities[{index}]: asn1 is missing"
            )
    return Bundle(
        trust_domain=trust_domain,
        x509_authorities=tuple(
            X509Authority(der=a.asn1, tainted=a.tainted) for a in x509_authorities
        ),
        jwt_authorities=tuple(
            JwtAuthority(
                key_id=a.key_id,
                public_key=a.public_key,
                expires_at=from_timestamp(
                    a.expires_at, f"{field}.jwt_authorities[{index}].expires_at"
                ),
                tainted=a.tainted,
            )
            for index, a in enumerate(jwt_authorities)
        ),
        refresh_hint=message.refresh_hint,
        sequence_number=message.sequence_number,
    )


def x509_svid_to_proto(svid: X509Svid) -> pb.X509Svid:
    return pb.X509Svid(
        cert_chain=list(svid.cert_chain),
        id=spiffe_id_to_proto(svid.spiffe_id),
        expires_at=to_timestamp(svid.expires_at),
        hint=svid.hint,
    )


def jwt_svid_to_proto(svid: JwtSvid) -> pb.Jwtsvid:
    return pb.Jwtsvid(
        token=svid.token,
        id=spiffe_id_to_proto(svid.spiffe_id),
        expires_at=to_timestamp(svid.expires_at),
        issued_at=to_timestamp(svid.issued_at),
        hint=svid.hint,
    )


def x509_svid_from_proto(
    message: pb.X509Svid | wire.X509SVID | None, field: str = "svid"
) -> X509Svid:
    """An X509-SVID (without private key) from the wire; the chain must be non-empty and the
    ID valid. The chain is not verified here: that needs a bundle, which the caller has."""
    if message is None or not message.cert_chain:
        raise InvalidArgumentError(f"invalid {field}.cert_chain: the certificate chain is empty")
    for index, certificate in enumerate(message.cert_chain):
        if not certificate:
            raise InvalidArgumentError(f"invalid {field}.cert_chain[{index}]: it is empty")
    expires_at = from_timestamp(message.expires_at, f"{field}.expires_at")
    if expires_at is None:
        raise InvalidArgumentError(f"invalid {field}.expires_at: it is missing")
    return X509Svid(
        spiffe_id=spiffe_id_from_proto(message.id, f"{field}.id"),
        cert_chain=tuple(message.cert_chain),
        expires_at=expires_at,
        hint=message.hint,
    )


def jwt_svid_from_proto(
    message: pb.Jwtsvid | None, audience: Iterable[str], field: str = "svid"
) -> JwtSvid:
    """A JWT-SVID from the wire. The message does not repeat the audience, so the caller gives
    the one it asked for."""
    if message is None or not message.token:
        raise InvalidArgumentError(f"invalid {field}.token: it is missing")
    expires_at = from_timestamp(message.expires_at, f"{field}.expires_at")
    issued_at = from_timestamp(message.issued_at, f"{field}.issued_at")
    if expires_at is None:
        raise InvalidArgumentError(f"invalid {field}.expires_at: it is missing")
    if issued_at is None:
        raise InvalidArgumentError(f"invalid {field}.issued_at: it is missing")
    return JwtSvid(
        spiffe_id=spiffe_id_from_proto(message.id, f"{field}.id"),
        token=message.token,
        audience=tuple(audience),
        expires_at=expires_at,
        issued_at=issued_at,
        hint=message.hint,
    )
