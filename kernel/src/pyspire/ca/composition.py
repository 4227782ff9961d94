"""Credential composers applied to everything the server signs, as SPIRE applies them.

Before the server signs its X.509 CA, its own SVID, an agent's SVID, a workload's X509-SVID or
a workload's JWT-SVID, the template of that credential goes through every configured composer
in order (:func:`~pyspire_sdk.plugins.credential_composer.compose_chain`): SPIRE's
``ComposeServerX509CA``, ``ComposeServerX509SVID``, ``ComposeAgentX509SVID``,
``ComposeWorkloadX509SVID`` and ``ComposeWorkloadJWTSVID``. Downstream CAs are not composed
(SPIRE does not either).

With no composer configured nothing is built or awaited: :meth:`CredentialComposition.leaf`
returns the request the server would sign anyway, so the hot path of SVID signing costs what it
did before composers existed.

A composer's refusal (:class:`~pyspire_sdk.errors.InvalidArgumentError`) or outage
(:class:`~pyspire_sdk.errors.UnavailableError`) fails that one signing with the composer's name
and reason; anything else a composer raises is its bug and fails the signing as a
:class:`~pyspire_sdk.errors.PluginError` naming it.
"""

from __future__ import annotations

__all__ = ["CredentialComposition", "SvidKind"]

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from enum import Enum
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pyspire.ca.svid_der import DEFAULT_SVID_SUBJECT
from pyspire.ca.x509svid import LeafRequest
from pyspire.catalog import NamedPlugin
from pyspire_sdk.errors import InvalidArgumentError, PluginError, UnavailableError
from pyspire_sdk.plugins.credential_composer import (
    CredentialComposer,
    JwtSvidClaims,
    X509CaTemplate,
    X509SvidTemplate,
    compose_chain,
)
from pyspire_sdk.spiffeid import SpiffeId

TemplateT = TypeVar("TemplateT")


class SvidKind(Enum):
    """Whose X509-SVID is being made: each kind has its own composer method."""

    SERVER = "server"
    AGENT = "agent"
    WORKLOAD = "workload"


class CredentialComposition:
    """The configured credential composers, in order, as one chain per kind of credential."""

    def __init__(self, composers: Sequence[NamedPlugin[CredentialComposer]] = ()) -> None:
        self._composers = tuple(composers)
        self._names = tuple(composer.name for composer in self._composers)

    @property
    def active(self) -> bool:
        """Whether any composer is configured (otherwise every template passes unchanged)."""
        return bool(self._composers)

    async def x509_ca(self, template: X509CaTemplate) -> X509CaTemplate:
        """The server's X.509 CA template after every composer (``ComposeServerX509CA``)."""
        return await self._chain(template, lambda c, t: c.compose_server_x509_ca(t))

    async def leaf(
        self,
        kind: SvidKind,
        spiffe_id: SpiffeId,
        public_key: CertificatePublicKeyTypes,
        *,
        ttl: timedelta,
        dns_names: Sequence[str] = (),
    ) -> LeafRequest:
        """The X509-SVID to sign for ``spiffe_id`` and ``public_key``: the server's defaults
        (``C=US, O=SPIRE``, ``ttl``, ``dns_names``, no extra extension) after every composer's
        method for ``kind``."""
        if not self._composers:
            return LeafRequest(spiffe_id, public_key, ttl, tuple(dns_names))
        spki = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        template = X509SvidTemplate(
            subject=DEFAULT_SVID_SUBJECT, ttl=ttl, dns_names=tuple(dns_names)
        )
        if kind is SvidKind.SERVER:
            composed = await self._chain(
                template, lambda c, t: c.compose_server_x509_svid(spiffe_id, spki, t)
            )
        elif kind is SvidKind.AGENT:
            composed = await self._chain(
                template, lambda c, t: c.compose_agent_x509_svid(spiffe_id, spki, t)
            )
        else:
            composed = await self._chain(
                template, lambda c, t: c.compose_workload_x509_svid(spiffe_id, spki, t)
            )
        return LeafRequest(
            spiffe_id,
            public_key,
            composed.ttl,
            composed.dns_names,
            composed.subject,
            composed.extra_extensions,
            spki,
        )

    async def jwt_claims(self, spiffe_id: SpiffeId, claims: JwtSvidClaims) -> JwtSvidClaims:
        """A workload JWT-SVID's extra claims after every composer (``ComposeWorkloadJWTSVID``)."""
        return await self._chain(claims, lambda c, t: c.compose_workload_jwt_svid(spiffe_id, t))

    async def _chain(
        self,
        template: TemplateT,
        method: Callable[[CredentialComposer, TemplateT], Awaitable[TemplateT]],
    ) -> TemplateT:
        async def step(composer: NamedPlugin[CredentialComposer], current: TemplateT) -> TemplateT:
            try:
                return await method(composer.instance, current)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(
                    f'credential composer "{composer.name}" refused: {error}'
                ) from error
            except UnavailableError as error:
                raise UnavailableError(
                    f'credential composer "{composer.name}" is unavailable: {error}'
                ) from error
            except Exception as error:
                raise PluginError(
                    f'credential composer "{composer.name}" failed: {type(error).__name__}: {error}'
                ) from error

        return await compose_chain(self._composers, template, step, names=self._names)
