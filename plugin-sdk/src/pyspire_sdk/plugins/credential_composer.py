"""Credential composers: adjust what goes into a CA certificate or an SVID before it is signed.

Before the server signs its CA, its own SVID, an agent's SVID or a workload's SVID, it builds a
template with the parts a plugin may adjust (subject, DNS names, extra extensions, lifetime, JWT
claims) and passes it through every configured composer in order; each receives the previous
one's output. Mirrors SPIRE's ``CredentialComposer`` (``ComposeServerX509CA``,
``ComposeServerX509SVID``, ``ComposeAgentX509SVID``, ``ComposeWorkloadX509SVID``,
``ComposeWorkloadJWTSVID``).

What a composer cannot change is kept out of its reach: the SPIFFE ID, the public key, the
extensions that make a certificate a SPIFFE credential (basic constraints, key usage, extended
key usage, subject alternative names, key identifiers) and the JWT claims the JWT-SVID standard
requires (``sub``, ``aud``, ``exp``, ``iat``). The templates refuse those on construction, so a
composer cannot even express such a change.
"""

from __future__ import annotations

__all__ = [
    "RESERVED_EXTENSION_OIDS",
    "RESERVED_JWT_CLAIMS",
    "CredentialComposer",
    "Extension",
    "JsonValue",
    "JwtSvidClaims",
    "SubjectAttribute",
    "X509CaTemplate",
    "X509SvidTemplate",
    "compose_chain",
    "pyspire_credential_composers",
]

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from pyspire_sdk.errors import InvalidArgumentError, PluginError
from pyspire_sdk.plugin import Plugin, PluginRegistration, hookspec
from pyspire_sdk.spiffeid import SpiffeId

RESERVED_EXTENSION_OIDS: frozenset[str] = frozenset(
    {
        "2.5.29.14",  # subjectKeyIdentifier
        "2.5.29.15",  # keyUsage
        "2.5.29.17",  # subjectAltName (the SPIFFE ID and DNS names)
        "2.5.29.19",  # basicConstraints
        "2.5.29.35",  # authorityKeyIdentifier
        "2.5.29.37",  # extKeyUsage
    }
)
"""Extensions the host sets itself; a template's ``extra_extensions`` must not hold them."""

RESERVED_JWT_CLAIMS: frozenset[str] = frozenset({"sub", "aud", "exp", "iat"})
"""Claims the host sets from the request and the CA; :class:`JwtSvidClaims` must not hold them."""

JsonValue: TypeAlias = (
    "str | int | float | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
)
"""A value JSON can carry; lists are stored as tuples and objects as read-only mappings."""

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


def _check_oid(field_name: str, oid: str) -> None:
    if not isinstance(oid, str) or not _OID.match(oid):
        raise InvalidArgumentError(
            f"{field_name} {oid!r} is not a dotted object identifier such as '1.2.3.4'"
        )


@dataclass(frozen=True, slots=True)
class Extension:
    """One X.509 extension to add: its OID (dotted), criticality and DER-encoded value."""

    oid: str
    critical: bool
    value: bytes

    def __post_init__(self) -> None:
        _check_oid("extension oid", self.oid)
        if self.oid in RESERVED_EXTENSION_OIDS:
            raise InvalidArgumentError(
                f"extension oid {self.oid!r} is set by the host and cannot be composed"
            )
        if not isinstance(self.value, bytes) or not self.value:
            raise InvalidArgumentError(f"extension {self.oid!r} value must be non-empty DER")


@dataclass(frozen=True, slots=True)
class SubjectAttribute:
    """One attribute of a certificate subject, e.g. ``SubjectAttribute("2.5.4.10", "SPIRE")``.

    Order matters: the subject is encoded in the order of the template's tuple.
    """

    oid: str
    value: str

    def __post_init__(self) -> None:
        _check_oid("subject attribute oid", self.oid)
        if not isinstance(self.value, str) or not self.value:
            raise InvalidArgumentError(f"subject attribute {self.oid!r} value is empty")


def _check_ttl(ttl: timedelta) -> None:
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise InvalidArgumentError(f"ttl must be a positive duration, got {ttl!r}")


