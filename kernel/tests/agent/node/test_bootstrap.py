"""Bootstrap trust: bundle files (PEM, SPIFFE JSON, garbage), an HTTPS URL, insecure mode."""

from __future__ import annotations

import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from pyspire.agent.bootstrap import (
    bootstrap_trust,
    fetch_trust_bundle_url,
    load_trust_bundle_file,
    parse_trust_bundle,
)
from pyspire.config.agent import AgentConfig
from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.errors import ConfigError, InvalidArgumentError, UnavailableError

from .conftest import TD


def certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
    *,
    ca: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, subject)])
    signer, issuer_name = (key, name) if issuer is None else (issuer[0], issuer[1].subject)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def authorities() -> tuple[x509.Certificate, x509.Certificate]:
    first = ec.generate_private_key(ec.SECP256R1())
    second = ec.generate_private_key(ec.SECP256R1())
    return certificate("ca one", first, ca=True), certificate("ca two", second, ca=True)


@pytest.fixture(scope="module")
def bundle(authorities: tuple[x509.Certificate, x509.Certificate]) -> Bundle:
    return Bundle(
        TD,
        tuple(X509Authority.from_certificate(c) for c in authorities),
        sequence_number=3,
    )


def test_pem_and_spiffe_bundles_parse(bundle: Bundle) -> None:
    from_pem = parse_trust_bundle(TD, bundle.to_pem().encode(), "pem")
    assert from_pem.x509_authorities == bundle.x509_authorities
    from_json = parse_trust_bundle(TD, bundle.to_spiffe_json().encode(), "spiffe")
    assert from_json == bundle


def test_a_bundle_without_x509_authorities_is_refused(bundle: Bundle) -> None:
    jwt_only = Bundle(
        TD,
        jwt_authorities=(
            JwtAuthority(
                "kid",
                bundle.x509_authorities[0]
                .certificate()
                .public_key()
                .public_bytes(
                    serialization.Encoding.DER,
                    serialization.PublicFormat.SubjectPublicKeyInfo,
                ),
            ),
        ),
    )
    with pytest.raises(InvalidArgumentError, match=r"no X\.509 authority"):
        parse_trust_bundle(TD, jwt_only.to_spiffe_json().encode(), "spiffe")


async def test_bundle_files_in_both_formats(tmp_path: Path, bundle: Bundle) -> None:
    pem = tmp_path / "bundle.pem"
    pem.write_text(bundle.to_pem())
    loaded = await load_trust_bundle_file(pem, TD, "pem")
    assert loaded.x509_authorities == bundle.x509_authorities
    spiffe = tmp_path / "bundle.json"
    spiffe.write_text(bundle.to_spiffe_json())
    assert await load_trust_bundle_file(spiffe, TD, "spiffe") == bundle


@pytest.mark.parametrize(
    ("content", "bundle_format", "reason"),
    [
        (
            b"not a bundle at all",
            "pem",
            r"is not a valid pem bundle: pem bundle has no CERTIFICATE",
        ),
        (b"\x00\xff\xfe garbage", "pem", r"is not a valid pem bundle: pem bundle is not ASCII"),
        (b'{"keys": 5}', "spiffe", r"is not a valid spiffe bundle: .*'keys' must be an array"),
        (b"{not json", "spiffe", r"is not a valid spiffe bundle"),
    ],
)
async def test_a_garbage_file_is_a_clear_config_error(
    tmp_path: Path, content: bytes, bundle_format: str, reason: str
) -> None:
    path = tmp_path / "garbage"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        await load_trust_bundle_file(path, TD, bundle_format)  # type: ignore[arg-type]
    (issue,) = caught.value.issues
    assert issue.path == "trust_bundle_path"
    assert str(path) in issue.message
    assert caught.match(reason)


async def test_a_missing_file_names_the_key_and_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trust_bundle_path: cannot read .*No such file"):
        await load_trust_bundle_file(tmp_path / "absent.pem", TD, "pem")


# -- trust_bundle_url -------------------------------------------------------------------------


class BundleHandler(http.server.BaseHTTPRequestHandler):
    documents: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.documents.get(self.path)
        if body is None:
            self.send_error(404, "not here")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    """An HTTPS server on 127.0.0.1 and a client context trusting its (test) CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("web ca", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate("localhost", key, (ca_key, ca), ca=False)
    cert_path = tmp_path / "web.pem"
    key_path = tmp_path / "web.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BundleHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", client
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_a_bundle_url_is_fetched_over_verified_https(
    https_server: tuple[str, ssl.SSLContext], bundle: Bundle
) -> None:
    base, context = https_server
    BundleHandler.documents = {
        "/bundle.json": bundle.to_spiffe_json().encode(),
        "/bundle.pem": bundle.to_pem().encode(),
        "/garbage": b"<html>nope</html>",
    }
    fetched = await fetch_trust_bundle_url(f"{base}/bundle.json", TD, "spiffe", context=context)
    assert fetched == bundle
    fetched = await fetch_trust_bundle_url(f"{base}/bundle.pem", TD, "pem", context=context)
    assert fetched.x509_authorities == bundle.x509_authorities

    with pytest.raises(UnavailableError, match=r"trust_bundle_url: .* answered HTTP 404"):
        await fetch_trust_bundle_url(f"{base}/missing", TD, "pem", context=context)
    with pytest.raises(ConfigError, match=r"trust_bundle_url: .* did not serve a valid pem"):
        await fetch_trust_bundle_url(f"{base}/garbage", TD, "pem", context=context)
    # The system CAs do not know the test CA: the download is refused, not trusted blindly.
    with pytest.raises(UnavailableError, match=r"trust_bundle_url: cannot fetch .*CERTIFICATE"):
        await fetch_trust_bundle_url(f"{base}/bundle.pem", TD, "pem")


async def test_only_https_urls_are_fetched() -> None:
    with pytest.raises(ConfigError, match=r"trust_bundle_url: expected an https URL"):
        await fetch_trust_bundle_url("http://127.0.0.1/bundle", TD, "pem")


async def test_an_unreachable_url_is_unavailable() -> None:
    with pytest.raises(UnavailableError, match=r"trust_bundle_url: cannot fetch"):
        await fetch_trust_bundle_url("https://127.0.0.1:1/bundle", TD, "pem", fetch_timeout=2)


# -- from the agent configuration -------------------------------------------------------------


def config(**settings: object) -> AgentConfig:
    return AgentConfig(
        trust_domain=TD,
        server_address="127.0.0.1",
        server_port=8081,
        **settings,  # type: ignore[arg-type]
    )


async def test_bootstrap_from_the_configured_file(tmp_path: Path, bundle: Bundle) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(bundle.to_spiffe_json())
    trust = await bootstrap_trust(config(trust_bundle_path=path, trust_bundle_format="spiffe"))
    assert trust.bundle == bundle
    assert trust.source == "trust_bundle_path"
    assert not trust.insecure


async def test_insecure_bootstrap_warns_loudly() -> None:
    with structlog.testing.capture_logs() as logs:
        trust = await bootstrap_trust(config(insecure_bootstrap=True))
    assert trust.insecure and trust.bundle is None
    assert trust.source == "insecure_bootstrap"
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert warnings and "INSECURE BOOTSTRAP" in warnings[0]["event"]


async def test_exactly_one_bootstrap_way_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"exactly one of .* found none"):
        await bootstrap_trust(config())
    with pytest.raises(ConfigError, match=r"found trust_bundle_path and insecure_bootstrap"):
        await bootstrap_trust(config(trust_bundle_path=tmp_path / "b.pem", insecure_bootstrap=True))
