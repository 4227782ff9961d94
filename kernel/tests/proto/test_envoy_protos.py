"""Our Envoy, google.rpc and SDS .proto files agree with the published ones (xds-protos, built
from envoyproxy/data-plane-api): every message we declare exists there under the same name, and
each of our fields has the published number, type, label, message type and oneof; the service
has the published methods, types and streaming. We declare fewer fields than published (the rest
are skipped as unknown), never other ones."""

from __future__ import annotations

from typing import Any

import pytest

# Importing the published modules registers their files in the default pool.
from envoy.config.core.v3 import base_pb2, extension_pb2  # type: ignore[import-untyped]  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import (  # type: ignore[import-untyped]  # noqa: F401
    common_pb2,
    secret_pb2,
    tls_spiffe_validator_config_pb2,
)
from envoy.service.secret.v3 import sds_pb2  # type: ignore[import-untyped]
from envoy.type.v3 import semantic_version_pb2  # type: ignore[import-untyped]  # noqa: F401
from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import status_pb2  # type: ignore[import-untyped]  # noqa: F401

from pyspire.proto import descriptor_set

_OURS = [
    file
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set()).file
    if file.name.startswith(("envoy/", "google/rpc/"))
]
_PUBLISHED = descriptor_pool.Default()


def _messages(messages: Any, prefix: str) -> list[tuple[str, descriptor_pb2.DescriptorProto]]:
    found = []
    for message in messages:
        name = f"{prefix}.{message.name}"
        found.append((name, message))
        found += _messages(message.nested_type, name)
    return found


OUR_MESSAGES = [
    (name, message)
    for file in _OURS
    for name, message in _messages(file.message_type, file.package)
    if not message.options.map_entry
]


def test_every_envoy_file_is_checked() -> None:
    assert {file.name for file in _OURS} == {
        "envoy/config/core/v3/base.proto",
        "envoy/config/core/v3/extension.proto",
        "envoy/extensions/transport_sockets/tls/v3/common.proto",
        "envoy/extensions/transport_sockets/tls/v3/secret.proto",
        "envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto",
        "envoy/service/discovery/v3/discovery.proto",
        "envoy/service/secret/v3/sds.proto",
        "envoy/type/v3/semantic_version.proto",
        "google/rpc/status.proto",
    }
    assert len(OUR_MESSAGES) == 16


@pytest.mark.parametrize(("full_name", "message"), OUR_MESSAGES, ids=[n for n, _ in OUR_MESSAGES])
def test_fields_are_the_published_ones(
    full_name: str, message: descriptor_pb2.DescriptorProto
) -> None:
    published = _PUBLISHED.FindMessageTypeByName(full_name)
    for field in message.field:
        theirs = published.fields_by_name.get(field.name)
        assert theirs is not None, f"{full_name}.{field.name} is not published"
        where = f"{full_name}.{field.name}"
        assert theirs.number == field.number, where
        assert theirs.type == field.type, where
        assert bool(theirs.is_repeated) == (field.label == field.LABEL_REPEATED), where
        if theirs.message_type is not None:
            assert "." + theirs.message_type.full_name == field.type_name, where
        oneof = (
            message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None
        )
        published_oneof = theirs.containing_oneof.name if theirs.containing_oneof else None
        assert published_oneof == oneof, where


def test_the_service_is_the_published_one() -> None:
    [ours] = [file for file in _OURS if file.name == "envoy/service/secret/v3/sds.proto"]
    [service] = ours.service
    published = sds_pb2.DESCRIPTOR.services_by_name[service.name]
    assert published.full_name == "envoy.service.secret.v3.SecretDiscoveryService"
    assert {method.name for method in service.method} == set(published.methods_by_name)
    for method in service.method:
        theirs = published.methods_by_name[method.name]
        assert "." + theirs.input_type.full_name == method.input_type
        assert "." + theirs.output_type.full_name == method.output_type
        assert theirs.client_streaming == method.client_streaming
        assert theirs.server_streaming == method.server_streaming
