"""The registry's records: immutable, hashable values with documented defaults."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pyspire_sdk.errors import ConfigIssue, InvalidArgumentError
from pyspire_sdk.model import (
    AttestationResult,
    AttestedNode,
    FederationProfile,
    FederationRelationship,
    JoinToken,
    JwtSvid,
    RegistrationEntry,
    X509Svid,
    check_bundle_endpoint_url,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

NOW = datetime(2025, 1, 1, tzinfo=UTC)
WORKLOAD = SpiffeId.parse("spiffe://example.org/workload")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/abc")


def entry(**changes: Any) -> RegistrationEntry:
    base = RegistrationEntry(
        spiffe_id=WORKLOAD, parent_id=AGENT, selectors=(Selector("unix", "uid:0"),)
    )
    return dataclasses.replace(base, **changes)


def all_records() -> list[Any]:
    return [
        entry(),
        AttestedNode(spiffe_id=AGENT, attestation_type="join_token"),
        JoinToken(token="t0k3n", expires_at=NOW),
        FederationRelationship(
            trust_domain=TrustDomain("other.org"),
            bundle_endpoint_url="https://other.org/bundle",
            profile=FederationProfile.HTTPS_WEB,
        ),
        X509Svid(spiffe_id=WORKLOAD, cert_chain=(b"leaf",), expires_at=NOW),
        JwtSvid(
            spiffe_id=WORKLOAD, token="a.b.c", audience=("aud",), expires_at=NOW, issued_at=NOW
        ),
        AttestationResult(agent_id=AGENT),
    ]


@pytest.mark.parametrize("record", all_records(), ids=lambda record: type(record).__name__)
def test_records_are_frozen_slotted_and_hashable(record: Any) -> None:
    first_field = dataclasses.fields(record)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, first_field, None)
    assert not hasattr(record, "__dict__")
    assert hash(record) == hash(dataclasses.replace(record))
    assert record == dataclasses.replace(record)
    assert len({record, dataclasses.replace(record)}) == 1


def test_registration_entry_defaults() -> None:
    record = entry()
    assert record.id == ""
    assert record.x509_svid_ttl == 0
    assert record.jwt_svid_ttl == 0
    assert record.federates_with == ()
    assert not record.admin
    assert not record.downstream
    assert record.expires_at is None
    assert record.dns_names == ()
    assert record.revision_number == 0
    assert not record.store_svid
    assert record.hint == ""
    assert record.created_at is None


def test_registration_entries_compare_by_every_field() -> None:
    assert entry() != entry(revision_number=1)
    assert entry() != entry(selectors=(Selector("unix", "uid:1"),))
    assert hash(entry(dns_names=("a",))) == hash(entry(dns_names=("a",)))
    assert entry(federates_with=(TrustDomain("a.org"),)) == entry(
        federates_with=(TrustDomain.parse("spiffe://a.org"),)
    )


def test_attested_node_defaults() -> None:
    node = AttestedNode(spiffe_id=AGENT, attestation_type="join_token")
    assert node.x509_svid_serial_number == ""
    assert node.x509_svid_expires_at is None
    assert node.selectors == ()
    assert not node.banned
    assert not node.can_reattest
    assert node.agent_version == ""
    assert node.new_x509_svid_serial_number == ""
    assert node.new_x509_svid_expires_at is None


def test_attestation_result_defaults() -> None:
    result = AttestationResult(agent_id=AGENT)
    assert result.selector_values == ()
    assert not result.can_reattest


def test_secrets_stay_out_of_repr() -> None:
    token = JoinToken(token="very-secret-token", expires_at=NOW)
    svid = X509Svid(
        spiffe_id=WORKLOAD,
        cert_chain=(b"leaf",),
        expires_at=NOW,
        private_key=b"private-key-bytes",
    )
    jwt = JwtSvid(
        spiffe_id=WORKLOAD,
        token="header.payload.signature",
        audience=("aud",),
        expires_at=NOW + timedelta(minutes=5),
        issued_at=NOW,
    )
    assert "very-secret-token" not in repr(token)
    assert "private-key-bytes" not in repr(svid)
    assert "header.payload.signature" not in repr(jwt)
    assert svid.hint == ""
    assert jwt.hint == ""


def test_federation_relationship_profile_rules() -> None:
    spiffe = FederationRelationship(
        trust_domain=TrustDomain("other.org"),
        bundle_endpoint_url="https://other.org/bundle",
        profile=FederationProfile.HTTPS_SPIFFE,
        endpoint_spiffe_id=SpiffeId.parse("spiffe://other.org/spire/server"),
    )
    assert spiffe.profile == "https_spiffe"
    with pytest.raises(InvalidArgumentError, match="endpoint_spiffe_id is required"):
        dataclasses.replace(spiffe, endpoint_spiffe_id=None)
    with pytest.raises(InvalidArgumentError, match="must not be set with the https_web"):
        dataclasses.replace(spiffe, profile=FederationProfile.HTTPS_WEB)


def test_federation_profile_values_match_spire() -> None:
    assert [profile.value for profile in FederationProfile] == ["https_web", "https_spiffe"]
    assert FederationProfile("https_web") is FederationProfile.HTTPS_WEB


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://a.test/bundle", "expected an https URL, found 'http://a.test/bundle'"),
        ("https:///bundle", "expected a URL with a host, found 'https:///bundle'"),
        ("https://user:secret@a.test", "must not carry user information"),
    ],
)
def test_a_bundle_endpoint_url_the_federation_standard_forbids(url: str, message: str) -> None:
    assert list(check_bundle_endpoint_url("url", url)) == [ConfigIssue("url", message)]


def test_an_https_bundle_endpoint_url_with_a_host_passes() -> None:
    assert list(check_bundle_endpoint_url("url", "https://a.test:8443/bundle")) == []
