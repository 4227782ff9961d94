"""``spire.api.server.trustdomain.v1.TrustDomain``: federation relationships managed at run
time, and a federated bundle refreshed on demand.

Relationships live in the datastore (those of the configuration are written there at start);
a bundle sent with a new or updated relationship is stored as that trust domain's bundle, which
is how an ``https_spiffe`` endpoint's first bundle is bootstrapped. Every change wakes the
refresh loop. Our own trust domain is never a relationship. Each batch item gets its own
status; a failed item changes nothing and does not stop the others.
"""

from __future__ import annotations

__all__ = ["TrustDomainService"]

import betterproto.lib.google.protobuf as empty_pb

from pyspire.proto.federation import (
    relationship_from_proto,
    relationship_mask,
    relationship_to_proto,
)
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.trustdomain import v1 as td_pb
from pyspire.server.context import ServerContext
from pyspire.transport.calls import status_for
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError, NotFoundError, PyspireError
from pyspire_sdk.model import FederationRelationship
from pyspire_sdk.plugins.datastore import Page
from pyspire_sdk.spiffeid import TrustDomain

_OK = pb.Status(code=0, message="OK")


def _status(error: PyspireError) -> pb.Status:
    return pb.Status(code=status_for(error).value, message=str(error))


class TrustDomainService(td_pb.TrustDomainBase):
    """The TrustDomain service over one :class:`~pyspire.server.context.ServerContext`."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context

    def _foreign(self, name: str, field: str) -> TrustDomain:
        try:
            trust_domain = TrustDomain.parse(name)
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"invalid {field}: {error}") from None
        if trust_domain == self._context.trust_domain:
            raise InvalidArgumentError(
                f"invalid {field}: {trust_domain.name!r} is the server's own trust domain"
            )
        return trust_domain

    def _parse(
        self, message: pb.FederationRelationship, field: str
    ) -> tuple[FederationRelationship, Bundle | None]:
        self._foreign(message.trust_domain, f"{field}.trust_domain")
        return relationship_from_proto(message, field)

    def _changed(self, trust_domain: TrustDomain) -> None:
        if self._context.federation is not None:
            self._context.federation.refresh_soon(trust_domain)

    async def _message(
        self, relationship: FederationRelationship, mask: pb.FederationRelationshipMask | None
    ) -> pb.FederationRelationship:
        bundle = await self._context.datastore.get_bundle(relationship.trust_domain)
        return relationship_to_proto(relationship, bundle, mask)

    async def _stored(self, trust_domain: TrustDomain) -> FederationRelationship:
        relationship = await self._context.datastore.get_federation_relationship(trust_domain)
        if relationship is None:
            raise NotFoundError(f"federation relationship with {trust_domain.name!r} not found")
        return relationship

    async def list_federation_relationships(
        self, list_federation_relationships_request: td_pb.ListFederationRelationshipsRequest
    ) -> td_pb.ListFederationRelationshipsResponse:
        """One page of relationships, ordered by trust domain."""
        request = list_federation_relationships_request
        if request.page_size < 0:
            raise InvalidArgumentError(f"invalid page_size: {request.page_size} is negative")
        page = await self._context.datastore.list_federation_relationships(
            Page(size=request.page_size, token=request.page_token)
        )
        mask = relationship_mask(request.output_mask)
        return td_pb.ListFederationRelationshipsResponse(
            federation_relationships=[
                await self._message(relationship, mask) for relationship in page.relationships
            ],
            next_page_token=page.next_page_token,
        )

    async def get_federation_relationship(
        self, get_federation_relationship_request: td_pb.GetFederationRelationshipRequest
    ) -> pb.FederationRelationship:
        """One relationship; NotFound when there is none with that trust domain."""
        request = get_federation_relationship_request
        trust_domain = self._foreign(request.trust_domain, "trust_domain")
        relationship = await self._stored(trust_domain)
        return await self._message(relationship, relationship_mask(request.output_mask))

    async def _create(
        self, message: pb.FederationRelationship, field: str
    ) -> FederationRelationship:
        relationship, bundle = self._parse(message, field)
        created = await self._context.datastore.create_federation_relationship(relationship)
        if bundle is not None:
            await self._context.datastore.set_bundle(bundle)
        self._changed(created.trust_domain)
        return created

    async def batch_create_federation_relationship(
        self,
        batch_create_federation_relationship_request: (
            td_pb.BatchCreateFederationRelationshipRequest
        ),
    ) -> td_pb.BatchCreateFederationRelationshipResponse:
        """Create relationships; AlreadyExists for a trust domain that has one."""
        request = batch_create_federation_relationship_request
        mask = relationship_mask(request.output_mask)
        results = []
        for index, message in enumerate(request.federation_relationship):
            try:
                created = await self._create(message, f"federation_relationship[{index}]")
            except PyspireError as error:
                results.append(
                    td_pb.BatchCreateFederationRelationshipResponseResult(status=_status(error))
                )
                continue
            results.append(
                td_pb.BatchCreateFederationRelationshipResponseResult(
                    status=_OK, federation_relationship=await self._message(created, mask)
                )
            )
        return td_pb.BatchCreateFederationRelationshipResponse(results=results)

    async def _update(
        self,
        message: pb.FederationRelationship,
        field: str,
        input_mask: pb.FederationRelationshipMask | None,
    ) -> FederationRelationship:
        relationship, bundle = self._parse(message, field)
        fields: set[str] = set()
        if input_mask is None or input_mask.bundle_endpoint_url:
            fields.add("bundle_endpoint_url")
        if input_mask is None or input_mask.bundle_endpoint_profile:
            fields |= {"profile", "endpoint_spiffe_id"}
        updated = await self._context.datastore.update_federation_relationship(
            relationship, frozenset(fields)
        )
        if bundle is not None:
            await self._context.datastore.set_bundle(bundle)
        self._changed(updated.trust_domain)
        return updated

    async def batch_update_federation_relationship(
        self,
        batch_update_federation_relationship_request: (
            td_pb.BatchUpdateFederationRelationshipRequest
        ),
    ) -> td_pb.BatchUpdateFederationRelationshipResponse:
        """Overwrite the fields in ``input_mask`` (all when absent); NotFound when missing."""
        request = batch_update_federation_relationship_request
        input_mask = relationship_mask(request.input_mask)
        mask = relationship_mask(request.output_mask)
        results = []
        for index, message in enumerate(request.federation_relationships):
            field = f"federation_relationships[{index}]"
            try:
                updated = await self._update(message, field, input_mask)
            except PyspireError as error:
                results.append(
                    td_pb.BatchUpdateFederationRelationshipResponseResult(status=_status(error))
                )
                continue
            results.append(
                td_pb.BatchUpdateFederationRelationshipResponseResult(
                    status=_OK, federation_relationship=await self._message(updated, mask)
                )
            )
        return td_pb.BatchUpdateFederationRelationshipResponse(results=results)

    async def batch_delete_federation_relationship(
        self,
        batch_delete_federation_relationship_request: (
            td_pb.BatchDeleteFederationRelationshipRequest
        ),
    ) -> td_pb.BatchDeleteFederationRelationshipResponse:
        """Delete relationships (their bundles are kept); NotFound when missing."""
        request = batch_delete_federation_relationship_request
        results = []
        for index, name in enumerate(request.trust_domains):
            try:
                trust_domain = self._foreign(name, f"trust_domains[{index}]")
                await self._context.datastore.delete_federation_relationship(trust_domain)
            except PyspireError as error:
                status = _status(error)
            else:
                status = _OK
                self._changed(trust_domain)
            results.append(
                td_pb.BatchDeleteFederationRelationshipResponseResult(
                    status=status, trust_domain=name
                )
            )
        return td_pb.BatchDeleteFederationRelationshipResponse(results=results)

    async def refresh_bundle(
        self, refresh_bundle_request: td_pb.RefreshBundleRequest
    ) -> empty_pb.Empty:
        """Fetch the trust domain's bundle now; NotFound without a relationship, and the
        fetch's own error (the stored bundle kept) when it fails."""
        trust_domain = self._foreign(refresh_bundle_request.trust_domain, "trust_domain")
        relationship = await self._stored(trust_domain)
        federation = self._context.federation
        if federation is None:
            raise NotFoundError("federation is not running on this server")
        await federation.refresh(relationship)
        return empty_pb.Empty()
