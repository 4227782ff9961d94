"""SVID stores: keep the X.509 SVIDs of some entries outside the agent.

Entries marked ``store_svid`` are not served over the Workload API; instead the agent hands
their SVIDs (with the private key and the bundles) to an SVID store plugin, which writes them
to a secret store (AWS Secrets Manager, GCP Secret Manager, ...) for workloads that cannot call
the Workload API. Mirrors SPIRE's ``SVIDStore`` (``PutX509SVID``, ``DeleteX509SVID``).

**Metadata.** Such an entry's selectors all have one type, *the store plugin's name* (SPIRE's
rule), e.g. ``aws_secretsmanager:secretname:web``. Their values (``secretname:web``) are the
metadata that tell the plugin where and how to store; :func:`store_metadata` extracts them. The
agent picks the store whose name is that type.
"""

from __future__ import annotations

__all__ = [
    "StoredSvid",
    "SvidStore",
    "pyspire_svid_stores",
    "store_metadata",
]

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugin import Plugin, PluginRegistration, hookspec
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain


def store_metadata(plugin_name: str, selectors: Iterable[Selector]) -> tuple[str, ...]:
    """The values of the selectors whose type is ``plugin_name``, sorted and unique."""
    return tuple(sorted({selector.value for selector in selectors if selector.type == plugin_name}))


def _check_certificates(field_name: str, values: tuple[bytes, ...], *, required: bool) -> None:
    if required and not values:
        raise InvalidArgumentError(f"{field_name} is empty: at least one certificate is required")
    for index, value in enumerate(values):
        if not isinstance(value, bytes) or not value:
            raise InvalidArgumentError(f"{field_name}[{index}] is not a non-empty DER certificate")


@dataclass(frozen=True, slots=True)
class StoredSvid:
    """One X.509 SVID with everything a workload needs to use it, as the store receives it.

    ``cert_chain`` is DER, leaf first; ``private_key`` is PKCS#8 DER and never appears in
    ``repr``; ``bundle`` holds the DER root certificates of the SVID's own trust domain and
    ``federated_bundles`` those of each trust domain the entry federates with. ``metadata`` are
    the selector values addressed to the store (see :func:`store_metadata`).
    """

    spiffe_id: SpiffeId
    cert_chain: tuple[bytes, ...]
    private_key: bytes = field(repr=False)
    bundle: tuple[bytes, ...]
    expires_at: datetime
    metadata: tuple[str, ...]
    federated_bundles: Mapping[TrustDomain, tuple[bytes, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_certificates("cert_chain", self.cert_chain, required=True)
        _check_certificates("bundle", self.bundle, required=True)
        if not isinstance(self.private_key, bytes) or not self.private_key:
            raise InvalidArgumentError("private_key is empty")
        if self.expires_at.tzinfo is None:
            raise InvalidArgumentError("expires_at must be timezone-aware")
        for value in self.metadata:
            if not isinstance(value, str) or not value:
                raise InvalidArgumentError("metadata values must be non-empty strings")
        frozen: dict[TrustDomain, tuple[bytes, ...]] = {}
        for trust_domain, roots in self.federated_bundles.items():
            if not isinstance(trust_domain, TrustDomain):
                raise InvalidArgumentError(
                    f"federated_bundles key {trust_domain!r} is not a TrustDomain"
                )
            roots = tuple(roots)
            _check_certificates(f"federated_bundles[{trust_domain.name}]", roots, required=True)
            frozen[trust_domain] = roots
        object.__setattr__(self, "federated_bundles", MappingProxyType(frozen))

    def __hash__(self) -> int:
        return hash((self.spiffe_id, self.cert_chain, self.metadata, self.expires_at))


@runtime_checkable
class SvidStore(Plugin, Protocol):
    """Writes and removes stored SVIDs.

    Guarantees the agent relies on:

    - ``put_x509_svid`` creates or replaces the stored SVID addressed by ``svid.metadata``;
      when it returns, a reader of the store gets the new SVID. Putting the same SVID twice is
      harmless.
    - ``delete_x509_svid`` removes what a put with the same metadata stored; deleting something
      that is not stored succeeds (the agent may repeat a delete after a restart).
    - Metadata the plugin does not understand (an unknown key, a missing required key such as
      a secret name) raises :class:`~pyspire_sdk.errors.InvalidArgumentError` naming it (the
      agent does not put that SVID again, and counts such a delete as done); a store that
      cannot be reached raises :class:`~pyspire_sdk.errors.UnavailableError`, and one that
      refuses the credentials :class:`~pyspire_sdk.errors.PermissionDeniedError`: the agent
      retries those (and any other failure) with backoff.
    - The private key is never logged.
    """

    async def put_x509_svid(self, svid: StoredSvid) -> None:
        """Store (or replace) ``svid`` where its metadata says."""
        ...

    async def delete_x509_svid(self, metadata: tuple[str, ...]) -> None:
        """Remove the SVID stored under ``metadata``; nothing stored there is not an error."""
        ...


@hookspec
def pyspire_svid_stores() -> list[PluginRegistration[Any, SvidStore]]:  # type: ignore[empty-body]
    """Return the SVID stores this plugin module provides.

    An agent runs any number of them; the plugin name is the selector type that addresses it.
    Return ``[]`` when the module provides none. The hook is synchronous and must not do I/O.
    """
