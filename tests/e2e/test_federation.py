"""Two trust domains in real processes, each with a server (serving its bundle endpoint) and an
agent: federated with the TrustDomain API and CLI, a workload in each fetches its SVID and the
other domain's bundle with py-spiffe, and the two do mutual TLS, each accepting only the other's
SPIFFE ID. One domain's X.509 CA is then really rotated with ``localauthority x509 prepare``,
``activate`` and ``taint``: its workload is re-issued an SVID of the new authority, and the other
domain's workload accepts that SVID in mutual TLS after one refresh of the federated bundle.
Removing the federation (relationship and bundle) makes the handshake fail.

The servers and agents are real processes; the CLI's commands run in the test's process
(:meth:`ServerProcess.command`), which spares an interpreter start per command."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from processes import (
    AgentProcess,
    AgentSettings,
    ServerProcess,
    ServerSettings,
    early_in_taint_spread,
    free_port,
    short_temp_dir,
    wait_for,
)
from spiffe import TrustDomain, WorkloadApiClient
from spiffe.errors import PySpiffeError

from pyspire_sdk.spiffeid import TrustDomain as SdkTrustDomain
from pyspire_sdk.testing.pki import TestAuthority

pytestmark = pytest.mark.slow

DOMAINS = ("alpha.test", "beta.test")
ROTATION_TIMEOUT = 30.0
"""Activation to the other domain accepting the new SVID: the taint makes the agent re-mint
at its next sync (1 s here), the workload entry's ID placing it first in the taint spread (see
:func:`processes.early_in_taint_spread`)."""


@dataclass
class Domain:
    name: str
    server: ServerProcess
    agent: AgentProcess
    endpoint_port: int

    @property
    def workload_id(self) -> str:
        return f"spiffe://{self.name}/workload"


def _start(root: Path, name: str) -> Domain:
    endpoint_port = free_port()
    server = ServerProcess(
        ServerSettings(
            root=root / name,
            port=free_port(),
            trust_domain=name,
            extra=(
                "[server.federation.bundle_endpoint]\n"
                f'address = "127.0.0.1"\nport = {endpoint_port}\nrefresh_hint = "1m"\n'
            ),
        )
    )
    server.start()
    token = server.generate_token()
    agent = AgentProcess(
        AgentSettings(
            root=root / name,
            server_port=server.settings.port,
            bootstrap_bundle=server.write_bundle(root / name / "bootstrap.pem"),
            trust_domain=name,
        )
    )
    agent.start(token)
    return Domain(name, server, agent, endpoint_port)


@pytest.fixture
def domains() -> Iterator[tuple[Domain, Domain]]:
    root = short_temp_dir()
    for name in DOMAINS:
        (root / name).mkdir()
    # The two domains start side by side: each start is mostly waiting for a process.
    with ThreadPoolExecutor(len(DOMAINS)) as pool:
        starts = [pool.submit(_start, root, name) for name in DOMAINS]
    started = [start.result() for start in starts if start.exception() is None]
    try:
        for start in starts:
            start.result()  # the first failure, once every domain started has its stop
        yield started[0], started[1]
    finally:
        for domain in started:
            domain.agent.kill()
            domain.server.kill()
        shutil.rmtree(root, ignore_errors=True)


def _federate(local: Domain, foreign: Domain, root: Path) -> None:
    """``local`` fetches ``foreign``'s bundle from its endpoint, bootstrapped by hand."""
    bootstrap = root / f"{foreign.name}.json"
    bootstrap.write_text(foreign.server.command("bundle", "show", "-format", "spiffe").stdout)
    local.server.command(
        "federation",
        "create",
        "-trustDomain",
        foreign.name,
        "-bundleEndpointURL",
        f"https://127.0.0.1:{foreign.endpoint_port}/",
        "-endpointSpiffeID",
        f"spiffe://{foreign.name}/spire/server",
        "-trustDomainBundlePath",
        str(bootstrap),
        "-trustDomainBundleFormat",
        "spiffe",
    )
    local.server.command("federation", "refresh", "-id", foreign.name)
    agent_id = local.server.agent_ids()[0]
    local.server.command(
        "entry",
        "create",
        "-spiffeID",
        local.workload_id,
        "-parentID",
        agent_id,
        "-selector",
        f"unix:uid:{os.getuid()}",
        "-federatesWith",
        foreign.name,
        "-entryID",
        early_in_taint_spread(f"{local.name}-workload"),
    )


@dataclass
class Credentials:
    spiffe_id: str
    chain_pem: bytes
    key_pem: bytes
    foreign_roots_pem: bytes


def _credentials(domain: Domain, foreign: str) -> Credentials | None:
    """The workload's SVID and the foreign bundle, once the agent has both."""
    try:
        with WorkloadApiClient(domain.agent.endpoint) as client:
            context = client.fetch_x509_context()
    except PySpiffeError:
        return None  # no identity issued yet
    svid = context.default_svid
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(foreign))
    if svid is None or bundle is None or not bundle.x509_authorities:
        return None
    return Credentials(
        spiffe_id=str(svid.spiffe_id),
        chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in svid.cert_chain),
        key_pem=svid.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        foreign_roots_pem=b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in bundle.x509_authorities
        ),
    )


