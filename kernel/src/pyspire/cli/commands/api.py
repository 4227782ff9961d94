"""``api``: ask the agent's Workload API for this process's identities, as a workload would.

- ``api fetch [x509]`` prints the X509-SVIDs the caller gets (SPIFFE ID, hint, validity, the
  CAs of its bundle and of federated bundles) like SPIRE's ``spire-agent api fetch``; ``-write
  DIR`` stores them as ``svid.N.pem``, ``svid.N.key`` (mode 0600), ``bundle.N.pem`` and
  ``federated_bundle.N.M.pem``.
- ``api fetch jwt -audience A[,B] [-spiffeID ID]`` prints JWT-SVIDs and the JWT bundles.
- ``api validate jwt -audience A -svid TOKEN`` prints the token's SPIFFE ID and claims, or the
  agent's reason for refusing it (exit 1).
- ``api watch`` prints every X509-SVID update as it arrives until interrupted (Ctrl-C or
  SIGTERM end it with exit 0); when the agent goes away it says so on standard error and
  reconnects with backoff.

``-output json`` prints the Workload API response in protobuf's JSON mapping with the ``.proto``
field names (bytes as base64), as SPIRE does; ``api fetch jwt`` prints ``{"svids": [...],
"bundles": {"<trust domain ID>": <JWKS>}}`` and ``api watch`` one JSON document per line.
Every command takes ``-socketPath`` (else ``SPIFFE_ENDPOINT_SOCKET``) and ``-timeout``.
"""

from __future__ import annotations

__all__ = [
    "COMMANDS",
    "ReceivedSvid",
    "claims_dict",
    "describe_svids",
    "parse_x509_svid_response",
    "watch_x509_svids",
    "write_svids",
    "x509_svid_response_json",
]

import argparse
import asyncio
import base64
import contextlib
import json
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import betterproto
import betterproto.lib.google.protobuf as struct_pb
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status

from pyspire.catalog import Side
from pyspire.cli.files import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, write_file
from pyspire.cli.flags import CliArgumentParser, add_flag
from pyspire.cli.printable import printable
from pyspire.cli.registry import CliContext, Command
from pyspire.cli.workload_client import (
    Endpoint,
    WorkloadApiError,
    add_workload_flags,
    connect,
    resolve_endpoint,
)
from pyspire.der import elements
from pyspire.proto.gen import workload as pb
from pyspire.waiting import run_until
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId

_AGENT = frozenset({Side.AGENT})

WATCH_BACKOFF = (1.0, 30.0)
"""Seconds ``api watch`` waits before reconnecting: the first wait, doubled up to the last."""

WATCH_JITTER = 0.2
"""Each reconnection wait is shortened by up to this fraction of itself (watchers of an agent
that restarts do not all come back at once)."""


# -- X.509 responses --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSvid:
    """One X509-SVID of a Workload API response, parsed.

    ``federated_bundles`` are the response's federated bundles (shared by every SVID of the
    response), keyed by trust domain SPIFFE ID in sorted order.
    """

    spiffe_id: str
    hint: str
    certificates: tuple[x509.Certificate, ...]
    private_key_der: bytes
    bundle: tuple[x509.Certificate, ...]
    federated_bundles: Mapping[str, tuple[x509.Certificate, ...]]


def _certificates(der: bytes, what: str) -> tuple[x509.Certificate, ...]:
    try:
        found = tuple(x509.load_der_x509_certificate(item) for item in elements(der))
    except ValueError as error:
        raise WorkloadApiError(f"the agent sent an unreadable {what}: {error}") from None
    if not found:
        raise WorkloadApiError(f"the agent sent an empty {what}")
    return found


def parse_x509_svid_response(response: pb.X509SvidResponse) -> list[ReceivedSvid]:
    """The SVIDs of ``response`` with their certificates parsed and their keys checked.

    Raises :class:`~pyspire.cli.workload_client.WorkloadApiError` naming the SVID when the
    response has no SVID or a certificate, key or bundle does not parse.
    """
    if not response.svids:
        raise WorkloadApiError("the agent sent a response without svids")
    federated = {
        trust_domain: _certificates(der, f"federated bundle of {trust_domain}")
        for trust_domain, der in sorted(response.federated_bundles.items())
    }
    received = []
    for index, svid in enumerate(response.svids):
        label = f"svid #{index} ({svid.spiffe_id})"
        certificates = _certificates(svid.x509_svid, f"certificate chain in {label}")
        try:
            serialization.load_der_private_key(svid.x509_svid_key, password=None)
        except (ValueError, TypeError) as error:
            raise WorkloadApiError(
                f"the agent sent an unreadable key in {label}: {error}"
            ) from None
        received.append(
            ReceivedSvid(
                spiffe_id=svid.spiffe_id,
                hint=svid.hint,
                certificates=certificates,
                private_key_der=svid.x509_svid_key,
                bundle=_certificates(svid.bundle, f"bundle in {label}"),
                federated_bundles=federated,
            )
        )
    return received


