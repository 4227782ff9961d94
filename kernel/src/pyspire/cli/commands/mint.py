"""``x509 mint`` and ``jwt mint``: SVIDs for any ID of the trust domain, minted by the server.

``x509 mint`` generates an ECDSA P-256 key locally (it never leaves this process except to the
output the operator asked for), sends a CSR carrying the SPIFFE ID and DNS names to
MintX509SVID, and prints the SVID, key and bundle as PEM or writes them to ``svid.pem``,
``key.pem`` (mode 0600) and ``bundle.pem`` in ``-write DIR``. ``jwt mint`` prints the token or
writes it (mode 0600) to ``-write FILE``.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "build_csr", "write_private_file"]

import argparse
import asyncio
import base64
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.catalog import Side
from pyspire.cli.admin_client import (
    AdminError,
    add_admin_flags,
    connect,
    format_timestamp,
    message_json,
    parse_spiffe_id,
    print_json,
)
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire_sdk import parse_duration
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
_INT32_MAX = 2**31 - 1
_SIDES = frozenset({Side.SERVER})


def _ttl_seconds(text: str | None) -> int:
    """``-ttl`` as whole seconds (0 = the server's default); ``1h``, ``90s`` or seconds."""
    if text is None:
        return 0
    try:
        ttl = parse_duration(text)
    except InvalidArgumentError as error:
        raise AdminError(f"invalid -ttl: {error}") from None
    seconds = int(ttl / timedelta(seconds=1))
    if seconds < 1 or seconds > _INT32_MAX:
        raise AdminError(f"invalid -ttl: {text!r} must be between 1s and {_INT32_MAX}s")
    return seconds


def build_csr(
    spiffe_id: SpiffeId, dns_names: Sequence[str]
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A new P-256 key and a DER CSR for it with ``spiffe_id`` as URI SAN and the DNS names.

    Blocking (key generation and signing): call it in a thread from async code.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(spiffe_id))]
    names.extend(x509.DNSName(name) for name in dns_names)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.DER)


