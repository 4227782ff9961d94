"""A downstream server's client to its upstream server: SPIRE's nested topology.

A downstream server is a workload of the upstream trust domain whose entry is marked
``downstream``; it calls the upstream's ``SVID.NewDownstreamX509CA`` for its intermediate CA and
``Bundle.PublishJWTAuthority`` for its JWT keys, presenting that workload X509-SVID over mutual
TLS. :class:`UpstreamServerClient` is the agent's :class:`~pyspire.agent.client.ServerClient`
(the same server identity check, connection retirement and error translation) with those two
calls; the caller gives it the SVID with :meth:`~pyspire.agent.client.ServerClient.use_identity`
and the upstream bundle with :meth:`~pyspire.agent.client.ServerClient.use_bundle`.
"""

from __future__ import annotations

__all__ = ["UpstreamServerClient", "UpstreamServers"]

from collections.abc import Sequence
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire.agent.client import ServerCallError, ServerClient
from pyspire.proto.convert import bundle_from_proto, bundle_to_proto
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.limits import MAX_TTL_SECONDS
from pyspire_sdk.plugins.upstream_authority import UpstreamX509CA
from pyspire_sdk.spiffeid import TrustDomain

_NEW_DOWNSTREAM_X509_CA = "/spire.api.server.svid.v1.SVID/NewDownstreamX509CA"
_PUBLISH_JWT_AUTHORITY = "/spire.api.server.bundle.v1.Bundle/PublishJWTAuthority"


class UpstreamServers:
    """The ``upstream_servers`` host service
    (:class:`~pyspire_sdk.plugins.upstream_authority.UpstreamServers`): sessions with upstream
    servers of ``trust_domain``."""

    def __init__(self, trust_domain: TrustDomain) -> None:
        self._trust_domain = trust_domain

    def connect(self, address: str, port: int) -> UpstreamServerClient:
        return UpstreamServerClient(
            trust_domain=self._trust_domain, address=address, port=port, bundle=None
        )


class UpstreamServerClient(ServerClient):
    """The calls a downstream server makes to its upstream server
    (:class:`~pyspire_sdk.plugins.upstream_authority.UpstreamServerSession`)."""

    def use_credentials(
        self, chain: Sequence[bytes], private_key: PrivateKeyTypes, bundle: Bundle
    ) -> None:
        """Verify the upstream with ``bundle`` and present ``chain`` from now on."""
        self.use_bundle(bundle)
        self.use_identity(chain, private_key)

    async def new_downstream_x509_ca(
        self, csr_der: bytes, preferred_ttl: timedelta
    ) -> UpstreamX509CA:
        """An intermediate CA for the key of ``csr_der`` and the upstream's X.509 roots.

        ``preferred_ttl`` is offered to the upstream (whole seconds, at most an ``int32``); the
        upstream may sign a shorter certificate. A reply without a chain or roots is a
        :class:`~pyspire.agent.client.ServerCallError`.
        """
        seconds = min(max(int(preferred_ttl.total_seconds()), 0), MAX_TTL_SECONDS)
        reply = await self._unary(
            _NEW_DOWNSTREAM_X509_CA,
            svid_pb.NewDownstreamX509CaRequest(csr=csr_der, preferred_ttl=seconds),
            svid_pb.NewDownstreamX509CaResponse,
        )
        try:
            return UpstreamX509CA(
                ca_chain=tuple(reply.ca_cert_chain),
                upstream_roots=tuple(reply.x509_authorities),
            )
        except InvalidArgumentError as error:
            raise ServerCallError(f"malformed NewDownstreamX509CA response: {error}") from None

    async def publish_jwt_authority(self, key: JwtAuthority) -> list[JwtAuthority]:
        """Add ``key`` to the upstream's bundle; the upstream's JWT authorities after it."""
        wire_key = bundle_to_proto(
            Bundle(trust_domain=self.trust_domain, jwt_authorities=(key,))
        ).jwt_authorities[0]
        reply = await self._unary(
            _PUBLISH_JWT_AUTHORITY,
            bundle_pb.PublishJwtAuthorityRequest(jwt_authority=wire_key),
            bundle_pb.PublishJwtAuthorityResponse,
        )
        try:
            keys = bundle_from_proto(
                pb.Bundle(
                    trust_domain=self.trust_domain.name, jwt_authorities=reply.jwt_authorities
                ),
                "jwt_authorities",
            )
        except InvalidArgumentError as error:
            raise ServerCallError(f"malformed PublishJWTAuthority response: {error}") from None
        return list(keys.jwt_authorities)
