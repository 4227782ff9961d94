"""``x509 mint``, ``jwt mint`` and ``healthcheck`` against a real server; every admin command
against a socket nobody serves; JSON field names against the published .proto names."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from betterproto.casing import safe_snake_case
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import descriptor_pb2
from grpclib.server import Server

from pyspire.cli.admin_client import PROTO_FIELD_NAMES
from pyspire.proto import descriptor_set
from pyspire.proto.gen.grpc.health import v1 as health_pb

from .conftest import AdminServer, run_admin_cli


def verify_chain(leaf: x509.Certificate, roots: list[x509.Certificate]) -> None:
    [issuer] = [root for root in roots if root.subject == leaf.issuer]
    public_key = issuer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    leaf.verify_directly_issued_by(issuer)


async def test_x509_mint_writes_svid_key_and_bundle(server: AdminServer, tmp_path: Path) -> None:
    out = tmp_path / "minted"
    result = await server.cli(
        "x509",
        "mint",
        "-spiffeID",
        "spiffe://example.org/minted",
        "-dns",
        "minted.example.org",
        "-ttl",
        "10m",
        "-write",
        str(out),
    )
    assert result.status == 0, result.err
    assert result.out.splitlines() == [
        f"X509-SVID written to {out / 'svid.pem'}",
        f"Private key written to {out / 'key.pem'}",
        f"Root CAs written to {out / 'bundle.pem'}",
    ]
    assert stat.S_IMODE(os.stat(out / "key.pem").st_mode) == 0o600
    [leaf] = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
    roots = x509.load_pem_x509_certificates((out / "bundle.pem").read_bytes())
    verify_chain(leaf, roots)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://example.org/minted"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["minted.example.org"]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert 590 <= lifetime.total_seconds() <= 620
    key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), password=None)
    assert key.public_key() == leaf.public_key()


async def test_x509_mint_prints_pem_or_json(server: AdminServer) -> None:
    printed = await server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/p")
    assert printed.status == 0, printed.err
    text = printed.out
    assert text.startswith("X509-SVID:\n-----BEGIN CERTIFICATE-----")
    assert "\nPrivate key:\n-----BEGIN PRIVATE KEY-----" in text
    assert "\nRoot CAs:\n-----BEGIN CERTIFICATE-----" in text
    document = (
        await server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/j", "-output", "json")
    ).json()
    leaf = x509.load_der_x509_certificate(base64.b64decode(document["svid"]["cert_chain"][0]))
    roots = [x509.load_der_x509_certificate(base64.b64decode(r)) for r in document["root_cas"]]
    verify_chain(leaf, roots)
    key = serialization.load_der_private_key(base64.b64decode(document["private_key"]), None)
    assert key.public_key() == leaf.public_key()
    assert document["svid"]["id"] == {"trust_domain": "example.org", "path": "/j"}


async def test_x509_mint_errors(server: AdminServer) -> None:
    foreign = await server.cli("x509", "mint", "-spiffeID", "spiffe://other.org/x")
    assert foreign.status == 1
    assert "other.org" in foreign.err and "not in trust domain" in foreign.err
    bad_ttl = await server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/x", "-ttl", "x")
    assert bad_ttl.err.startswith("pyspire-server: error: invalid -ttl: ")
    bad_id = await server.cli("x509", "mint", "-spiffeID", "example.org")
    assert bad_id.err.startswith("pyspire-server: error: invalid -spiffeID: ")


async def test_jwt_mint_prints_or_writes_a_token(server: AdminServer, tmp_path: Path) -> None:
    printed = await server.cli(
        "jwt", "mint", "-spiffeID", "spiffe://example.org/api", "-audience", "a", "-audience", "b"
    )
    assert printed.status == 0, printed.err
    token = printed.out.strip()
    _header, payload, _signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == "spiffe://example.org/api"
    assert claims["aud"] == ["a", "b"]

    path = tmp_path / "token.jwt"
    written = await server.cli(
        "jwt",
        "mint",
        "-spiffeID",
        "spiffe://example.org/api",
        "-audience",
        "a",
        "-ttl",
        "60",
        "-write",
        str(path),
    )
    assert written.status == 0, written.err
    assert written.out.startswith(f"JWT-SVID written to {path}\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().count(".") == 2

    missing = await server.cli("jwt", "mint", "-spiffeID", "spiffe://example.org/api")
    assert missing.status == 1
    assert missing.err == (
        "pyspire-server: error: missing -audience: at least one audience is required\n"
    )


async def test_healthcheck(server: AdminServer) -> None:
    healthy = await server.cli("healthcheck")
    assert (healthy.status, healthy.out, healthy.err) == (0, "Server is healthy.\n", "")
    verbose = await server.cli("healthcheck", "-verbose", "-shallow")
    assert verbose.status == 0
    assert verbose.out.splitlines() == [
        f"Checking server health via {server.socket_path}",
        "Server answered SERVING",
        "Server is healthy.",
    ]


COMMANDS = [
    ["healthcheck"],
    ["token", "generate"],
    ["entry", "show"],
    ["entry", "count"],
    ["entry", "delete", "-entryID", "x"],
    [
        "entry",
        "create",
        "-spiffeID",
        "spiffe://a.org/b",
        "-parentID",
        "spiffe://a.org/c",
        "-selector",
        "a:b",
    ],
    ["agent", "list"],
    ["agent", "count"],
    ["agent", "show", "-spiffeID", "spiffe://a.org/spire/agent/x"],
    ["bundle", "show"],
    ["bundle", "list"],
    ["bundle", "count"],
    ["bundle", "delete", "-id", "b.org"],
    ["x509", "mint", "-spiffeID", "spiffe://a.org/b"],
    ["jwt", "mint", "-spiffeID", "spiffe://a.org/b", "-audience", "x"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: " ".join(argv[:2]))
async def test_unreachable_socket_is_one_clear_line(argv: list[str], tmp_path: Path) -> None:
    socket = tmp_path / "api.sock"
    result = await run_admin_cli([*argv, "-socketPath", str(socket)])
    assert result.status == 1
    assert result.out == ""
    assert result.err == (
        f"pyspire-server: error: cannot reach the server at {socket}: no such socket\n"
    )


async def test_a_dead_socket_is_reported_with_the_reason(tmp_path: Path) -> None:
    import socket as sockets

    path = Path("/tmp") / f"pyspire-dead-{os.getpid()}.sock"
    listener = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    try:
        listener.bind(str(path))  # bound but never listening: connections are refused
        result = await run_admin_cli(["healthcheck", "-socketPath", str(path)])
    finally:
        listener.close()
        path.unlink(missing_ok=True)
    assert result.status == 1
    assert result.err == (
        f"pyspire-server: error: cannot reach the server at {path}: connection refused\n"
    )
    not_socket = tmp_path / "file"
    not_socket.write_text("")
    result = await run_admin_cli(["bundle", "show", "-socketPath", str(not_socket)])
    assert result.err == (
        f"pyspire-server: error: cannot reach the server at {not_socket}: not a unix socket\n"
    )


def test_json_output_uses_every_published_field_name() -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set()).file
    renamed: dict[str, str] = {}

    def walk(messages: list[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in message.field:
                if safe_snake_case(field.name) != field.name:
                    renamed[safe_snake_case(field.name)] = field.name
            walk(list(message.nested_type))

    for file in files:
        if file.package.startswith("spire.api"):
            walk(list(file.message_type))
    assert renamed == PROTO_FIELD_NAMES


class NotServingHealth(health_pb.HealthBase):
    """A health service that reports the server as not serving."""

    async def check(
        self, health_check_request: health_pb.HealthCheckRequest
    ) -> health_pb.HealthCheckResponse:
        status = health_pb.HealthCheckResponseServingStatus
        return health_pb.HealthCheckResponse(status=status(status.NOT_SERVING))


async def test_healthcheck_fails_when_the_server_is_not_serving(socket_dir: Path) -> None:
    path = socket_dir / "api.sock"
    fake = Server([NotServingHealth()])
    await fake.start(path=str(path))
    try:
        deep = await run_admin_cli(["healthcheck", "-socketPath", str(path)])
        shallow = await run_admin_cli(["healthcheck", "-shallow", "-socketPath", str(path)])
    finally:
        fake.close()
        await fake.wait_closed()
    assert (deep.status, deep.out) == (1, "")
    assert deep.err == "pyspire-server: error: server is unhealthy: it answered NOT_SERVING\n"
    assert (shallow.status, shallow.out) == (0, "Server is healthy.\n")