def _pem_certificates(ders: Sequence[bytes]) -> str:
    return "".join(
        x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()
        for der in ders
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def write_private_file(path: Path, data: str, mode: int = PRIVATE_FILE_MODE) -> None:
    """Write ``data`` to ``path`` with ``mode``, the file never readable by others meanwhile
    (created with the mode; an existing file has its mode reset before it is rewritten)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(descriptor, mode)
        os.write(descriptor, data.encode())
    finally:
        os.close(descriptor)


def _add_x509_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(parser, "spiffeID", metavar="ID", required=True, help="the SPIFFE ID of the SVID")
    add_flag(
        parser, "dns", metavar="NAME", action="append", default=[], help="a DNS name (repeatable)"
    )
    add_flag(
        parser,
        "ttl",
        metavar="DURATION",
        help="lifetime of the SVID, e.g. 1h or 3600 (default: the server's X509-SVID TTL)",
    )
    add_flag(
        parser,
        "write",
        metavar="DIR",
        type=Path,
        help="write svid.pem, key.pem and bundle.pem to this directory instead of printing",
    )


def _add_jwt_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(parser, "spiffeID", metavar="ID", required=True, help="the SPIFFE ID of the SVID")
    add_flag(
        parser,
        "audience",
        metavar="AUDIENCE",
        action="append",
        default=[],
        help="an audience of the token (repeatable; at least one)",
    )
    add_flag(
        parser,
        "ttl",
        metavar="DURATION",
        help="lifetime of the token, e.g. 5m or 300 (default: the server's JWT-SVID TTL)",
    )
    add_flag(
        parser,
        "write",
        metavar="FILE",
        type=Path,
        help="write the token to this file instead of printing it",
    )


def _write_x509(directory: Path, svid: str, key: str, bundle: str) -> list[Path]:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / "svid.pem", directory / "key.pem", directory / "bundle.pem"]
        write_private_file(paths[0], svid, PUBLIC_FILE_MODE)
        write_private_file(paths[1], key, PRIVATE_FILE_MODE)
        write_private_file(paths[2], bundle, PUBLIC_FILE_MODE)
    except OSError as error:
        raise AdminError(f"invalid -write: cannot write to {str(directory)!r}: {error}") from None
    return paths


async def _x509_mint(args: argparse.Namespace, context: CliContext) -> int:
    spiffe_id = parse_spiffe_id(args.spiffe_id, "-spiffeID")
    ttl = _ttl_seconds(args.ttl)
    for name in args.dns:
        if not name:
            raise AdminError("invalid -dns: a DNS name must not be empty")
    key, csr = await asyncio.to_thread(build_csr, spiffe_id, args.dns)
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await client.svid.mint_x509_svid(
                svid_pb.MintX509SvidRequest(csr=csr, ttl=ttl)
            )
            bundle = await client.bundle.get_bundle(bundle_pb.GetBundleRequest())
    svid_pem = _pem_certificates(response.svid.cert_chain)
    key_pem = _pem_key(key)
    bundle_pem = _pem_certificates([authority.asn1 for authority in bundle.x509_authorities])
    if args.write is not None:
        paths = await asyncio.to_thread(_write_x509, args.write, svid_pem, key_pem, bundle_pem)
        if args.output == "json":
            print_json(
                context.out,
                {
                    "svid": message_json(response.svid),
                    "svid_path": str(paths[0]),
                    "key_path": str(paths[1]),
                    "bundle_path": str(paths[2]),
                },
            )
            return 0
        context.out(f"X509-SVID written to {paths[0]}")
        context.out(f"Private key written to {paths[1]}")
        context.out(f"Root CAs written to {paths[2]}")
        return 0
    if args.output == "json":
        document = {
            "svid": message_json(response.svid),
            "private_key": base64.b64encode(
                key.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            ).decode("ascii"),
            "root_cas": [base64.b64encode(a.asn1).decode("ascii") for a in bundle.x509_authorities],
        }
        print_json(context.out, document)
        return 0
    context.out("X509-SVID:")
    context.out(svid_pem.rstrip("\n"))
    context.out("")
    context.out("Private key:")
    context.out(key_pem.rstrip("\n"))
    context.out("")
    context.out("Root CAs:")
    context.out(bundle_pem.rstrip("\n"))
    return 0


async def _jwt_mint(args: argparse.Namespace, context: CliContext) -> int:
    spiffe_id = parse_spiffe_id(args.spiffe_id, "-spiffeID")
    if not args.audience:
        raise AdminError("missing -audience: at least one audience is required")
    if any(not audience for audience in args.audience):
        raise AdminError("invalid -audience: an audience must not be empty")
    ttl = _ttl_seconds(args.ttl)
    request = svid_pb.MintJwtsvidRequest(
        id=pb.Spiffeid(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path),
        audience=list(args.audience),
        ttl=ttl,
    )
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await client.svid.mint_jwtsvid(request)
    token = response.svid.token
    if args.write is not None:
        try:
            await asyncio.to_thread(write_private_file, args.write, token + "\n")
        except OSError as error:
            raise AdminError(f"invalid -write: cannot write {str(args.write)!r}: {error}") from None
        if args.output == "json":
            print_json(
                context.out,
                {
                    "path": str(args.write),
                    "expires_at": str(response.svid.expires_at),
                },
            )
        else:
            context.out(f"JWT-SVID written to {args.write}")
            context.out(f"Expires at {format_timestamp(response.svid.expires_at)}")
        return 0
    if args.output == "json":
        print_json(context.out, message_json(response))
    else:
        context.out(token)
    return 0


X509 = Command(
    name="x509",
    summary="mint X509-SVIDs",
    sides=_SIDES,
    subcommands=(
        Command(
            name="mint",
            summary="mint an X509-SVID for any ID of the trust domain",
            description=(
                "Generate a P-256 key here, have the server sign an X509-SVID for it with "
                "-spiffeID and the -dns names, and print (or -write) the SVID, key and bundle."
            ),
            sides=_SIDES,
            handler=_x509_mint,
            add_flags=_add_x509_flags,
        ),
    ),
)

JWT = Command(
    name="jwt",
    summary="mint JWT-SVIDs",
    sides=_SIDES,
    subcommands=(
        Command(
            name="mint",
            summary="mint a JWT-SVID for any ID of the trust domain",
            sides=_SIDES,
            handler=_jwt_mint,
            add_flags=_add_jwt_flags,
        ),
    ),
)

COMMANDS: tuple[Command, ...] = (X509, JWT)
