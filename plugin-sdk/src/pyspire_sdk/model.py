"""The identity registry's records, as plain frozen dataclasses.

These mirror SPIRE's ``spire.api.types`` messages field for field, in Python terms: timestamps
are aware UTC datetimes (``None`` when unset), TTLs are whole seconds where ``0`` means "the
server's default", and collections are tuples so records stay hashable and immutable.
"""

from __future__ import annotations

__all__ = [
    "ENTRY_DATASTORE_FIELDS",
    "ENTRY_FIELDS",
    "ENTRY_SETTABLE_FIELDS",
    "AttestationResult",
    "AttestedNode",
    "FederationProfile",
    "FederationRelationship",
    "JoinToken",
    "JwtSvid",
    "RegistrationEntry",
    "X509Svid",
    "check_bundle_endpoint_url",
]

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

from pyspire_sdk.errors import ConfigIssue, InvalidArgumentError
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain


@dataclass(frozen=True, slots=True)
class RegistrationEntry:
    """Who gets which identity: workloads (or nodes) matching ``selectors`` under ``parent_id``.

    ``id`` is assigned by the server when empty. ``revision_number`` increases on every update
    so caches can tell a changed entry from an unchanged one without comparing fields.
    """

    spiffe_id: SpiffeId
    parent_id: SpiffeId
    selectors: tuple[Selector, ...]
    id: str = ""
    x509_svid_ttl: int = 0
    jwt_svid_ttl: int = 0
    federates_with: tuple[TrustDomain, ...] = ()
    admin: bool = False
    downstream: bool = False
    expires_at: datetime | None = None
    dns_names: tuple[str, ...] = ()
    revision_number: int = 0
    store_svid: bool = False
    hint: str = ""
    created_at: datetime | None = None


ENTRY_FIELDS: tuple[str, ...] = tuple(item.name for item in fields(RegistrationEntry))
"""Every field of a registration entry, in declaration order: the one list of them. The wire
form (``spire.api.types.Entry``), masks, validation, the datastores and the CLI derive theirs
from it (tests hold each of them to it)."""

ENTRY_DATASTORE_FIELDS: frozenset[str] = frozenset({"id", "revision_number", "created_at"})
"""Entry fields the datastore assigns: an ID when none is given, the revision and the creation
time. An update never changes them."""

ENTRY_SETTABLE_FIELDS: frozenset[str] = frozenset(ENTRY_FIELDS) - ENTRY_DATASTORE_FIELDS
"""Entry fields a caller sets, and that an update mask may name."""


@dataclass(frozen=True, slots=True)
class AttestedNode:
    """An agent that proved its node's identity, with the facts the attestor found."""

    spiffe_id: SpiffeId
    attestation_type: str
    x509_svid_serial_number: str = ""
    x509_svid_expires_at: datetime | None = None
    selectors: tuple[Selector, ...] = ()
    banned: bool = False
    can_reattest: bool = False
    agent_version: str = ""
    new_x509_svid_serial_number: str = ""
    new_x509_svid_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JoinToken:
    """A one-time secret an operator hands to an agent to attest with; consumed on use.

    The token is left out of ``repr`` so that logging the record never leaks the secret.
    """

    token: str = field(repr=False)
    expires_at: datetime


class FederationProfile(StrEnum):
    """How a foreign bundle endpoint authenticates itself."""

    HTTPS_WEB = "https_web"
    HTTPS_SPIFFE = "https_spiffe"


@dataclass(frozen=True, slots=True)
class FederationRelationship:
    """Where to fetch a foreign trust domain's bundle and how to trust that endpoint.

    ``endpoint_spiffe_id`` is required by the ``https_spiffe`` profile (the ID the endpoint's
    X509-SVID must carry) and meaningless for ``https_web``, so construction rejects a record
    that gets this wrong rather than letting it fail later at fetch time.
    """

    trust_domain: TrustDomain
    bundle_endpoint_url: str
    profile: FederationProfile
    endpoint_spiffe_id: SpiffeId | None = None

    def __post_init__(self) -> None:
        if self.profile == FederationProfile.HTTPS_SPIFFE and self.endpoint_spiffe_id is None:
            raise InvalidArgumentError("endpoint_spiffe_id is required by the https_spiffe profile")
        if self.profile == FederationProfile.HTTPS_WEB and self.endpoint_spiffe_id is not None:
            raise InvalidArgumentError(
                "endpoint_spiffe_id must not be set with the https_web profile"
            )


def check_bundle_endpoint_url(key: str, url: str) -> Iterator[ConfigIssue]:
    """Issues for a :attr:`FederationRelationship.bundle_endpoint_url` the federation standard
    forbids (the configuration's ``federates_with`` and the TrustDomain API both check it)."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        yield ConfigIssue(key, f"expected an https URL, found {url!r}")
    elif not parts.hostname:
        yield ConfigIssue(key, f"expected a URL with a host, found {url!r}")
    elif parts.username is not None or parts.password is not None:
        yield ConfigIssue(key, "must not carry user information")


@dataclass(frozen=True, slots=True)
class X509Svid:
    """An X.509 SVID: the certificate chain (leaf first, DER) and when the leaf expires.

    ``private_key`` (PKCS#8 DER) is only present where the key lives: never on the server.
    """

    spiffe_id: SpiffeId
    cert_chain: tuple[bytes, ...]
    expires_at: datetime
    private_key: bytes | None = field(default=None, repr=False)
    hint: str = ""


@dataclass(frozen=True, slots=True)
class JwtSvid:
    """A JWT SVID in compact serialization with its subject and lifetime."""

    spiffe_id: SpiffeId
    token: str = field(repr=False)
    audience: tuple[str, ...]
    expires_at: datetime
    issued_at: datetime
    hint: str = ""


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """What a server node attestor concluded: the agent's ID and facts about the node.

    ``selector_values`` are values only (``"account_id:123"``); the host makes them selectors
    whose type is the attestor's plugin name, so a plugin cannot claim another's selectors.
    ``can_reattest`` tells the server whether the agent may prove itself again (instead of
    renewing its SVID) when it rotates.
    """

    agent_id: SpiffeId
    selector_values: tuple[str, ...] = ()
    can_reattest: bool = False