def _go_time(moment: datetime) -> str:
    """A UTC time as Go prints one: ``2024-01-15 09:30:00 +0000 UTC``."""
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _elapsed(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1000:.3f}ms"
    return f"{seconds:.3f}s"


def describe_svids(svids: list[ReceivedSvid], elapsed: float) -> list[str]:
    """The lines SPIRE prints for an X509-SVID response: a count, then one block per SVID."""
    noun = "svid" if len(svids) == 1 else "svids"
    lines = [f"Received {len(svids)} {noun} after {_elapsed(elapsed)}"]
    for svid in svids:
        lines.append("")
        lines.append(f"SPIFFE ID:\t\t{svid.spiffe_id}")
        if svid.hint:
            lines.append(f"Hint:\t\t\t{printable(svid.hint)}")
        leaf = svid.certificates[0]
        lines.append(f"SVID Valid After:\t{_go_time(leaf.not_valid_before_utc)}")
        lines.append(f"SVID Valid Until:\t{_go_time(leaf.not_valid_after_utc)}")
        for number, intermediate in enumerate(svid.certificates[1:], start=1):
            lines.append(
                f"Intermediate #{number} Valid After:\t"
                f"{_go_time(intermediate.not_valid_before_utc)}"
            )
            lines.append(
                f"Intermediate #{number} Valid Until:\t{_go_time(intermediate.not_valid_after_utc)}"
            )
        lines.append(f"Bundle CAs:\t\t{len(svid.bundle)}")
        for number, ca in enumerate(svid.bundle, start=1):
            lines.append(f"CA #{number} Valid After:\t{_go_time(ca.not_valid_before_utc)}")
            lines.append(f"CA #{number} Valid Until:\t{_go_time(ca.not_valid_after_utc)}")
        for trust_domain, bundle in svid.federated_bundles.items():
            for number, ca in enumerate(bundle, start=1):
                lines.append(
                    f"[{trust_domain}] CA #{number} Valid After:\t"
                    f"{_go_time(ca.not_valid_before_utc)}"
                )
                lines.append(
                    f"[{trust_domain}] CA #{number} Valid Until:\t"
                    f"{_go_time(ca.not_valid_after_utc)}"
                )
    lines.append("")
    return lines


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def x509_svid_response_json(response: pb.X509SvidResponse) -> dict[str, Any]:
    """``response`` in protobuf's JSON mapping with the ``.proto`` field names: bytes as
    base64 (DER certificates, PKCS#8 keys), every field present."""
    return {
        "svids": [
            {
                "spiffe_id": svid.spiffe_id,
                "x509_svid": _b64(svid.x509_svid),
                "x509_svid_key": _b64(svid.x509_svid_key),
                "bundle": _b64(svid.bundle),
                "hint": svid.hint,
            }
            for svid in response.svids
        ],
        "crl": [_b64(crl) for crl in response.crl],
        "federated_bundles": {
            trust_domain: _b64(der)
            for trust_domain, der in sorted(response.federated_bundles.items())
        },
    }


