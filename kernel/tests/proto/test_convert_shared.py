"""Validated wire values are remembered, and what they repeat is one object: a server keeps
tens of thousands of its agents' SPIFFE IDs, nearly all of one trust domain."""

from __future__ import annotations

import pytest

from pyspire.proto.convert import spiffe_id_from_proto
from pyspire.proto.gen.spire.api import types as pb
from pyspire_sdk.errors import InvalidArgumentError


def test_ids_of_one_trust_domain_share_its_object() -> None:
    first = spiffe_id_from_proto(pb.Spiffeid(trust_domain="shared.test", path="/a"), "id")
    second = spiffe_id_from_proto(pb.Spiffeid(trust_domain="shared.test", path="/b"), "id")
    assert first.trust_domain is second.trust_domain
    assert str(second) == "spiffe://shared.test/b"


def test_an_invalid_trust_domain_still_names_the_field() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid parent_id"):
        spiffe_id_from_proto(pb.Spiffeid(trust_domain="Bad Domain", path="/a"), "parent_id")
