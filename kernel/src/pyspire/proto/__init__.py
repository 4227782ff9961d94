"""Wire formats: our .proto sources and the betterproto code generated from them.

This room is the only place protobuf types are defined. The rest of the kernel speaks
SDK dataclasses and converts at its gRPC edge.

Layout:

* ``src/`` holds the .proto sources, one file per published file, at the paths of the
  published packages (``spire/api/types/entry.proto``, ``spire/api/server/agent/v1/...``).
  They carry the public package, service, method, message and enum names and the field
  numbers and types of the SPIFFE Workload API, SPIRE's ``spire.api.*`` APIs and
  ``grpc.health.v1``, so clients written for SPIRE work unchanged.
* ``gen/`` holds the generated betterproto messages, grpclib client stubs and service
  base classes. Never edit it: run ``.venv/bin/python scripts/gen_protos.py``; a test runs
  the script with ``--check`` and fails when ``gen/`` is stale.

Import paths (each proto package becomes a Python package under ``pyspire.proto.gen``):

========================================  ===========================================
proto package                             Python module
========================================  ===========================================
(none: ``SpiffeWorkloadAPI``)             ``pyspire.proto.gen.workload``
``spire.api.types``                       ``pyspire.proto.gen.spire.api.types``
``spire.api.server.<name>.v1``            ``pyspire.proto.gen.spire.api.server.<name>.v1``
``spire.agent.debug.v1``                  ``pyspire.proto.gen.spire.agent.debug.v1``
``spire.api.agent.delegatedidentity.v1``  ``pyspire.proto.gen.spire.api.agent.delegatedidentity.v1``
``grpc.health.v1``                        ``pyspire.proto.gen.grpc.health.v1``
========================================  ===========================================

betterproto renames messages to Python style, sometimes oddly: ``X509SVID`` becomes
``X509Svid``, ``SPIFFEID`` ``Spiffeid``, ``JWTSVID`` ``Jwtsvid``, ``JWTSVIDRequest``
``JwtsvidRequest``, ``HTTPSSPIFFEProfile`` ``HttpsspiffeProfile``, ``FetchJWTSVIDsRequest``
``FetchJwtsviDsRequest``; nested ``AttestAgentRequest.Params`` becomes
``AttestAgentRequestParams`` and enums ``<Message><Enum>`` (``SelectorMatchMatchBehavior``).
Service stubs and bases are ``<Service>Stub`` / ``<Service>Base`` (``SpiffeWorkloadApiBase``,
``AgentBase``, ``SvidBase``); RPC methods are snake case (``fetch_x509_svid``,
``fetch_jwtsvid``, ``attest_agent``). Only Python names change: the wire names and the gRPC
method paths (``/SpiffeWorkloadAPI/FetchX509SVID``,
``/spire.api.server.agent.v1.Agent/AttestAgent``) are the published ones.

Known betterproto 2.0.0b7 pitfalls:

* ``google.protobuf.Struct().from_dict(...)`` does not serialize; build
  ``Struct(fields={key: Value(...)})`` explicitly (``ValidateJWTSVIDResponse.claims``).
* enum members type-check as ``int``; pass ``Enum.from_string("NAME")`` or ``Enum(Enum.NAME)``
  where a typed enum value is expected.
* a oneof member that is set is written even when it holds its default value, as protobuf
  requires; ``betterproto.which_one_of(message, "step")`` tells which member is set.

Deliberately absent, because the published definitions could not be confirmed field by
field: the incubating WIT-SVID profile (Workload API RPCs, ``Bundle.wit_authorities`` and
the WIT RPCs of the SVID and LocalAuthority services), the ``spire.api.*.logger.v1``
services, and the ``by_downstream`` entry filter. A peer that sends such fields has them
skipped as unknown fields; calls to such RPCs get UNIMPLEMENTED.

``gen/descriptors.binpb`` is a serialized ``google.protobuf.FileDescriptorSet`` of every
source file and its imports, for gRPC server reflection.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["descriptor_set"]

_DESCRIPTOR_SET = "descriptors.binpb"


def descriptor_set() -> bytes:
    """Return the serialized ``FileDescriptorSet`` of all our .proto files and their imports.

    The bytes are generated together with the Python code, so they always describe exactly
    the messages and services that ``pyspire.proto.gen`` implements.
    """
    return resources.files(__package__).joinpath("gen", _DESCRIPTOR_SET).read_bytes()