def _pem(certificates: tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(
        certificate.public_bytes(serialization.Encoding.PEM) for certificate in certificates
    )


def _pem_private_key(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    wrapped = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN PRIVATE KEY-----\n" + wrapped + b"\n-----END PRIVATE KEY-----\n"


def write_svids(directory: Path, svids: list[ReceivedSvid]) -> list[str]:
    """Write each SVID's chain, key and bundle, and the federated bundles, into ``directory``
    (created when missing) as SPIRE names them; returns one line per file written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorkloadApiError(
            f"invalid -write: cannot create {directory}: {(error.strerror or str(error)).lower()}"
        ) from None
    lines = []
    try:
        for index, svid in enumerate(svids):
            svid_path = directory / f"svid.{index}.pem"
            lines.append(f"Writing SVID #{index} to file {svid_path}.")
            write_file(svid_path, _pem(svid.certificates), PUBLIC_FILE_MODE)
            key_path = directory / f"svid.{index}.key"
            lines.append(f"Writing key #{index} to file {key_path}.")
            write_file(key_path, _pem_private_key(svid.private_key_der), PRIVATE_FILE_MODE)
            bundle_path = directory / f"bundle.{index}.pem"
            lines.append(f"Writing bundle #{index} to file {bundle_path}.")
            write_file(bundle_path, _pem(svid.bundle), PUBLIC_FILE_MODE)
            for number, (trust_domain, bundle) in enumerate(svid.federated_bundles.items()):
                path = directory / f"federated_bundle.{index}.{number}.pem"
                lines.append(
                    f"Writing federated bundle #{number} for trust domain {trust_domain} "
                    f"to file {path}."
                )
                write_file(path, _pem(bundle), PUBLIC_FILE_MODE)
    except OSError as error:
        raise WorkloadApiError(
            f"invalid -write: cannot write into {directory}: "
            f"{(error.strerror or str(error)).lower()}"
        ) from None
    return lines


# -- JWT responses ----------------------------------------------------------------------------


def _struct_value(value: struct_pb.Value) -> Any:
    kind, inner = betterproto.which_one_of(value, "kind")
    if inner is None:
        return None
    if kind == "number_value":
        number = float(inner)
        return int(number) if number.is_integer() else number
    if kind == "struct_value":
        return claims_dict(inner)
    if kind == "list_value":
        return [_struct_value(item) for item in inner.values]
    if kind in ("string_value", "bool_value"):
        return inner
    return None


def claims_dict(claims: struct_pb.Struct | None) -> dict[str, Any]:
    """A ``google.protobuf.Struct`` as plain JSON values; whole numbers (``exp``, ``iat``)
    come back as integers."""
    if claims is None:
        return {}
    return {name: _struct_value(value) for name, value in sorted(claims.fields.items())}


def _jwks(document: bytes) -> Any:
    try:
        return json.loads(document)
    except (ValueError, UnicodeDecodeError):
        return document.decode("utf-8", "replace")


# -- flags ------------------------------------------------------------------------------------


def _add_output_flag(parser: argparse.ArgumentParser, default: object = "pretty") -> None:
    add_flag(
        parser,
        "output",
        choices=("pretty", "json"),
        default=default,
        help="output format: pretty (readable text) or json (the API response)",
    )


def _add_x509_flags(parser: argparse.ArgumentParser, default: object = None) -> None:
    suppressed = default is argparse.SUPPRESS
    add_workload_flags(parser, default=default)
    _add_output_flag(parser, argparse.SUPPRESS if suppressed else "pretty")
    add_flag(
        parser,
        "write",
        metavar="DIR",
        type=Path,
        default=default,
        help="write svid.N.pem, svid.N.key, bundle.N.pem and federated_bundle.N.M.pem into DIR",
    )
    add_flag(
        parser,
        "silent",
        action="store_true",
        default=argparse.SUPPRESS if suppressed else False,
        help="print nothing about the SVIDs (with -write: only the files written)",
    )


def _add_jwt_flags(parser: argparse.ArgumentParser) -> None:
    add_workload_flags(parser, default=argparse.SUPPRESS)
    _add_output_flag(parser, argparse.SUPPRESS)
    add_flag(
        parser,
        "audience",
        metavar="AUDIENCE",
        action="append",
        default=[],
        help="audience of the tokens; comma separated, or the flag repeated",
    )
    add_flag(
        parser,
        "spiffeID",
        metavar="ID",
        default="",
        help="fetch only the token of this SPIFFE ID (default: one per identity)",
    )


def _add_fetch_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    _add_x509_flags(parser)
    assert isinstance(parser, CliArgumentParser)
    kinds = parser.add_subparsers(dest="kind", title="kinds", metavar="<kind>")
    x509_parser = kinds.add_parser(
        "x509",
        help="fetch X509-SVIDs (the default)",
        description="Fetch the X509-SVIDs of this process and their trust bundles.",
        stdout=parser.stdout,
        stderr=parser.stderr,
    )
    _add_x509_flags(x509_parser, default=argparse.SUPPRESS)
    jwt_parser = kinds.add_parser(
        "jwt",
        help="fetch JWT-SVIDs and JWT bundles",
        description="Fetch JWT-SVIDs for an audience and the JWT bundles to check them with.",
        stdout=parser.stdout,
        stderr=parser.stderr,
    )
    _add_jwt_flags(jwt_parser)


def _add_validate_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_workload_flags(parser)
    _add_output_flag(parser)
    add_flag(parser, "audience", metavar="AUDIENCE", default="", help="the expected audience")
    add_flag(parser, "svid", metavar="TOKEN", default="", help="the JWT-SVID to validate")


def _add_watch_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_workload_flags(parser, timeout=False)
    _add_output_flag(parser)


# -- handlers ---------------------------------------------------------------------------------


def _endpoint(args: argparse.Namespace, context: CliContext) -> Endpoint:
    return resolve_endpoint(args.socket_path, context.environ)


def _print_json(context: CliContext, document: object) -> None:
    context.out(json.dumps(document, indent=2))


async def _fetch(args: argparse.Namespace, context: CliContext) -> int:
    if args.kind == "jwt":
        return await _fetch_jwt(args, context)
    return await _fetch_x509(args, context)


async def _fetch_x509(args: argparse.Namespace, context: CliContext) -> int:
    started = time.monotonic()
    async with connect(_endpoint(args, context), args.timeout) as client:
        response = await client.fetch_x509_svid()
    elapsed = time.monotonic() - started
    svids = await asyncio.to_thread(parse_x509_svid_response, response)
    pretty = args.output == "pretty"
    if not args.silent:
        if pretty:
            for line in describe_svids(svids, elapsed):
                context.out(line)
        else:
            _print_json(context, x509_svid_response_json(response))
    if args.write is not None:
        written = await asyncio.to_thread(write_svids, args.write, svids)
        if pretty:
            for line in written:
                context.out(line)
    return 0


def _audiences(values: list[str]) -> list[str]:
    found: list[str] = []
    for value in values:
        found.extend(part.strip() for part in value.split(",") if part.strip())
    return list(dict.fromkeys(found))


async def _fetch_jwt(args: argparse.Namespace, context: CliContext) -> int:
    if args.write is not None or args.silent:
        raise WorkloadApiError("-write and -silent apply to 'api fetch x509' only")
    audience = _audiences(args.audience)
    if not audience:
        raise WorkloadApiError("-audience is required: give one or more, comma separated")
    if args.spiffe_id:
        try:
            SpiffeId.parse(args.spiffe_id)
        except InvalidArgumentError as error:
            raise WorkloadApiError(f"invalid -spiffeID: {error}") from None
    async with connect(_endpoint(args, context), args.timeout) as client:
        bundles = await client.fetch_jwt_bundles()
        response = await client.fetch_jwt_svid(audience, args.spiffe_id)
    if args.output == "json":
        _print_json(
            context,
            {
                "svids": [
                    {"spiffe_id": svid.spiffe_id, "svid": svid.svid, "hint": svid.hint}
                    for svid in response.svids
                ],
                "bundles": {
                    trust_domain: _jwks(document)
                    for trust_domain, document in sorted(bundles.bundles.items())
                },
            },
        )
        return 0
    for svid in response.svids:
        context.out(f"token({svid.spiffe_id}):")
        context.out(f"\t{svid.svid}")
    for trust_domain, document in sorted(bundles.bundles.items()):
        context.out(f"bundle({trust_domain}):")
        context.out(f"\t{printable(document.decode('utf-8', 'replace'))}")
    return 0


async def _validate_jwt(args: argparse.Namespace, context: CliContext) -> int:
    if not args.audience:
        raise WorkloadApiError("-audience is required: the audience the token must name")
    if not args.svid:
        raise WorkloadApiError("-svid is required: the token to validate")
    async with connect(_endpoint(args, context), args.timeout) as client:
        try:
            response = await client.validate_jwt_svid(args.audience, args.svid)
        except WorkloadApiError as error:
            if error.status is Status.INVALID_ARGUMENT:
                raise WorkloadApiError(
                    f"jwt-svid is not valid: {error.reason or 'no reason given'}",
                    status=error.status,
                    reason=error.reason,
                ) from None
            raise
    claims = claims_dict(response.claims)
    if args.output == "json":
        _print_json(context, {"spiffe_id": response.spiffe_id, "claims": claims})
        return 0
    context.out("SVID is valid.")
    context.out(f"SPIFFE ID : {response.spiffe_id}")
    context.out(f"Claims    : {json.dumps(claims, separators=(',', ':'))}")
    return 0


async def watch_x509_svids(
    endpoint: Endpoint,
    args: argparse.Namespace,
    context: CliContext,
    stop: asyncio.Event,
    *,
    backoff: tuple[float, float] = WATCH_BACKOFF,
) -> int:
    """Print every X509-SVID update from ``endpoint`` until ``stop`` is set, then return 0.

    A lost or refused stream is reported on standard error and retried after a wait that
    starts at ``backoff[0]`` seconds and doubles up to ``backoff[1]``, reset by every update:
    an agent restarting, or an identity registered later, is picked up without a restart.
    Only INVALID_ARGUMENT (the agent will never accept the call) ends the watch with 1.
    """
    await run_until(stop, partial(_watch_forever, endpoint, args, context, backoff))
    return 0


async def _watch_forever(
    endpoint: Endpoint,
    args: argparse.Namespace,
    context: CliContext,
    backoff: tuple[float, float],
) -> NoReturn:
    retries = Backoff(BackoffPolicy(*backoff, jitter=WATCH_JITTER))
    last = time.monotonic()
    while True:
        try:
            async with connect(endpoint) as client:
                async for response in client.watch_x509_svids():
                    now = time.monotonic()
                    svids = await asyncio.to_thread(parse_x509_svid_response, response)
                    if args.output == "json":
                        context.out(
                            json.dumps(x509_svid_response_json(response), separators=(",", ":"))
                        )
                    else:
                        for line in describe_svids(svids, now - last):
                            context.out(line)
                    context.stdout.flush()
                    last = now
                    retries.succeeded()
        except WorkloadApiError as error:
            if error.status is Status.INVALID_ARGUMENT:
                raise
            delay = retries.failed()
            context.err(f"{context.prog}: {error}; retrying in {delay:.3g}s")
            context.stderr.flush()
        else:
            delay = retries.failed()
        await asyncio.sleep(delay)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT or SIGTERM while the block runs (main thread only; elsewhere
    the caller stops the watch another way)."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (ValueError, RuntimeError, NotImplementedError):
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def _watch(args: argparse.Namespace, context: CliContext) -> int:
    endpoint = _endpoint(args, context)
    stop = asyncio.Event()
    with _stop_on_signals(stop):
        return await watch_x509_svids(endpoint, args, context, stop)


# -- the command group ------------------------------------------------------------------------

FETCH = Command(
    name="fetch",
    summary="fetch X509-SVIDs (default) or JWT-SVIDs from the Workload API",
    description=(
        "Fetch this process's identities from the agent's Workload API. 'api fetch' and "
        "'api fetch x509' print the X509-SVIDs and their bundles (-write DIR stores them as "
        "PEM files); 'api fetch jwt -audience A[,B]' prints JWT-SVIDs and the JWT bundles."
    ),
    sides=_AGENT,
    handler=_fetch,
    add_flags=_add_fetch_flags,
)

VALIDATE = Command(
    name="validate",
    summary="validate a JWT-SVID with the Workload API",
    sides=_AGENT,
    subcommands=(
        Command(
            name="jwt",
            summary="validate a JWT-SVID for an audience",
            description=(
                "Ask the agent whether -svid is a valid JWT-SVID for -audience. Prints its "
                "SPIFFE ID and claims, or the agent's reason and exits 1."
            ),
            sides=_AGENT,
            handler=_validate_jwt,
            add_flags=_add_validate_flags,
        ),
    ),
)

WATCH = Command(
    name="watch",
    summary="print X509-SVID updates as they arrive, until interrupted",
    description=(
        "Attach to the Workload API and print every X509-SVID update as it arrives. Runs "
        "until interrupted (Ctrl-C or SIGTERM, exit 0); reconnects when the agent goes away."
    ),
    sides=_AGENT,
    handler=_watch,
    add_flags=_add_watch_flags,
)

API = Command(
    name="api",
    summary="use the Workload API as a workload (fetch, validate, watch)",
    sides=_AGENT,
    subcommands=(FETCH, VALIDATE, WATCH),
)

COMMANDS: tuple[Command, ...] = (API,)