def _context(side: ssl._SSLMethod, credentials: Credentials, folder: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(side)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    chain, key = folder / "chain.pem", folder / "key.pem"
    chain.write_bytes(credentials.chain_pem)
    key.write_bytes(credentials.key_pem)
    context.load_cert_chain(chain, key)
    context.load_verify_locations(cadata=credentials.foreign_roots_pem.decode())
    return context


def _peer_id(connection: ssl.SSLSocket) -> str:
    der = connection.getpeercert(binary_form=True)
    assert der is not None
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    [uri] = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return str(uri)


def _mutual_tls(server_side: Credentials, client_side: Credentials) -> tuple[str, str]:
    """One handshake over loopback; the SPIFFE ID each side saw. Raises ssl.SSLError when
    either side does not trust the other."""
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        server_context = _context(ssl.PROTOCOL_TLS_SERVER, server_side, Path(a))
        client_context = _context(ssl.PROTOCOL_TLS_CLIENT, client_side, Path(b))
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, str] = {}

    def serve() -> None:
        raw, _ = listener.accept()
        try:
            with server_context.wrap_socket(raw, server_side=True) as tls:
                seen["server"] = _peer_id(tls)
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            seen["server"] = ""

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname()) as raw,
            client_context.wrap_socket(raw) as tls,
        ):
            client_saw = _peer_id(tls)
            tls.recv(2)
    finally:
        thread.join(10)
        listener.close()
    return seen.get("server", ""), client_saw


def test_workloads_of_two_trust_domains_do_mutual_tls(domains: tuple[Domain, Domain]) -> None:
    alpha, beta = domains
    root = alpha.server.settings.root.parent
    _federate(alpha, beta, root)
    _federate(beta, alpha, root)
    a = wait_for("alpha's workload credentials", lambda: _credentials(alpha, beta.name), 30)
    b = wait_for("beta's workload credentials", lambda: _credentials(beta, alpha.name), 30)
    assert (a.spiffe_id, b.spiffe_id) == (alpha.workload_id, beta.workload_id)
    # The JWT bundles carry the federated trust domain too.
    with WorkloadApiClient(alpha.agent.endpoint) as client:
        jwt_bundles = client.fetch_jwt_bundles()
    assert jwt_bundles.get_bundle_for_trust_domain(TrustDomain(beta.name)) is not None
    # Each side accepts only the other's SPIFFE ID.
    server_saw, client_saw = _mutual_tls(a, b)
    assert (server_saw, client_saw) == (beta.workload_id, alpha.workload_id)

    # Beta's X.509 CA rotates as SPIRE's procedure has it. The prepared authority enters beta's
    # bundle and must reach alpha before activation: beta's server re-mints its own SVID from the
    # active authority, and alpha authenticates beta's endpoint against the last bundle it knows.
    # Alpha's refresh is asked for rather than waited for: refresh intervals are never shorter
    # than a minute (as SPIRE), whatever hint the endpoint serves.
    old = _local_x509_authorities(beta)["active"]
    beta.server.command("localauthority", "x509", "prepare")
    new = _local_x509_authorities(beta)["prepared"]
    alpha.server.command("federation", "refresh", "-id", beta.name)
    wait_for(
        "alpha's workload to receive beta's prepared authority",
        lambda: True if _foreign_root_count(alpha, beta.name) == 2 else None,
        30,
    )
    # Activation and the taint of the old authority make beta's agent re-mint its workload's
    # SVID under the new authority, which alpha's workload accepts at once; beta's endpoint,
    # now serving an SVID of the new authority, still authenticates.
    beta.server.command("localauthority", "x509", "activate", "-authorityID", new)
    activated_at = time.monotonic()
    beta.server.command("localauthority", "x509", "taint", "-authorityID", old)
    a, b = wait_for(
        "alpha's workload to accept beta's SVID of the new authority",
        lambda: _accepted_after_rotation(alpha, beta, new),
        ROTATION_TIMEOUT,
        beta.agent.log(),
    )
    elapsed = time.monotonic() - activated_at
    print(f"\nactivation to the federated workload accepting the new SVID: {elapsed:.2f} s")
    assert _issuer_id(b) == new != old
    assert elapsed < ROTATION_TIMEOUT
    alpha.server.command("federation", "refresh", "-id", beta.name)

    # Alpha ends the federation: its workload loses beta's bundle and the handshake fails.
    alpha.server.command("federation", "delete", "-id", beta.name)
    alpha.server.command("bundle", "delete", "-id", beta.name, "-mode", "dissociate")
    wait_for(
        "alpha's workload to lose beta's bundle",
        lambda: True if _credentials(alpha, beta.name) is None else None,
        30,
    )
    now = replace(a, foreign_roots_pem=_all_roots(alpha))
    with pytest.raises((ssl.SSLError, OSError)):
        _mutual_tls(now, b)


def _local_x509_authorities(domain: Domain) -> dict[str, str]:
    """The authority IDs of the server's X.509 slots: ``active``, ``prepared``, ``old``."""
    out = domain.server.command("localauthority", "x509", "show", "-output", "json").stdout
    document = json.loads(out)
    return {name: document[name]["authority_id"] for name in ("active", "prepared", "old")}


