"""The TrustDomain API over a real server context: relationships created, read, updated and
deleted with per-item statuses, bundles bootstrapped with a relationship, RefreshBundle."""

from __future__ import annotations

import pytest

from pyspire.proto.convert import bundle_to_proto
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.trustdomain import v1 as td_pb
from pyspire.server.api.trustdomain import TrustDomainService
from pyspire.server.context import ServerContext
from pyspire.server.federation.fetch import BundleFetcher
from pyspire.server.federation.refresh import FederatedBundles
from pyspire_sdk.errors import NotFoundError
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.pki import TestAuthority

from .test_refresh import FOREIGN, foreign_endpoint

OK, INVALID, NOT_FOUND, EXISTS = 0, 3, 5, 6


def spiffe_relationship(url: str, bundle: pb.Bundle | None = None) -> pb.FederationRelationship:
    message = pb.FederationRelationship(
        trust_domain="foreign.test",
        bundle_endpoint_url=url,
        https_spiffe=pb.HttpsspiffeProfile(endpoint_spiffe_id="spiffe://foreign.test/spire/server"),
    )
    if bundle is not None:
        message.trust_domain_bundle = bundle
    return message


async def test_relationship_lifecycle(server_context: ServerContext) -> None:
    service = TrustDomainService(server_context)
    bootstrap = TestAuthority(FOREIGN).bundle()
    created = await service.batch_create_federation_relationship(
        td_pb.BatchCreateFederationRelationshipRequest(
            federation_relationship=[
                spiffe_relationship("https://foreign.test:8443", bundle_to_proto(bootstrap)),
                spiffe_relationship("https://foreign.test:8443"),
                pb.FederationRelationship(
                    trust_domain="example.org",
                    bundle_endpoint_url="https://x",
                    https_web=pb.HttpsWebProfile(),
                ),
                pb.FederationRelationship(
                    trust_domain="web.test", bundle_endpoint_url="http://web.test"
                ),
                pb.FederationRelationship(
                    trust_domain="web.test",
                    bundle_endpoint_url="https://web.test",
                    https_web=pb.HttpsWebProfile(),
                ),
            ]
        )
    )
    codes = [result.status.code for result in created.results]
    assert codes == [OK, EXISTS, INVALID, INVALID, OK]
    assert "own trust domain" in created.results[2].status.message
    assert "bundle_endpoint_url" in created.results[3].status.message
    assert await server_context.datastore.get_bundle(FOREIGN) == bootstrap
    listed = await service.list_federation_relationships(td_pb.ListFederationRelationshipsRequest())
    assert [r.trust_domain for r in listed.federation_relationships] == ["foreign.test", "web.test"]
    assert listed.federation_relationships[0].trust_domain_bundle.trust_domain == "foreign.test"
    got = await service.get_federation_relationship(
        td_pb.GetFederationRelationshipRequest(trust_domain="foreign.test")
    )
    assert got.https_spiffe.endpoint_spiffe_id == "spiffe://foreign.test/spire/server"
    updated = await service.batch_update_federation_relationship(
        td_pb.BatchUpdateFederationRelationshipRequest(
            federation_relationships=[
                pb.FederationRelationship(
                    trust_domain="foreign.test",
                    bundle_endpoint_url="https://other.test",
                    https_web=pb.HttpsWebProfile(),
                ),
                pb.FederationRelationship(
                    trust_domain="none.test",
                    bundle_endpoint_url="https://none.test",
                    https_web=pb.HttpsWebProfile(),
                ),
            ],
            input_mask=pb.FederationRelationshipMask(bundle_endpoint_url=True),
        )
    )
    assert [r.status.code for r in updated.results] == [OK, NOT_FOUND]
    # Only the URL was in the input mask: the profile stays https_spiffe.
    assert updated.results[0].federation_relationship.bundle_endpoint_url == "https://other.test"
    assert updated.results[0].federation_relationship.https_spiffe.endpoint_spiffe_id
    deleted = await service.batch_delete_federation_relationship(
        td_pb.BatchDeleteFederationRelationshipRequest(trust_domains=["web.test", "web.test"])
    )
    assert [r.status.code for r in deleted.results] == [OK, NOT_FOUND]
    with pytest.raises(NotFoundError):
        await service.get_federation_relationship(
            td_pb.GetFederationRelationshipRequest(trust_domain="web.test")
        )


async def test_refresh_bundle_fetches_now(
    server_context: ServerContext, fake_clock: FakeClock
) -> None:
    server_context.federation = FederatedBundles(
        server_context.datastore, fake_clock, BundleFetcher()
    )
    service = TrustDomainService(server_context)
    with pytest.raises(NotFoundError):
        await service.refresh_bundle(td_pb.RefreshBundleRequest(trust_domain="foreign.test"))
    async with foreign_endpoint() as foreign:
        await service.batch_create_federation_relationship(
            td_pb.BatchCreateFederationRelationshipRequest(
                federation_relationship=[
                    spiffe_relationship(
                        f"https://127.0.0.1:{foreign.port}/",
                        bundle_to_proto(foreign.authority.bundle(sequence_number=1)),
                    )
                ]
            )
        )
        await service.refresh_bundle(td_pb.RefreshBundleRequest(trust_domain="foreign.test"))
    stored = await server_context.datastore.get_bundle(TrustDomain("foreign.test"))
    assert stored is not None and stored.sequence_number == 3
