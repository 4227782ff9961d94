"""Wire timestamps: every ``int64`` either names a moment of the years 1 to 9999 or is refused
with an InvalidArgumentError naming the field (never a ValueError, OverflowError or OSError)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pyspire.proto.convert import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    bundle_from_proto,
    from_timestamp,
    to_timestamp,
)
from pyspire.proto.gen.spire.api import types as pb
from pyspire_sdk.errors import InvalidArgumentError


def test_the_range_ends_are_the_first_and_last_second_a_datetime_holds() -> None:
    assert from_timestamp(MIN_TIMESTAMP) == datetime(1, 1, 1, tzinfo=UTC)
    assert from_timestamp(MAX_TIMESTAMP) == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    for seconds in (MIN_TIMESTAMP, -1, 1, 1_700_000_000, MAX_TIMESTAMP):
        moment = from_timestamp(seconds)
        assert moment is not None
        assert to_timestamp(moment) == seconds


def test_zero_is_unset() -> None:
    assert from_timestamp(0) is None


@pytest.mark.parametrize(
    "seconds", [MAX_TIMESTAMP + 1, 99_999_999_999_999, 2**63 - 1, MIN_TIMESTAMP - 1, -(2**63)]
)
def test_values_outside_the_range_name_the_field(seconds: int) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        from_timestamp(seconds, "entry.expires_at")
    assert str(caught.value) == f"invalid entry.expires_at: {seconds} is out of range"


def test_a_bundle_names_the_jwt_authority_whose_expiry_is_out_of_range() -> None:
    message = pb.Bundle(
        trust_domain="other.org",
        jwt_authorities=[
            pb.JwtKey(public_key=b"k", key_id="a", expires_at=1),
            pb.JwtKey(public_key=b"k", key_id="b", expires_at=-(2**63)),
        ],
    )
    with pytest.raises(InvalidArgumentError, match=r"^invalid bundle\.jwt_authorities\[1\]"):
        bundle_from_proto(message)
