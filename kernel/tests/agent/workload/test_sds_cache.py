"""Many Envoys on one agent: the Secret Discovery Service builds and encodes a caller's secrets
once per snapshot revision, requested names and validator choice, and never serves them stale
after a change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pyspire.agent.identities import Snapshot
from pyspire.agent.workload import SecretDiscoveryService, WorkloadAttestation
from pyspire.agent.workload import sds as sds_module
from pyspire.proto.gen.codec import envoy_service_discovery_v3 as discovery
from pyspire.proto.secrets import SECRET_TYPE_URL, discovery_resources, discovery_response
from pyspire_sdk.selector import Selector
from pyspire_sdk.testing import FakeClock

from . import test_sds
from .helpers import UID_SELECTOR, FakeIdentitySource, Pki
from .test_sds import (
    OWN_TD,
    TIMEOUT,
    WORKLOAD,
    envoy_node,
    pem_ders,
    read,
    request,
    secrets_of,
)

envoy = test_sds.envoy
"""The Envoy client fixture of the SDS tests: grpcio and the published stubs."""


class CountedEncodings:
    """Counts the resource lists the service encodes (rather than takes from its cache)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        monkeypatch.setattr(sds_module, "discovery_resources", self)

    def __call__(self, resources: Sequence[bytes]) -> bytes:
        self.count += 1
        return discovery_resources(resources)


async def test_envoys_of_one_revision_share_one_encoding_and_a_change_rebuilds(
    envoy: Any, source: FakeIdentitySource, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    encodings = CountedEncodings(monkeypatch)
    calls = [envoy.StreamSecrets() for _ in range(4)]
    firsts = []
    for call in calls:
        await call.write(request(node=envoy_node()))
        firsts.append(await read(call))
    fetched = await envoy.FetchSecrets(request(node=envoy_node()), timeout=TIMEOUT)
    shared = encodings.count

    rotated = pki.identity(source.snapshot().identities[0].entry)
    source.publish(identities=(rotated,))
    pushed = [await read(call) for call in calls]
    for call in calls:
        call.cancel()

    assert shared == 1
    assert encodings.count == 2
    assert all(list(first.resources) == list(firsts[0].resources) for first in firsts)
    assert list(fetched.resources) == list(firsts[0].resources)
    assert len({first.nonce for first in firsts}) == 4, "each stream has its own nonces"
    for response in pushed:
        assert response.version_info == "2"
        chain = secrets_of(response)[WORKLOAD].tls_certificate.certificate_chain.inline_bytes
        assert pem_ders(chain) == list(rotated.svid.cert_chain)


async def test_names_and_validator_choice_have_encodings_of_their_own(
    envoy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    encodings = CountedEncodings(monkeypatch)

    async def fetch(names: Sequence[str], node: Any) -> Any:
        return await envoy.FetchSecrets(request(names, node=node), timeout=TIMEOUT)

    spiffe = await fetch([OWN_TD], envoy_node())
    standard = await fetch([OWN_TD], envoy_node(1, 17))
    both = await fetch([OWN_TD, WORKLOAD], envoy_node())
    again = [await fetch([OWN_TD], envoy_node()), await fetch([OWN_TD], envoy_node(1, 17))]

    assert encodings.count == 3
    own = secrets_of(spiffe)[OWN_TD].validation_context
    assert own.HasField("custom_validator_config")
    assert secrets_of(standard)[OWN_TD].validation_context.HasField("trusted_ca")
    assert list(secrets_of(both)) == [OWN_TD, WORKLOAD]
    assert [list(r.resources) for r in again] == [list(spiffe.resources), list(standard.resources)]


def test_callers_matching_the_same_entries_share_their_secrets(
    source: FakeIdentitySource, attestation: WorkloadAttestation, clock: FakeClock
) -> None:
    service = SecretDiscoveryService(source, attestation, clock)
    snapshot = source.snapshot()
    other = frozenset({UID_SELECTOR, Selector("unix", "gid:1000")})
    first = service._caller(snapshot, frozenset({UID_SELECTOR}), None)
    assert service._caller(snapshot, other, None) is first
    assert first.resources(()) is first.resources(())

    later = Snapshot(
        revision=snapshot.revision + 1,
        identities=snapshot.identities,
        bundle=snapshot.bundle,
        federated_bundles=snapshot.federated_bundles,
    )
    assert service._caller(later, other, None) is not first


def test_a_response_is_its_streams_fields_around_the_shared_resources() -> None:
    resources = [b"\x0a\x03abc", b"\x0a\x03def"]
    spliced = discovery_response("7", discovery_resources(resources), "n0nce")
    whole = discovery.write_DiscoveryResponse(
        version_info="7", resources=resources, type_url=SECRET_TYPE_URL, nonce="n0nce"
    )
    assert spliced.data == whole
    decoded = spliced.decode()
    assert (decoded.version_info, decoded.nonce, decoded.type_url) == (
        "7",
        "n0nce",
        SECRET_TYPE_URL,
    )
    assert [resource.type_url for resource in decoded.resources] == ["abc", "def"]
    assert discovery_response("", discovery_resources(resources), "").data == (
        discovery.write_DiscoveryResponse(resources=resources, type_url=SECRET_TYPE_URL)
    )
