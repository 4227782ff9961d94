"""The Workload API serves every route of the published service, carried as codec messages."""

from __future__ import annotations

from pyspire.agent.workload import WorkloadApiService
from pyspire.proto.gen import workload as pb
from pyspire.proto.messages import EncodedMessage


def test_every_route_of_the_generated_service_is_served_with_codecs(
    service: WorkloadApiService,
) -> None:
    ours = service.__mapping__()
    generated = pb.SpiffeWorkloadApiBase().__mapping__()
    assert set(ours) == set(generated)
    for path, handler in ours.items():
        assert handler.cardinality is generated[path].cardinality, path
        expected = generated[path].request_type.__name__.lower()
        assert handler.request_type.__name__.lower() == expected, path
        assert handler.request_type.__module__ == "pyspire.proto.gen.codec.workload", path
        assert handler.reply_type is EncodedMessage, path
