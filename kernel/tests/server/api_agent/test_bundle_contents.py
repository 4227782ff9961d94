"""What a bundle written through the API may hold: numbers in their ranges, key IDs within the
limits of :mod:`pyspire_sdk.limits`. A bad bundle fails its own batch item with INVALID_ARGUMENT
naming the field; the other items are written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from grpclib.const import Status

from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.server.api.bundle import BundleService
from pyspire_sdk.errors import InvalidArgumentError

from .test_bundle import federated, jwt_key

INVALID = Status.INVALID_ARGUMENT.value


def with_key(**fields: Any) -> Callable[[pb.Bundle], None]:
    def change(bundle: pb.Bundle) -> None:
        key = jwt_key()
        for name, value in fields.items():
            setattr(key, name, value)
        bundle.jwt_authorities = [key]

    return change


def with_fields(**fields: Any) -> Callable[[pb.Bundle], None]:
    def change(bundle: pb.Bundle) -> None:
        for name, value in fields.items():
            setattr(bundle, name, value)

    return change


BAD_BUNDLES = [
    pytest.param(with_fields(sequence_number=2**64 - 1), "sequence_number", id="uint64-sequence"),
    pytest.param(with_fields(sequence_number=2**63), "sequence_number", id="int64-overflow"),
    pytest.param(with_fields(refresh_hint=-1), "refresh_hint", id="negative-refresh-hint"),
    pytest.param(
        with_key(expires_at=99_999_999_999_999), "jwt_authorities[0].expires_at", id="far-expiry"
    ),
    pytest.param(with_key(expires_at=-(2**63)), "jwt_authorities[0].expires_at", id="int64-min"),
    pytest.param(
        with_key(key_id="k\nforged"),
        "jwt_authorities[0]: key_id holds a control character (U+000A)",
        id="newline-kid",
    ),
    pytest.param(
        with_key(key_id="k" * 256),
        "jwt_authorities[0]: key_id is 256 bytes, longer than the 255 allowed",
        id="long-kid",
    ),
]


@pytest.mark.parametrize(("change", "field"), BAD_BUNDLES)
async def test_set_refuses_the_bad_bundle_and_writes_the_rest(
    bundle_service: BundleService, change: Callable[[pb.Bundle], None], field: str
) -> None:
    bad = federated("bad.org")
    change(bad)
    response = await bundle_service.batch_set_federated_bundle(
        bundle_pb.BatchSetFederatedBundleRequest(
            bundle=[federated("before.org"), bad, federated("after.org")]
        )
    )
    statuses = [(result.status.code, result.status.message) for result in response.results]
    assert [code for code, _ in statuses] == [0, INVALID, 0], statuses
    assert f"bundle[1].{field}" in statuses[1][1]
    listed = await bundle_service.list_federated_bundles(bundle_pb.ListFederatedBundlesRequest())
    assert {bundle.trust_domain for bundle in listed.bundles} == {"before.org", "after.org"}


@pytest.mark.parametrize(("change", "field"), BAD_BUNDLES)
async def test_create_and_update_refuse_the_bad_bundle(
    bundle_service: BundleService, change: Callable[[pb.Bundle], None], field: str
) -> None:
    bad = federated("bad.org")
    change(bad)
    created = await bundle_service.batch_create_federated_bundle(
        bundle_pb.BatchCreateFederatedBundleRequest(bundle=[bad, federated("good.org")])
    )
    assert [result.status.code for result in created.results] == [INVALID, 0]
    assert f"bundle[0].{field}" in created.results[0].status.message
    bad.trust_domain = "good.org"
    updated = await bundle_service.batch_update_federated_bundle(
        bundle_pb.BatchUpdateFederatedBundleRequest(bundle=[bad])
    )
    assert [result.status.code for result in updated.results] == [INVALID]


async def test_sequence_numbers_up_to_the_limit_are_kept(bundle_service: BundleService) -> None:
    bundle = federated("big.org")
    bundle.sequence_number = 2**63 - 1
    bundle.refresh_hint = 2**63 - 1
    response = await bundle_service.batch_set_federated_bundle(
        bundle_pb.BatchSetFederatedBundleRequest(bundle=[bundle])
    )
    [result] = response.results
    assert result.status.code == 0, result.status.message
    assert (result.bundle.sequence_number, result.bundle.refresh_hint) == (2**63 - 1, 2**63 - 1)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"expires_at": 99_999_999_999_999}, "expires_at"),
        ({"key_id": "kid\x1b[31m"}, ": key_id"),
    ],
)
async def test_append_and_publish_refuse_bad_keys(
    bundle_service: BundleService, fields: dict[str, Any], field: str
) -> None:
    key = jwt_key()
    for name, value in fields.items():
        setattr(key, name, value)
    with pytest.raises(InvalidArgumentError, match=rf"jwt_authorities\[0\]\.?{field}"):
        await bundle_service.append_bundle(bundle_pb.AppendBundleRequest(jwt_authorities=[key]))
    with pytest.raises(InvalidArgumentError, match=rf"jwt_authority\.?{field}"):
        await bundle_service.publish_jwt_authority(
            bundle_pb.PublishJwtAuthorityRequest(jwt_authority=key)
        )