def _issuer_id(credentials: Credentials) -> str:
    """The authority ID (hex subject key ID) of the CA that signed the SVID."""
    leaf = x509.load_pem_x509_certificates(credentials.chain_pem)[0]
    value = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    return bytes(value.key_identifier or b"").hex()


def _accepted_after_rotation(
    local: Domain, rotated: Domain, new_authority: str
) -> tuple[Credentials, Credentials] | None:
    """Both workloads' credentials once ``rotated``'s SVID comes from ``new_authority`` and a
    mutual TLS handshake with ``local``'s workload succeeds; None until then."""
    a = _credentials(local, rotated.name)
    b = _credentials(rotated, local.name)
    if a is None or b is None or _issuer_id(b) != new_authority:
        return None
    try:
        seen = _mutual_tls(a, b)
    except (ssl.SSLError, OSError):
        return None  # local's workload does not trust the new authority yet
    return (a, b) if seen == (rotated.workload_id, local.workload_id) else None


def _foreign_root_count(domain: Domain, foreign: str) -> int:
    with WorkloadApiClient(domain.agent.endpoint) as client:
        bundles = client.fetch_x509_context().x509_bundle_set
    bundle = bundles.get_bundle_for_trust_domain(TrustDomain(foreign))
    return 0 if bundle is None else len(bundle.x509_authorities)


def _all_roots(domain: Domain) -> bytes:
    """Every root the workload trusts now, whatever trust domain it belongs to."""
    with WorkloadApiClient(domain.agent.endpoint) as client:
        bundles = client.fetch_x509_context().x509_bundle_set.bundles
    return b"".join(
        certificate.public_bytes(serialization.Encoding.PEM)
        for bundle in bundles
        for certificate in bundle.x509_authorities
    )


def _serve_https(cert: Path, key: Path, body: bytes) -> tuple[int, Callable[[], None]]:
    """A one-path HTTPS server on loopback answering ``body``; its port and its stop."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    return int(httpd.server_address[1]), stop


def test_https_web_profile_and_a_tampered_bundle() -> None:
    root = short_temp_dir()
    web_ca = TestAuthority(SdkTrustDomain("web-pki.test"))
    cert_pem, key_pem = web_ca.issue_tls_server()
    (root / "web.crt").write_bytes(cert_pem)
    (root / "web.key").write_bytes(key_pem)
    (root / "web-ca.pem").write_bytes(web_ca.pem)
    endpoint_port = free_port()
    (root / "alpha").mkdir()
    (root / "beta").mkdir()
    alpha = ServerProcess(
        ServerSettings(
            root=root / "alpha",
            port=free_port(),
            trust_domain="alpha.test",
            extra=(
                "[server.federation.bundle_endpoint]\n"
                f'address = "127.0.0.1"\nport = {endpoint_port}\n'
                "[server.federation.bundle_endpoint.profile.https_web.serving_cert_file]\n"
                f'cert_file_path = "{root / "web.crt"}"\nkey_file_path = "{root / "web.key"}"\n'
            ),
        )
    )
    beta = ServerProcess(
        ServerSettings(root=root / "beta", port=free_port(), trust_domain="beta.test")
    )
    stop_fake: Callable[[], None] | None = None
    try:
        alpha.start()
        beta.start(env={"SSL_CERT_FILE": str(root / "web-ca.pem")})
        beta.command(
            "federation",
            "create",
            "-trustDomain",
            "alpha.test",
            "-bundleEndpointURL",
            f"https://127.0.0.1:{endpoint_port}/",
            "-bundleEndpointProfile",
            "https_web",
        )
        beta.command("federation", "refresh", "-id", "alpha.test")
        fetched = beta.command("bundle", "list", "-id", "alpha.test", "-format", "spiffe").stdout
        served = alpha.command("bundle", "show", "-format", "spiffe").stdout
        assert json.loads(fetched)["keys"] == json.loads(served)["keys"]

        # An endpoint serving a tampered document (two certificates in one x5c): refused, and
        # the bundle fetched before is kept.
        document = json.loads(served)
        document["keys"][0]["x5c"].append(document["keys"][0]["x5c"][0])
        fake_port, stop_fake = _serve_https(
            root / "web.crt", root / "web.key", json.dumps(document).encode()
        )
        beta.command(
            "federation",
            "update",
            "-trustDomain",
            "alpha.test",
            "-bundleEndpointURL",
            f"https://127.0.0.1:{fake_port}/",
            "-bundleEndpointProfile",
            "https_web",
        )
        refused = beta.command("federation", "refresh", "-id", "alpha.test", check=False)
        assert refused.returncode == 1
        assert "refused the bundle served" in refused.stderr
        kept = beta.command("bundle", "list", "-id", "alpha.test", "-format", "spiffe").stdout
        assert kept == fetched
    finally:
        if stop_fake is not None:
            stop_fake()
        alpha.kill()
        beta.kill()
        shutil.rmtree(root, ignore_errors=True)
