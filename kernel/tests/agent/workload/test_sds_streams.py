"""The xDS bookkeeping of SDS streams, without I/O: versions, nonces, NACKs, subscriptions."""

from __future__ import annotations

import itertools

from pyspire.agent.workload.sds_streams import DeltaStream, SotwStream, resource_version
from pyspire.proto.gen.codec.envoy_config_core_v3 import Node
from pyspire.proto.gen.codec.envoy_service_discovery_v3 import (
    DeltaDiscoveryRequest,
    DiscoveryRequest,
)
from pyspire.proto.gen.codec.google_rpc import Status


def counting_nonces() -> SotwStream:
    numbers = itertools.count(1)
    return SotwStream(lambda: f"n{next(numbers)}")


def test_sotw_versions_count_content_changes_and_names_changes_repeat_them() -> None:
    state = counting_nonces()
    assert state.update("content-a") is False  # nothing asked for yet
    assert state.receive(DiscoveryRequest(resource_names=["a"], node=Node(id="x"))).respond
    assert state.sent() == ("1", "n1")
    ack = state.receive(
        DiscoveryRequest(resource_names=["a"], version_info="1", response_nonce="n1")
    )
    assert (ack.respond, ack.rejected, ack.stale) == (False, None, False)
    assert state.node == Node(id="x")  # kept from the first request
    assert state.update("content-a") is False  # same content: nothing to send
    assert state.update("content-b") is True
    assert state.sent() == ("2", "n2")
    renamed = state.receive(
        DiscoveryRequest(resource_names=["b"], version_info="2", response_nonce="n2")
    )
    assert renamed.respond
    assert state.sent() == ("2", "n3")


def test_sotw_stale_nonces_are_ignored_and_nacks_reported() -> None:
    state = counting_nonces()
    state.update("content")
    state.receive(DiscoveryRequest(resource_names=["a"]))
    state.sent()
    stale = state.receive(DiscoveryRequest(resource_names=["b"], response_nonce="old"))
    assert (stale.respond, stale.stale) == (False, True)
    assert state.names == ("a",)
    nack = state.receive(
        DiscoveryRequest(
            resource_names=["a"], response_nonce="n1", error_detail=Status(message="bad key")
        )
    )
    assert (nack.respond, nack.rejected) == (False, "bad key")
    rolled_back = state.receive(DiscoveryRequest(resource_names=["a"], response_nonce="n1"))
    assert rolled_back.rejected == "version '' applied instead of '1'"


def test_delta_wildcard_subscriptions_and_removals() -> None:
    state = DeltaStream(lambda: "n")
    everything = [("td", b"bundle"), ("id", b"cert")]
    lookup = dict(everything).get
    state.receive(
        DeltaDiscoveryRequest(initial_resource_versions={"td": resource_version(b"bundle")})
    )
    changes = state.changes(everything, lookup)
    assert [name for name, _, _ in changes.resources] == ["id"]
    assert state.changes(everything, lookup).resources == ()
    state.receive(DeltaDiscoveryRequest(resource_names_subscribe=["missing"]))
    changes = state.changes(everything, lookup)
    assert (changes.resources, changes.removed) == ((), ("missing",))
    assert not state.changes(everything, lookup)  # told once
    gone = state.changes([("td", b"bundle")], {"td": b"bundle"}.get)
    assert gone.removed == ("id",)
    state.receive(DeltaDiscoveryRequest(resource_names_unsubscribe=["*", "missing"]))
    assert not state.changes([("td", b"new")], {"td": b"new"}.get)
    assert state.sent() == ("1", "n")
