"""Which Envoy secrets a caller may have, by resource name, as SPIRE's agent names them.

Sans-IO: a :class:`CallerSecrets` is built from one snapshot of the agent cache and the
caller's selectors, and answers by resource name:

- a trust domain's SPIFFE ID (``spiffe://example.org``): that trust domain's validation context,
  for the agent's own trust domain and for every federated one the caller's entries federate
  with;
- ``default_bundle_name`` (``ROOTCA``): the agent's own trust domain's validation context under
  that name;
- ``default_all_bundles_name`` (``ALL``): one validation context with every trust domain above,
  which needs the SPIFFE certificate validator;
- a SPIFFE ID of the caller: its X509-SVID as a TLS certificate;
- ``default_svid_name`` (``default``): the caller's first X509-SVID (its oldest entry's) under
  that name.

No names means all the caller may have: every validation context by trust domain ID, then every
TLS certificate by SPIFFE ID. A validation context configures Envoy's SPIFFE certificate
validator unless it is disabled (``disable_spiffe_cert_validation`` in the agent's
configuration, overridden per Envoy by the same key in its node metadata) or the Envoy is older
than 1.18; otherwise it lists the trusted CAs for standard chain validation.

Where SPIRE would refuse a request that names both a trust domain's ID and the default bundle
name (or both a SPIFFE ID and the default SVID name), both are served here.
"""

from __future__ import annotations

__all__ = [
    "DISABLE_SPIFFE_VALIDATION_KEY",
    "CallerSecrets",
    "caller_content",
    "uses_spiffe_validator",
]

import json
from collections.abc import Hashable, Sequence

from pyspire.agent.identities import Identity, Snapshot
from pyspire.config.sds import SdsConfig
from pyspire.proto.gen.codec.envoy_config_core_v3 import Node
from pyspire.proto.secrets import (
    envoy_version,
    metadata_flag,
    spiffe_validator_secret,
    tls_certificate_secret,
    trusted_ca_secret,
)
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnavailableError,
)
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import TrustDomain

DISABLE_SPIFFE_VALIDATION_KEY = "disable_spiffe_cert_validation"
"""The Envoy node metadata key that overrides the agent's choice of validator."""

_FIRST_SPIFFE_VALIDATOR_VERSION = (1, 18)
"""The first Envoy release with the SPIFFE certificate validator."""


def uses_spiffe_validator(names: SdsConfig, node: Node | None) -> bool:
    """Whether validation contexts for this Envoy configure the SPIFFE certificate validator:
    not when disabled (by the agent, or by the node's metadata, which wins when it holds a
    boolean), nor for an Envoy that reports a build older than 1.18."""
    disabled = names.disable_spiffe_cert_validation
    override = metadata_flag(node, DISABLE_SPIFFE_VALIDATION_KEY)
    if override is not None:
        disabled = override
    if disabled:
        return False
    version = envoy_version(node)
    return version is None or version >= _FIRST_SPIFFE_VALIDATOR_VERSION


def _td_id(trust_domain: TrustDomain) -> str:
    return f"spiffe://{trust_domain.name}"


def _ders(bundle: Bundle) -> tuple[bytes, ...]:
    return tuple(authority.der for authority in bundle.x509_authorities)


def caller_content(snapshot: Snapshot, selectors: frozenset[Selector]) -> Hashable:
    """What a caller's secrets are made of in ``snapshot``: equal values give equal secrets,
    so a stream sends again only when this changes."""
    view = snapshot.view(selectors)
    federated = _federated(snapshot, view.entries)
    return (
        snapshot.synced,
        tuple(entry.id for entry in view.entries),
        tuple((i.entry.id, i.svid.cert_chain, i.svid.private_key) for i in view.identities),
        None if snapshot.bundle is None else _ders(snapshot.bundle),
        tuple((td.name, _ders(bundle)) for td, bundle in federated.items()),
    )


def _federated(
    snapshot: Snapshot, entries: Sequence[RegistrationEntry]
) -> dict[TrustDomain, Bundle]:
    """The federated bundles the agent holds of the trust domains ``entries`` federate with,
    ordered by trust domain name."""
    wanted = {td for entry in entries for td in entry.federates_with}
    found = {
        td: snapshot.federated_bundles[td] for td in wanted if td in snapshot.federated_bundles
    }
    return dict(sorted(found.items(), key=lambda item: item[0].name))


