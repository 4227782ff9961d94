"""A small client of the SPIFFE Workload API for the agent's ``api`` and ``healthcheck`` commands.

It gives those commands one way to:

- take the common flags ``-socketPath`` and ``-timeout`` (:func:`add_workload_flags`) and find
  the endpoint: the flag when given, else ``SPIFFE_ENDPOINT_SOCKET`` (a ``unix:///path`` or
  ``tcp://IP:port`` address, validated as the SPIFFE Workload Endpoint standard says), else
  :data:`DEFAULT_SOCKET_PATH` (:func:`resolve_endpoint`);
- call the five ``SpiffeWorkloadAPI`` methods, every call carrying the
  ``workload.spiffe.io: true`` metadata the agent requires and, except the endless
  :meth:`WorkloadClient.watch_x509_svids`, bounded by the timeout so a stuck agent never hangs
  a shell script;
- turn everything that can go wrong (no socket, a refused connection, a gRPC status, silence)
  into one :class:`WorkloadApiError` whose message is a single lower-case line, such as
  ``no identity issued (permission denied)`` or
  ``cannot reach the agent at /tmp/pyspire-agent/public/api.sock: no such socket``.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_TIMEOUT",
    "ENDPOINT_ENV",
    "SECURITY_HEADER",
    "Endpoint",
    "WorkloadApiError",
    "WorkloadClient",
    "add_workload_flags",
    "connect",
    "parse_endpoint_address",
    "parse_timeout",
    "resolve_endpoint",
]

import argparse
import asyncio
import contextlib
import ipaddress
import stat
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from pyspire.cli.flags import add_flag
from pyspire.proto.gen import workload as pb
from pyspire_sdk import format_duration, parse_duration
from pyspire_sdk.errors import InvalidArgumentError, PyspireError

DEFAULT_SOCKET_PATH = Path("/tmp/pyspire-agent/public/api.sock")  # noqa: S108 - SPIRE's layout
"""Where ``pyspire-agent run`` serves the Workload API unless configured otherwise."""

DEFAULT_TIMEOUT = timedelta(seconds=5)
"""How long one call may take (connecting included) unless ``-timeout`` says otherwise."""

ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"
"""The environment variable naming the Workload API endpoint when ``-socketPath`` is absent."""

SECURITY_HEADER = {"workload.spiffe.io": "true"}
"""The metadata every Workload API call must carry; the agent refuses calls without it."""

_T = TypeVar("_T")


class WorkloadApiError(PyspireError):
    """A Workload API command failed; the message is the one line the operator sees.

    ``status`` is the gRPC status the agent answered with, or ``None`` when it did not answer
    (unreachable, timed out); ``reason`` is the agent's own message, when it gave one.
    """

    def __init__(self, message: str, *, status: Status | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Endpoint:
    """Where the Workload API is: a unix socket ``path``, or a TCP ``host`` and ``port``."""

    path: Path | None = None
    host: str | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.host is None or self.port is None):
            raise ValueError("an endpoint is either a socket path or a host and a port")

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        host = f"[{self.host}]" if self.host is not None and ":" in self.host else self.host
        return f"{host}:{self.port}"

    def channel(self) -> Channel:
        """A gRPC channel to this endpoint (plaintext: the Workload API never uses TLS)."""
        if self.path is not None:
            return Channel(path=str(self.path))
        return Channel(self.host, self.port)


def parse_endpoint_address(text: str) -> Endpoint:
    """An endpoint address as ``SPIFFE_ENDPOINT_SOCKET`` writes it.

    ``unix:///absolute/path`` (or ``unix:/absolute/path``) names a socket; ``tcp://IP:port``
    names a TCP endpoint, whose host must be an IP address. Anything else (a bare path, an
    authority in a unix address, a path, query, fragment or user in a TCP address) is refused
    with :class:`WorkloadApiError` saying why, as the Workload Endpoint standard requires.
    """
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise _bad_address(text, str(error).lower()) from None
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise _bad_address(text, "a query or fragment is not allowed")
    if parts.scheme == "unix":
        if parts.netloc:
            raise _bad_address(text, "a unix address has no authority, write unix:///path")
        if not parts.path.startswith("/"):
            raise _bad_address(text, "a unix address needs an absolute path")
        return Endpoint(path=Path(parts.path))
    if parts.scheme == "tcp":
        if not parts.netloc:
            raise _bad_address(text, "a tcp address needs an IP address and a port")
        if parts.username is not None or parts.password is not None:
            raise _bad_address(text, "a tcp address has no user information")
        if parts.path:
            raise _bad_address(text, "a tcp address has no path")
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise _bad_address(text, f"the host {host!r} is not an IP address") from None
        if port is None:
            raise _bad_address(text, "a tcp address needs a port")
        return Endpoint(host=host, port=port)
    if not parts.scheme:
        raise _bad_address(text, "expected unix:///path or tcp://IP:port")
    raise _bad_address(text, f"unsupported scheme {parts.scheme!r}: use unix or tcp")


def _bad_address(text: str, reason: str) -> WorkloadApiError:
    return WorkloadApiError(f"invalid {ENDPOINT_ENV} {text!r}: {reason}")


def resolve_endpoint(socket_path: Path | None, environ: Mapping[str, str]) -> Endpoint:
    """The endpoint to use: ``-socketPath`` when given, else ``SPIFFE_ENDPOINT_SOCKET`` from
    ``environ`` when set (and valid), else :data:`DEFAULT_SOCKET_PATH`."""
    if socket_path is not None:
        return Endpoint(path=Path(socket_path))
    address = environ.get(ENDPOINT_ENV, "")
    if address:
        return parse_endpoint_address(address)
    return Endpoint(path=DEFAULT_SOCKET_PATH)


def parse_timeout(text: str) -> timedelta:
    """``-timeout`` as a duration (``5s``, ``500ms``, ``1m``); argparse type."""
    try:
        value = parse_duration(text)
    except InvalidArgumentError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be positive")
    return value


def add_workload_flags(
    parser: argparse.ArgumentParser, *, default: object = None, timeout: bool = True
) -> None:
    """Add ``-socketPath`` and, unless ``timeout`` is false, ``-timeout``.

    ``default`` replaces both defaults when given; passing :data:`argparse.SUPPRESS` lets a
    nested parser accept the flags without overwriting values its parent already parsed.
    """
    add_flag(
        parser,
        "socketPath",
        metavar="PATH",
        type=Path,
        default=default,
        help=(
            f"path of the Workload API socket (default: ${ENDPOINT_ENV} when set, "
            f"else {DEFAULT_SOCKET_PATH})"
        ),
    )
    if not timeout:
        return
    add_flag(
        parser,
        "timeout",
        metavar="DURATION",
        type=parse_timeout,
        default=DEFAULT_TIMEOUT if default is None else default,
        help=f"how long to wait for an answer (default: {format_duration(DEFAULT_TIMEOUT)})",
    )


# -- the client -------------------------------------------------------------------------------


class WorkloadClient:
    """The ``SpiffeWorkloadAPI`` calls of one connection, each mapped to :class:`WorkloadApiError`.

    One-shot fetches return the first message of their stream and then cancel it, as a
    workload taking a snapshot of its identity does.
    """

    def __init__(self, endpoint: Endpoint, channel: Channel, timeout: timedelta) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        seconds = timeout.total_seconds()
        self._stub = pb.SpiffeWorkloadApiStub(channel, timeout=seconds, metadata=SECURITY_HEADER)
        self._endless = pb.SpiffeWorkloadApiStub(channel, metadata=SECURITY_HEADER)

    async def fetch_x509_svid(self) -> pb.X509SvidResponse:
        """The caller's X509-SVIDs, their bundle and the federated bundles, as sent now."""
        with self.errors():
            return await self._first(self._stub.fetch_x509_svid(pb.X509SvidRequest()))

    async def fetch_x509_bundles(self) -> pb.X509BundlesResponse:
        """The X.509 bundles the caller may see, keyed by trust domain SPIFFE ID."""
        with self.errors():
            return await self._first(self._stub.fetch_x509_bundles(pb.X509BundlesRequest()))

    async def fetch_jwt_svid(
        self, audience: Sequence[str], spiffe_id: str = ""
    ) -> pb.JwtsvidResponse:
        """JWT-SVIDs for ``audience``: of every identity of the caller, or only ``spiffe_id``."""
        request = pb.JwtsvidRequest(audience=list(audience), spiffe_id=spiffe_id)
        with self.errors():
            return await self._stub.fetch_jwtsvid(request)

    async def fetch_jwt_bundles(self) -> pb.JwtBundlesResponse:
        """The JWT bundles (JWKS documents) the caller may see, keyed by trust domain."""
        with self.errors():
            return await self._first(self._stub.fetch_jwt_bundles(pb.JwtBundlesRequest()))

    async def validate_jwt_svid(self, audience: str, token: str) -> pb.ValidateJwtsvidResponse:
        """The agent's verdict on ``token`` for ``audience``: its SPIFFE ID and claims, or a
        :class:`WorkloadApiError` with status INVALID_ARGUMENT and the reason."""
        request = pb.ValidateJwtsvidRequest(audience=audience, svid=token)
        with self.errors():
            return await self._stub.validate_jwtsvid(request)

    async def watch_x509_svids(self) -> AsyncIterator[pb.X509SvidResponse]:
        """Every X509-SVID update the agent sends, for as long as the stream lasts (no
        timeout); a stream the agent ends, even with OK, raises :class:`WorkloadApiError`."""
        with self.errors():
            stream = self._endless.fetch_x509_svid(pb.X509SvidRequest())
            try:
                async for response in stream:
                    yield response
            finally:
                await _close(stream)
            raise WorkloadApiError(
                f"the agent at {self.endpoint} ended the stream", status=Status.OK
            )

    async def _first(self, stream: AsyncIterator[_T]) -> _T:
        try:
            async for message in stream:
                return message
        finally:
            await _close(stream)
        raise WorkloadApiError(f"the agent at {self.endpoint} sent no answer", status=Status.OK)

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn a failed call into a :class:`WorkloadApiError` with one clear line."""
        try:
            yield
        except GRPCError as error:
            if error.status is Status.DEADLINE_EXCEEDED:
                raise self._timed_out() from None
            reason = " ".join((error.message or "").split())
            name = _status_name(error.status)
            line = f"{reason} ({name})" if reason else f"the agent answered {name}"
            raise WorkloadApiError(line, status=error.status, reason=reason) from None
        except TimeoutError:
            raise self._timed_out() from None
        except (OSError, ProtocolError, StreamTerminatedError) as error:
            raise WorkloadApiError(
                f"cannot reach the agent at {self.endpoint}: {_os_reason(error)}"
            ) from None

    def _timed_out(self) -> WorkloadApiError:
        return WorkloadApiError(
            f"the agent at {self.endpoint} did not answer within {format_duration(self.timeout)}"
        )


@contextlib.asynccontextmanager
async def connect(
    endpoint: Endpoint, call_timeout: timedelta = DEFAULT_TIMEOUT
) -> AsyncIterator[WorkloadClient]:
    """A client of the Workload API at ``endpoint`` whose calls each take at most
    ``call_timeout``, closed on exit.

    A missing socket fails here, before any call, with the path and the reason; the
    connection itself is made by the first call.
    """
    if endpoint.path is not None:
        await asyncio.to_thread(_check_socket, endpoint.path)
    channel = endpoint.channel()
    try:
        yield WorkloadClient(endpoint, channel, call_timeout)
    finally:
        channel.close()


async def _close(stream: AsyncIterator[object]) -> None:
    """Cancel a call whose stream is no longer read (an async generator's ``aclose``)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def _check_socket(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise WorkloadApiError(f"cannot reach the agent at {path}: no such socket") from None
    except OSError as error:
        raise WorkloadApiError(f"cannot reach the agent at {path}: {_os_reason(error)}") from None
    if not stat.S_ISSOCK(mode):
        raise WorkloadApiError(f"cannot reach the agent at {path}: not a unix socket")


def _status_name(status: Status) -> str:
    return status.name.lower().replace("_", " ")


def _os_reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    text = str(error).strip()
    return text.lower() if text else type(error).__name__
