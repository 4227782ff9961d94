"""What every admin command shares: the admin socket, output rendering, and error lines.

The server's admin commands (``entry``, ``agent``, ``bundle``, ``token``, ``x509``, ``jwt``,
``healthcheck``) are thin clients of the server APIs over its admin unix socket, where every
caller is ``local``. This module gives them one way to:

- take the common flags ``-socketPath`` and ``-output pretty|json`` (:func:`add_admin_flags`);
- open the socket and reach the service stubs (:func:`connect`, :class:`AdminClient`), with
  every call bounded by a timeout so a stuck server never hangs a shell script;
- turn what can go wrong on the way (no socket, connection refused, a gRPC status) into one
  :class:`AdminError` whose message is a single lower-case line: the CLI prints it as
  ``<prog>: error: <message>`` and exits 1;
- render results as JSON (the API response in protobuf's JSON mapping with the ``.proto``
  field names, so scripts can rely on the published schema) or as SPIRE-like text.
"""

from __future__ import annotations

__all__ = [
    "CALL_TIMEOUT",
    "DEFAULT_SOCKET_PATH",
    "PROTO_FIELD_NAMES",
    "AdminClient",
    "AdminError",
    "add_admin_flags",
    "connect",
    "describe_entry",
    "format_timestamp",
    "message_json",
    "parse_bool",
    "parse_selector",
    "parse_spiffe_id",
    "parse_trust_domain",
    "parse_ttl",
    "plural",
    "print_json",
    "render_blocks",
    "spiffe_id_text",
    "status_line",
    "write_blocks",
]

import argparse
import asyncio
import contextlib
import stat
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import betterproto
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from pyspire.cli.flags import add_flag
from pyspire.cli.json_stream import dumps_indented
from pyspire.cli.printable import printable
from pyspire.proto.gen.codec import spire_api_types as types_wire
from pyspire.proto.gen.grpc.health import v1 as health_pb
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.proto.messages import call_unary
from pyspire_sdk import parse_duration
from pyspire_sdk.errors import InvalidArgumentError, PyspireError
from pyspire_sdk.limits import MAX_TTL_SECONDS
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

DEFAULT_SOCKET_PATH = Path("/tmp/pyspire-server/private/api.sock")  # noqa: S108 - SPIRE's layout
"""Where ``pyspire-server run`` puts its admin socket unless configured otherwise."""

CALL_TIMEOUT = 30.0
"""Seconds one call may take before the command gives up (connecting included)."""

_LABEL_WIDTH = 17

_M = TypeVar("_M")


class AdminError(PyspireError):
    """An admin command failed; the message is the one line the operator sees."""


def add_admin_flags(parser: argparse.ArgumentParser, *, output: bool = True) -> None:
    """Add ``-socketPath`` and, unless ``output`` is false, ``-output pretty|json``."""
    add_flag(
        parser,
        "socketPath",
        metavar="PATH",
        type=Path,
        default=DEFAULT_SOCKET_PATH,
        help=f"path of the server's admin API socket (default: {DEFAULT_SOCKET_PATH})",
    )
    if output:
        add_flag(
            parser,
            "output",
            choices=("pretty", "json"),
            default="pretty",
            help="output format: pretty (readable text) or json (the API response)",
        )


# -- flag values ------------------------------------------------------------------------------


def parse_spiffe_id(text: str, flag: str) -> SpiffeId:
    """``text`` as a SPIFFE ID; the error names the flag (``invalid -spiffeID: ...``)."""
    try:
        return SpiffeId.parse(text)
    except InvalidArgumentError as error:
        raise AdminError(f"invalid {flag}: {error}") from None


def parse_trust_domain(text: str, flag: str) -> TrustDomain:
    """A trust domain name (or ``spiffe://<name>``); the error names the flag."""
    try:
        return TrustDomain.parse(text)
    except InvalidArgumentError as error:
        raise AdminError(f"invalid {flag}: {error}") from None


def parse_selector(text: str, flag: str = "-selector") -> pb.Selector:
    """``type:value`` as a wire selector; the error names the flag."""
    try:
        selector = Selector.parse(text)
    except InvalidArgumentError as error:
        raise AdminError(f"invalid {flag}: {error}") from None
    return pb.Selector(type=selector.type, value=selector.value)