def _check_extensions(extensions: tuple[Extension, ...]) -> None:
    seen: set[str] = set()
    for extension in extensions:
        if not isinstance(extension, Extension):
            raise InvalidArgumentError("extra_extensions must hold Extension values")
        if extension.oid in seen:
            raise InvalidArgumentError(f"extra_extensions has oid {extension.oid!r} twice")
        seen.add(extension.oid)


def _check_subject(subject: tuple[SubjectAttribute, ...]) -> None:
    for attribute in subject:
        if not isinstance(attribute, SubjectAttribute):
            raise InvalidArgumentError("subject must hold SubjectAttribute values")


@dataclass(frozen=True, slots=True)
class X509CaTemplate:
    """The adjustable parts of the server's X.509 CA certificate.

    ``ttl`` is the requested lifetime; the host caps it at the upstream chain's expiry.
    ``policy_identifiers`` are certificate policy OIDs (dotted).
    """

    subject: tuple[SubjectAttribute, ...]
    ttl: timedelta
    policy_identifiers: tuple[str, ...] = ()
    extra_extensions: tuple[Extension, ...] = ()

    def __post_init__(self) -> None:
        _check_subject(self.subject)
        _check_ttl(self.ttl)
        for oid in self.policy_identifiers:
            _check_oid("policy identifier", oid)
        _check_extensions(self.extra_extensions)


_DNS_LABEL = re.compile(r"^(\*|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)$")


def _check_dns_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 253:
        raise InvalidArgumentError(f"dns name {name!r} must be 1 to 253 characters")
    labels = name.split(".")
    for index, label in enumerate(labels):
        if not _DNS_LABEL.match(label) or (label == "*" and index != 0):
            raise InvalidArgumentError(
                f"dns name {name!r} has an invalid label {label!r} (a wildcard is allowed "
                "only as the whole first label)"
            )


@dataclass(frozen=True, slots=True)
class X509SvidTemplate:
    """The adjustable parts of an X.509 SVID (the server's, an agent's or a workload's).

    ``dns_names`` become DNS SANs next to the SPIFFE ID; the host uses the first as the subject
    common name when the subject has none. ``ttl`` is the requested lifetime; the host caps it
    at the signing CA's expiry.
    """

    subject: tuple[SubjectAttribute, ...]
    ttl: timedelta
    dns_names: tuple[str, ...] = ()
    extra_extensions: tuple[Extension, ...] = ()

    def __post_init__(self) -> None:
        _check_subject(self.subject)
        _check_ttl(self.ttl)
        for name in self.dns_names:
            _check_dns_name(name)
        _check_extensions(self.extra_extensions)


def _freeze_json(path: str, value: object) -> JsonValue:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentError(f"claim {path} is {value!r}, which JSON cannot carry")
        return value
    if isinstance(value, Mapping):
        frozen: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgumentError(f"claim {path} has a non-string key {key!r}")
            frozen[key] = _freeze_json(f"{path}.{key}", item)
        return MappingProxyType(frozen)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_json(f"{path}[{index}]", item) for index, item in enumerate(value))
    raise InvalidArgumentError(
        f"claim {path} is a {type(value).__name__}, which is not a JSON value"
    )