class CallerSecrets:
    """The secrets of the caller with ``selectors`` in ``snapshot``, each an encoded ``Any``.

    Raises :class:`~pyspire_sdk.errors.UnavailableError` while the agent has no bundle or does
    not know its entries yet, and :class:`~pyspire_sdk.errors.PermissionDeniedError` (``no
    identity issued``) when no entry matches the caller: such a caller gets nothing, not even
    a bundle. ``spiffe_validator`` chooses the kind of validation context
    (:func:`uses_spiffe_validator`).
    """

    def __init__(
        self,
        snapshot: Snapshot,
        selectors: frozenset[Selector],
        names: SdsConfig,
        *,
        spiffe_validator: bool,
    ) -> None:
        view = snapshot.view(selectors)
        if not view.entries:
            if not snapshot.synced:
                raise UnavailableError("agent has not synced its entries yet")
            raise PermissionDeniedError("no identity issued")
        if snapshot.bundle is None:
            raise UnavailableError("agent has no trust bundle yet")
        self._names = names
        self._spiffe = spiffe_validator
        self._own = snapshot.bundle.trust_domain
        self._bundles = {self._own: snapshot.bundle}
        for td, bundle in _federated(snapshot, view.entries).items():
            self._bundles.setdefault(td, bundle)
        # The cache keeps every workload SVID with its key; one without is never served.
        self._identities = _unique_ids([i for i in view.identities if i.svid.private_key])
        held = {str(identity.entry.spiffe_id) for identity in self._identities}
        self._awaited = {str(e.spiffe_id) for e in view.entries} - held
        self._built: dict[str, bytes | None] = {}

    def everything(self) -> list[tuple[str, bytes]]:
        """Every secret the caller may have, by its canonical name: validation contexts by
        trust domain ID (own first, then federated by name), then TLS certificates by SPIFFE
        ID (oldest entry first)."""
        names = [_td_id(td) for td in self._bundles]
        names += [str(identity.entry.spiffe_id) for identity in self._identities]
        return [(name, self._secret(name)) for name in names]

    def get(self, name: str) -> bytes | None:
        """The secret called ``name``, or None when the caller has none of that name.

        Raises :class:`~pyspire_sdk.errors.FailedPreconditionError` for the all-bundles name
        when the SPIFFE certificate validator is not used (standard validation has no way to
        tell trust domains apart)."""
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def _secret(self, name: str) -> bytes:
        found = self.get(name)
        assert found is not None  # a canonical name of this caller always resolves
        return found

    def resolve(self, requested: Sequence[str]) -> list[tuple[str, bytes]]:
        """A state-of-the-world answer: every requested secret, or :meth:`everything` when none
        is named. A name the caller may have but whose X509-SVID is not minted yet is
        UNAVAILABLE; any other unknown name is INVALID_ARGUMENT, as in SPIRE."""
        wanted = list(dict.fromkeys(name for name in requested if name))
        if not wanted:
            return self.everything()
        found = [(name, self.get(name)) for name in wanted]
        missing = [name for name, secret in found if secret is None]
        if any(self._awaited_name(name) for name in missing):
            raise UnavailableError("no valid x509 svid for the caller yet")
        if missing:
            quoted = " ".join(json.dumps(name) for name in sorted(missing))
            raise InvalidArgumentError(
                f"workload is not authorized for the requested identities [{quoted}]"
            )
        return [(name, secret) for name, secret in found if secret is not None]

    def _awaited_name(self, name: str) -> bool:
        if name == self._names.default_svid_name:
            return not self._identities and bool(self._awaited)
        return name in self._awaited

    def _build(self, name: str) -> bytes | None:
        names = self._names
        own_id = _td_id(self._own)
        if name == own_id:
            return self._context(name, (self._own,))
        if name == names.default_bundle_name:
            return self._context(name, (self._own,))
        if name == names.default_all_bundles_name:
            if not self._spiffe:
                raise FailedPreconditionError(
                    f"resource {name!r} needs the SPIFFE certificate validator: it is "
                    "disabled, or the Envoy is older than 1.18"
                )
            return self._context(name, tuple(sorted(self._bundles, key=lambda td: td.name)))
        for td in self._bundles:
            if name == _td_id(td):
                return self._context(name, (td,))
        for index, identity in enumerate(self._identities):
            if name == str(identity.entry.spiffe_id) or (
                index == 0 and name == names.default_svid_name
            ):
                return _certificate(name, identity)
        return None

    def _context(self, name: str, domains: Sequence[TrustDomain]) -> bytes:
        if self._spiffe:
            return spiffe_validator_secret(
                name, [(td.name, _ders(self._bundles[td])) for td in domains]
            )
        [only] = domains
        return trusted_ca_secret(name, _ders(self._bundles[only]))


def _certificate(name: str, identity: Identity) -> bytes:
    svid = identity.svid
    return tls_certificate_secret(name, svid.cert_chain, svid.private_key or b"")


def _unique_ids(identities: Sequence[Identity]) -> tuple[Identity, ...]:
    """One identity per SPIFFE ID, the oldest entry's (resources are named by SPIFFE ID)."""
    seen: set[str] = set()
    kept = []
    for identity in identities:
        spiffe_id = str(identity.entry.spiffe_id)
        if spiffe_id not in seen:
            seen.add(spiffe_id)
            kept.append(identity)
    return tuple(kept)
