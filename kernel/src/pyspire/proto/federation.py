"""Federation relationships between SDK records and the TrustDomain API's messages."""

from __future__ import annotations

__all__ = ["relationship_from_proto", "relationship_mask", "relationship_to_proto"]

import betterproto

from pyspire.proto.convert import bundle_from_proto, bundle_to_proto
from pyspire.proto.gen.spire.api import types as pb
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import (
    FederationProfile,
    FederationRelationship,
    check_bundle_endpoint_url,
)
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain


def relationship_to_proto(
    relationship: FederationRelationship,
    bundle: Bundle | None = None,
    mask: pb.FederationRelationshipMask | None = None,
) -> pb.FederationRelationship:
    """The wire form; ``mask`` (when sent) clears the fields it leaves out."""
    message = pb.FederationRelationship(trust_domain=relationship.trust_domain.name)
    if mask is None or mask.bundle_endpoint_url:
        message.bundle_endpoint_url = relationship.bundle_endpoint_url
    if mask is None or mask.bundle_endpoint_profile:
        if relationship.profile is FederationProfile.HTTPS_SPIFFE:
            message.https_spiffe = pb.HttpsspiffeProfile(
                endpoint_spiffe_id=str(relationship.endpoint_spiffe_id)
            )
        else:
            message.https_web = pb.HttpsWebProfile()
    if bundle is not None:
        message.trust_domain_bundle = bundle_to_proto(bundle)
    return message


def relationship_mask(
    mask: pb.FederationRelationshipMask,
) -> pb.FederationRelationshipMask | None:
    """``mask`` when the caller sent one, else None (every field)."""
    return mask if betterproto.serialized_on_wire(mask) else None


def _profile(
    message: pb.FederationRelationship, field: str
) -> tuple[FederationProfile, SpiffeId | None]:
    group, value = betterproto.which_one_of(message, "bundle_endpoint_profile")
    if group == "https_web":
        return FederationProfile.HTTPS_WEB, None
    if group != "https_spiffe" or not isinstance(value, pb.HttpsspiffeProfile):
        raise InvalidArgumentError(f"invalid {field}.bundle_endpoint_profile: none is set")
    try:
        return FederationProfile.HTTPS_SPIFFE, SpiffeId.parse(value.endpoint_spiffe_id)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(
            f"invalid {field}.https_spiffe.endpoint_spiffe_id: {error}"
        ) from None


def relationship_from_proto(
    message: pb.FederationRelationship, field: str
) -> tuple[FederationRelationship, Bundle | None]:
    """A validated relationship and the bundle sent with it (None when not sent)."""
    try:
        trust_domain = TrustDomain.parse(message.trust_domain)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"invalid {field}.trust_domain: {error}") from None
    for issue in check_bundle_endpoint_url("bundle_endpoint_url", message.bundle_endpoint_url):
        raise InvalidArgumentError(f"invalid {field}.{issue.path}: {issue.message}")
    profile, endpoint_id = _profile(message, field)
    relationship = FederationRelationship(
        trust_domain=trust_domain,
        bundle_endpoint_url=message.bundle_endpoint_url,
        profile=profile,
        endpoint_spiffe_id=endpoint_id,
    )
    bundle = None
    if betterproto.serialized_on_wire(message.trust_domain_bundle):
        bundle = bundle_from_proto(message.trust_domain_bundle, f"{field}.trust_domain_bundle")
        if bundle.trust_domain != trust_domain:
            raise InvalidArgumentError(
                f"invalid {field}.trust_domain_bundle.trust_domain: {bundle.trust_domain.name!r} "
                f"is not the relationship's trust domain {trust_domain.name!r}"
            )
    return relationship, bundle