def _thaw_json(value: JsonValue) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw_json(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw_json(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class JwtSvidClaims:
    """Extra claims of a JWT-SVID, beside the ones the host sets (:data:`RESERVED_JWT_CLAIMS`).

    Values are checked to be JSON (strings, finite numbers, booleans, null, lists, objects with
    string keys) and stored read-only: lists as tuples, objects as read-only mappings.
    :meth:`to_dict` returns a plain, mutable copy ready for ``json.dumps``.
    """

    claims: Mapping[str, JsonValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.claims, Mapping):
            raise InvalidArgumentError("claims must be a mapping of claim name to JSON value")
        frozen: dict[str, JsonValue] = {}
        for name, value in self.claims.items():
            if not isinstance(name, str) or not name:
                raise InvalidArgumentError(f"claim name {name!r} must be a non-empty string")
            if name in RESERVED_JWT_CLAIMS:
                raise InvalidArgumentError(
                    f"claim {name!r} is set by the host and cannot be composed"
                )
            frozen[name] = _freeze_json(name, value)
        object.__setattr__(self, "claims", MappingProxyType(frozen))

    def with_claims(self, claims: Mapping[str, JsonValue]) -> JwtSvidClaims:
        """A copy with ``claims`` added, replacing claims of the same name."""
        merged: dict[str, JsonValue] = dict(self.claims)
        merged.update(claims)
        return JwtSvidClaims(merged)

    def without(self, *names: str) -> JwtSvidClaims:
        """A copy without the claims ``names`` (absent names are ignored)."""
        return JwtSvidClaims({k: v for k, v in self.claims.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """The claims as plain ``dict``/``list`` values."""
        return {name: _thaw_json(value) for name, value in self.claims.items()}

    def __hash__(self) -> int:
        return hash(repr(sorted(self.to_dict().items(), key=lambda item: item[0])))


@runtime_checkable
class CredentialComposer(Plugin, Protocol):
    """Adjusts credential templates before they are signed.

    Guarantees the host relies on:

    - Each method returns a template of the same type: the input itself (or an equal value)
      is **no opinion**; anything else replaces the input for the next composer in the chain.
    - Methods are pure with respect to the arguments: the same input gives the same output, so
      the server may compose again when it retries a signing.
    - A method raises :class:`~pyspire_sdk.errors.InvalidArgumentError` when it refuses to
      compose for these arguments (the signing then fails with that reason) and
      :class:`~pyspire_sdk.errors.UnavailableError` when a dependency it needs is down.
    - Methods may run concurrently.

    ``spiffe_id`` and ``public_key`` (SubjectPublicKeyInfo DER) describe the credential being
    made and are for reading only.
    """

    async def compose_server_x509_ca(self, template: X509CaTemplate) -> X509CaTemplate:
        """Adjust the server's X.509 CA certificate (self-signed, or a CSR to the upstream)."""
        ...

    async def compose_server_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        """Adjust the server's own X.509 SVID (``spiffe://<td>/spire/server``)."""
        ...

    async def compose_agent_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        """Adjust an agent's X.509 SVID, issued at attestation and renewal."""
        ...

    async def compose_workload_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        """Adjust a workload's X.509 SVID."""
        ...

    async def compose_workload_jwt_svid(
        self, spiffe_id: SpiffeId, claims: JwtSvidClaims
    ) -> JwtSvidClaims:
        """Adjust the extra claims of a workload's JWT-SVID."""
        ...


ComposerT = TypeVar("ComposerT")
TemplateT = TypeVar("TemplateT")


async def compose_chain(
    composers: Sequence[ComposerT],
    template: TemplateT,
    step: Callable[[ComposerT, TemplateT], Awaitable[TemplateT]],
    *,
    names: Sequence[str] | None = None,
) -> TemplateT:
    """Pass ``template`` through ``composers`` in order and return the final template.

    ``step`` calls one method on one composer, e.g.
    ``lambda c, t: c.compose_workload_x509_svid(spiffe_id, key, t)``. A composer that returns
    something other than the template's type breaks the contract and raises
    :class:`~pyspire_sdk.errors.PluginError` naming its position in the chain, and its name
    when ``names`` (one per composer, as configured) is given.
    """
    if names is not None and len(names) != len(composers):
        raise ValueError(f"{len(names)} names given for {len(composers)} composers")
    expected = type(template)
    current = template
    for position, composer in enumerate(composers):
        result = await step(composer, current)
        if type(result) is not expected:
            named = f'"{names[position]}" ' if names is not None else ""
            raise PluginError(
                f"credential composer {named}#{position} ({type(composer).__name__}) returned "
                f"{type(result).__name__}, expected {expected.__name__}"
            )
        current = result
    return current


@hookspec
def pyspire_credential_composers() -> list[PluginRegistration[Any, CredentialComposer]]:  # type: ignore[empty-body]
    """Return the credential composers this plugin module provides.

    A server runs any number of them as a chain in configured order. Return ``[]`` when the
    module provides none. The hook is synchronous and must not do I/O.
    """