def parse_ttl(text: str | None, flag: str, *, minimum: int = 0) -> int:
    """A TTL flag's value in whole seconds; 0 when the flag was not given.

    Written as a duration (``1h``, ``1h30m``, ``90s``: the SDK's duration syntax, as in the
    configuration files) or as a number of seconds (``3600``), so every TTL flag reads the same.
    The error names the flag and says why the value is refused.
    """
    if text is None:
        return 0
    try:
        ttl = parse_duration(text)
    except InvalidArgumentError as error:
        raise AdminError(f"invalid {flag}: {error}") from None
    seconds, fraction = divmod(ttl, timedelta(seconds=1))
    if fraction:
        raise AdminError(f"invalid {flag}: {text!r} is not a whole number of seconds")
    if not minimum <= seconds <= MAX_TTL_SECONDS:
        raise AdminError(
            f"invalid {flag}: {text!r} is out of range ({minimum}s to {MAX_TTL_SECONDS}s)"
        )
    return int(seconds)


def parse_bool(text: str) -> bool:
    """``true`` or ``false`` (any case), for flags such as ``-banned``; argparse type."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# -- the connection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminClient:
    """The service stubs of one admin socket connection.

    Every stub bounds its calls with ``timeout`` (:data:`CALL_TIMEOUT` unless given); wrap
    calls in :meth:`errors` to turn failures into :class:`AdminError`.
    """

    socket_path: Path
    channel: Channel
    timeout: float = CALL_TIMEOUT

    @property
    def agent(self) -> agent_pb.AgentStub:
        return agent_pb.AgentStub(self.channel, timeout=self.timeout)

    @property
    def bundle(self) -> bundle_pb.BundleStub:
        return bundle_pb.BundleStub(self.channel, timeout=self.timeout)

    @property
    def entry(self) -> entry_pb.EntryStub:
        return entry_pb.EntryStub(self.channel, timeout=self.timeout)

    @property
    def svid(self) -> svid_pb.SvidStub:
        return svid_pb.SvidStub(self.channel, timeout=self.timeout)

    @property
    def health(self) -> health_pb.HealthStub:
        return health_pb.HealthStub(self.channel, timeout=self.timeout)

    async def call(self, method: str, request: Any, decode: Callable[[bytes], _M]) -> _M:
        """Call ``method`` (its gRPC path) with a codec ``request``; the reply as ``decode``
        (a codec's ``decode_<Message>``) reads it."""
        return await call_unary(self.channel, method, request, decode, call_timeout=self.timeout)

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn a failed call into an :class:`AdminError` with one clear line."""
        try:
            yield
        except GRPCError as error:
            raise AdminError(_grpc_error_line(error)) from None
        except TimeoutError:
            raise AdminError(
                f"the server at {self.socket_path} did not answer within {self.timeout:g}s"
            ) from None
        except (OSError, ProtocolError, StreamTerminatedError) as error:
            raise AdminError(
                f"cannot reach the server at {self.socket_path}: {_os_reason(error)}"
            ) from None


@contextlib.asynccontextmanager
async def connect(
    socket_path: Path, *, call_timeout: float = CALL_TIMEOUT
) -> AsyncIterator[AdminClient]:
    """A client of the admin socket at ``socket_path``, closed on exit.

    A missing socket fails here, before any call, with the path and the reason; the
    connection itself is made by the first call.
    """
    path = Path(socket_path)
    await asyncio.to_thread(_check_socket, path)
    channel = Channel(path=str(path))
    try:
        yield AdminClient(socket_path=path, channel=channel, timeout=call_timeout)
    finally:
        channel.close()


def _check_socket(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AdminError(f"cannot reach the server at {path}: no such socket") from None
    except OSError as error:
        raise AdminError(f"cannot reach the server at {path}: {_os_reason(error)}") from None
    if not stat.S_ISSOCK(mode):
        raise AdminError(f"cannot reach the server at {path}: not a unix socket")


def _grpc_error_line(error: GRPCError) -> str:
    message = " ".join((error.message or "").split())
    if message:
        return message
    return f"the server answered {error.status.name.lower().replace('_', ' ')}"


def _os_reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    text = str(error).strip()
    return text.lower() if text else type(error).__name__


def status_line(status: pb.Status | types_wire.Status) -> str:
    """A batch item's status as ``<code name>: <message>`` (``already exists: ...``)."""
    try:
        name = Status(status.code).name.lower().replace("_", " ")
    except ValueError:
        name = f"code {status.code}"
    return f"{name}: {printable(status.message)}" if status.message else name


# -- rendering --------------------------------------------------------------------------------


PROTO_FIELD_NAMES: dict[str, str] = {
    "x509_svid_serial_number": "x509svid_serial_number",
    "x509_svid_expires_at": "x509svid_expires_at",
}
"""Python field names that differ from the ``.proto`` names they come from (betterproto
splits ``x509svid`` into ``x509_svid``); JSON output uses the published names."""


def _proto_names(value: Any) -> Any:
    if isinstance(value, dict):
        return {PROTO_FIELD_NAMES.get(key, key): _proto_names(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_proto_names(item) for item in value]
    return value


def message_json(message: betterproto.Message) -> dict[str, Any]:
    """``message`` in protobuf's JSON mapping with the ``.proto`` field names; every field is
    present (defaults included), 64-bit integers are strings and bytes are base64, as
    ``protojson`` writes them."""
    document: dict[str, Any] = _proto_names(
        message.to_dict(
            casing=betterproto.Casing.SNAKE,  # type: ignore[arg-type]
            include_default_values=True,
        )
    )
    return document


def print_json(write: Any, document: object) -> None:
    """Write ``document`` as indented JSON through ``write`` (a line writer)."""
    write(dumps_indented(document))


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 entry``, ``2 entries``: the count and the right form of the noun."""
    noun = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count} {noun}"


def format_timestamp(seconds: int) -> str:
    """Seconds since the epoch as an ISO 8601 UTC time; ``never`` for 0."""
    if not seconds:
        return "never"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_blocks(rows: Iterable[tuple[str, str]]) -> list[str]:
    """``Label            : value`` lines, labels padded like SPIRE's CLI; control characters
    in a value (a newline included) are shown as escapes, so a value is always one line."""
    return [f"{label.ljust(_LABEL_WIDTH)}: {printable(value)}" for label, value in rows]


def spiffe_id_text(message: pb.Spiffeid | types_wire.SPIFFEID | None) -> str:
    """A wire SPIFFE ID as ``spiffe://td/path`` (empty when unset)."""
    if message is None or not message.trust_domain:
        return ""
    return f"spiffe://{message.trust_domain}{message.path}"


def describe_entry(entry: pb.Entry | types_wire.Entry) -> list[str]:
    """An entry as SPIRE prints it: ``Entry ID : ...`` and one line per selector, DNS name and
    federated trust domain; flags that are off are left out."""
    rows: list[tuple[str, str]] = [
        ("Entry ID", entry.id),
        ("SPIFFE ID", spiffe_id_text(entry.spiffe_id)),
        ("Parent ID", spiffe_id_text(entry.parent_id)),
        ("Revision", str(entry.revision_number)),
    ]
    if entry.downstream:
        rows.append(("Downstream", "true"))
    rows.append(("X509-SVID TTL", str(entry.x509_svid_ttl) if entry.x509_svid_ttl else "default"))
    rows.append(("JWT-SVID TTL", str(entry.jwt_svid_ttl) if entry.jwt_svid_ttl else "default"))
    if entry.expires_at:
        rows.append(("Expiration time", format_timestamp(entry.expires_at)))
    rows.extend(("Selector", f"{s.type}:{s.value}") for s in entry.selectors)
    rows.extend(("FederatesWith", name) for name in entry.federates_with)
    rows.extend(("DNS name", name) for name in entry.dns_names)
    if entry.admin:
        rows.append(("Admin", "true"))
    if entry.store_svid:
        rows.append(("StoreSvid", "true"))
    if entry.hint:
        rows.append(("Hint", entry.hint))
    if entry.created_at:
        rows.append(("Created at", format_timestamp(entry.created_at)))
    return render_blocks(rows)


def write_blocks(write: Any, blocks: Sequence[list[str]]) -> None:
    """Write text blocks separated by one blank line."""
    for index, block in enumerate(blocks):
        if index:
            write("")
        for line in block:
            write(line)
