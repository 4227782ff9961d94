"""The bundle endpoint: configuration checked with errors naming the key, the SPIFFE bundle
document served over both profiles, and the https_web files reloaded when they change."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pyspire.catalog import Discovery
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.config.federation import ServingCertFile
from pyspire.server.federation.endpoint import BundleEndpoint
from pyspire.server.federation.endpoint_tls import EndpointTls, ServingFiles
from pyspire.server.runtime import ServerRuntime
from pyspire.telemetry.http import serve_http
from pyspire.transport.tls import spiffe_id_of
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import ConfigError
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.pki import TestAuthority

from ..delivery import until
from ..test_runtime import server_document

TD = TrustDomain("example.org")


def document_with(tmp_path: Path, federation: dict[str, object]) -> dict[str, object]:
    document = server_document(tmp_path)
    server = document["server"]
    assert isinstance(server, dict)
    server["federation"] = federation
    return document


def issues_of(tmp_path: Path, federation: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_document(SERVER_SCHEMA, document_with(tmp_path, federation))
    return str(caught.value)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    message = issues_of(tmp_path, {"bundle_endpoint": {"port": 70000, "refresh_hint": "0s"}})
    assert "server.federation.bundle_endpoint.port" in message
    assert "server.federation.bundle_endpoint.refresh_hint" in message
    both = {"https_spiffe": {}, "https_web": {"serving_cert_file": {"cert_file_path": "c"}}}
    message = issues_of(tmp_path, {"bundle_endpoint": {"profile": both}})
    assert (
        "server.federation.bundle_endpoint.profile.https_web.serving_cert_file.key_file_path"
        in message
    )
    message = issues_of(
        tmp_path,
        {
            "bundle_endpoint": {
                "profile": {
                    "https_spiffe": {},
                    "https_web": {
                        "serving_cert_file": {"cert_file_path": "c", "key_file_path": "k"}
                    },
                }
            }
        },
    )
    assert "server.federation.bundle_endpoint.profile" in message
    assert "exactly one of https_spiffe and https_web" in message
    message = issues_of(tmp_path, {"bundle_endpoint": {"profile": {}}})
    assert "exactly one of https_spiffe and https_web" in message


def test_short_refresh_hint_is_a_warning(tmp_path: Path) -> None:
    loaded = load_document(
        SERVER_SCHEMA, document_with(tmp_path, {"bundle_endpoint": {"refresh_hint": "30s"}})
    )
    endpoint = loaded.settings.federation.bundle_endpoint
    assert endpoint is not None
    assert endpoint.refresh_hint == timedelta(seconds=30)
    assert endpoint.serving_cert_file is None
    assert [issue.path for issue in loaded.settings.warnings()] == [
        "federation.bundle_endpoint.refresh_hint"
    ]


async def https_get(
    port: int, context: ssl.SSLContext, path: str = "/", method: str = "GET"
) -> tuple[int, dict[str, str], bytes, bytes]:
    """One request over a fresh connection: status, headers, body, the peer's leaf (DER)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        leaf = ssl_object.getpeercert(binary_form=True)
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body, leaf


def trusting(pem: bytes | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if pem is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=pem.decode())
    return context


@pytest.fixture
async def federating_server(tmp_path: Path) -> AsyncIterator[ServerRuntime]:
    federation = {"bundle_endpoint": {"address": "127.0.0.1", "port": 0, "refresh_hint": "2m"}}
    runtime = ServerRuntime(
        load_document(SERVER_SCHEMA, document_with(tmp_path, federation)), Discovery.load()
    )
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, timeout=30)


async def test_https_spiffe_serves_the_bundle_document(federating_server: ServerRuntime) -> None:
    port = federating_server.bundle_endpoint_port
    assert port is not None
    status, headers, body, leaf = await https_get(port, trusting())
    assert status == 200
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["spiffe_refresh_hint"] == 120
    served = Bundle.from_spiffe_json(TD, body)
    assert served.sequence_number >= 1
    assert str(spiffe_id_of(leaf)) == "spiffe://example.org/spire/server"
    # The endpoint's certificate is the server's SVID: it chains to the served bundle.
    pem = b"".join(
        x509.load_der_x509_certificate(a.der).public_bytes(Encoding.PEM)
        for a in served.x509_authorities
    )
    status, _, _, _ = await https_get(port, trusting(pem))
    assert status == 200
    assert (await https_get(port, trusting(), path="/other"))[0] == 404
    assert (await https_get(port, trusting(), method="POST"))[0] == 405


async def test_https_web_reloads_changed_files(tmp_path: Path) -> None:
    authority = TestAuthority(TD)
    cert_path, key_path = tmp_path / "endpoint.crt", tmp_path / "endpoint.key"
    first_cert, first_key = authority.issue_tls_server()
    cert_path.write_bytes(first_cert)
    key_path.write_bytes(first_key)
    clock = FakeClock()
    tls = EndpointTls()
    files = ServingFiles(
        ServingCertFile(
            cert_file_path=cert_path,
            key_file_path=key_path,
            file_sync_interval=timedelta(minutes=1),
        ),
        tls,
        clock,
    )
    await files.load()
    bundle = authority.bundle(sequence_number=7)
    endpoint = BundleEndpoint(lambda: bundle, 300)
    async with (
        serve_http(endpoint.answer, "127.0.0.1", 0, name="e", ssl_context=tls.listening) as http,
        asyncio.TaskGroup() as group,
    ):
        reloading = group.create_task(files.run())
        status, _, body, leaf = await https_get(http.port, trusting(authority.pem))
        assert status == 200
        assert json.loads(body)["spiffe_sequence"] == 7
        assert leaf == x509.load_pem_x509_certificate(first_cert).public_bytes(Encoding.DER)
        # A broken pair is refused and the loaded one kept.
        key_path.write_bytes(b"not a key")
        await advance(clock)
        assert (await https_get(http.port, trusting(authority.pem)))[3] == leaf
        second_cert, second_key = authority.issue_tls_server()
        cert_path.write_bytes(second_cert)
        key_path.write_bytes(second_key)
        await advance(clock)
        served = (await https_get(http.port, trusting(authority.pem)))[3]
        assert served == x509.load_pem_x509_certificate(second_cert).public_bytes(Encoding.DER)
        reloading.cancel()


async def advance(clock: FakeClock) -> None:
    """Move past the next file check and wait until the check (threads included) is done and
    the loop waits for the next one."""
    await until(lambda: clock.sleepers == 1)
    await clock.advance(timedelta(minutes=1))
    await until(lambda: clock.sleepers == 1)
