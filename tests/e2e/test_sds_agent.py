"""Envoy's Secret Discovery Service of a real agent process, called as Envoy calls it (grpcio,
the published Envoy protos) through a forced rotation run with the server's CLI: the open
StreamSecrets stream gets the prepared authority in its bundle, then, once the old authority
is tainted, an X509-SVID signed by the new one; every response is acknowledged as Envoy does.
The agent's ``[agent.sds]`` names are the configured ones. The entry's ID is one the agent
re-mints early in its taint spread (see
:meth:`processes.Deployment.register_early_in_taint_spread`), so the new SVID follows the
taint within a sync or two and the test waits on the stream, never on the spread.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from cryptography import x509
from envoy.config.core.v3 import base_pb2  # type: ignore[import-untyped]
from envoy.extensions.transport_sockets.tls.v3 import (  # type: ignore[import-untyped]
    secret_pb2,
    tls_spiffe_validator_config_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2  # type: ignore[import-untyped]
from envoy.service.secret.v3 import sds_pb2_grpc  # type: ignore[import-untyped]
from envoy.type.v3 import semantic_version_pb2  # type: ignore[import-untyped]
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    short_temp_dir,
)

pytestmark = pytest.mark.slow

WEB = f"spiffe://{TRUST_DOMAIN}/web"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
REISSUE_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    root = short_temp_dir()
    port = free_port()
    deployed = Deployment.start(
        ServerSettings(root=root, port=port, ca_ttl="24h", default_x509_svid_ttl="1h"),
        AgentSettings(
            root=root,
            server_port=port,
            bootstrap_bundle=root / "bootstrap.pem",
            extra='[agent.sds]\ndefault_svid_name = "svid"\ndefault_bundle_name = "CA"\n',
        ),
    )
    try:
        # The re-mint after a taint comes at the next sync rather than anywhere in the spread.
        deployed.register_early_in_taint_spread(WEB, f"unix:uid:{os.getuid()}")
        yield deployed
    finally:
        deployed.stop()


class Envoy:
    """One StreamSecrets stream: requests written from a queue, responses read on a thread."""

    def __init__(self, socket: str) -> None:
        self._channel = grpc.insecure_channel(f"unix:{socket}")
        self._requests: queue.Queue[Any] = queue.Queue()
        self.responses: queue.Queue[Any] = queue.Queue()
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(self._channel)
        self._call = stub.StreamSecrets(iter(self._requests.get, None), timeout=120)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self.responses.put(response)
        except grpc.RpcError as error:
            self.responses.put(error)

    def send(self, **fields: Any) -> None:
        self._requests.put(discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE, **fields))

    def next(self, timeout: float) -> Any:
        """The next response within ``timeout`` seconds; fails the test naming the wait."""
        try:
            response = self.responses.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise AssertionError(f"no response from the SDS stream in {timeout:.1f}s") from None
        assert not isinstance(response, grpc.RpcError), response
        return response

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self._channel.close()


def secrets(response: Any) -> dict[str, Any]:
    found = {}
    for resource in response.resources:
        secret = secret_pb2.Secret()
        assert resource.Unpack(secret)
        found[secret.name] = secret
    return found


def leaf_and_bundle(response: Any) -> tuple[x509.Certificate, list[x509.Certificate]]:
    found = secrets(response)
    chain = found["svid"].tls_certificate.certificate_chain.inline_bytes
    config = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig()
    assert found["CA"].validation_context.custom_validator_config.typed_config.Unpack(config)
    [domain] = config.trust_domains
    assert domain.name == TRUST_DOMAIN
    return (
        x509.load_pem_x509_certificates(chain)[0],
        x509.load_pem_x509_certificates(domain.trust_bundle.inline_bytes),
    )


def issuer_of(leaf: x509.Certificate, bundle: list[x509.Certificate]) -> x509.Certificate:
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    for authority in bundle:
        ski = authority.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        if ski.digest == aki.key_identifier:
            leaf.verify_directly_issued_by(authority)
            return authority
    raise AssertionError("the SVID does not chain to the bundle")


def test_an_open_stream_follows_a_forced_rotation(deployment: Deployment) -> None:
    server = deployment.server
    version = semantic_version_pb2.SemanticVersion(major_number=1, minor_number=30)
    node = base_pb2.Node(
        id="sidecar", user_agent_build_version=base_pb2.BuildVersion(version=version)
    )
    envoy = Envoy(str(deployment.agent.socket_path))
    try:
        envoy.send(node=node, resource_names=["svid", "CA"])
        first = envoy.next(30)
        leaf, bundle = leaf_and_bundle(first)
        assert leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]
        old = issuer_of(leaf, bundle)
        envoy.send(resource_names=["svid", "CA"], version_info="1", response_nonce=first.nonce)

        server.command("localauthority", "x509", "prepare")
        prepared = envoy.next(REISSUE_TIMEOUT)
        assert len(leaf_and_bundle(prepared)[1]) == 2
        assert int(prepared.version_info) > 1
        envoy.send(
            resource_names=["svid", "CA"],
            version_info=prepared.version_info,
            response_nonce=prepared.nonce,
        )
        shown = server.command("localauthority", "x509", "show", "-output", "json").stdout
        new_id = json.loads(shown)["prepared"]["authority_id"]
        server.command("localauthority", "x509", "activate", "-authorityID", new_id)
        old_id = old.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        server.command("localauthority", "x509", "taint", "-authorityID", old_id.digest.hex())

        deadline = time.monotonic() + REISSUE_TIMEOUT
        while True:  # bundle marks may come first; the re-minted SVID follows
            update = envoy.next(deadline - time.monotonic())
            envoy.send(
                resource_names=["svid", "CA"],
                version_info=update.version_info,
                response_nonce=update.nonce,
            )
            leaf, bundle = leaf_and_bundle(update)
            if issuer_of(leaf, bundle) != old:
                break
    finally:
        envoy.close()
