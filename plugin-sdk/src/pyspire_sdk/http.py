"""HTTP requests for plugins that call metadata services and cloud APIs.

Every call is bounded: a total timeout and a connect timeout, a cap on the response body (a
hostile or broken endpoint cannot make the process hold more), no redirects followed (a
metadata service that redirects is not the metadata service) and no proxy taken from the
environment. HTTPS verifies the peer against the system's trust store, or against the CA
certificates of ``ca_file`` when one is given; ``client_certificate`` and ``client_key`` present
a certificate to the peer, ``check_hostname=False`` verifies the peer's chain but not the name
it was reached by (a kubelet reached at 127.0.0.1), and ``verify=False`` skips the peer's
verification altogether where an operator asked for that. With ``unix_socket`` every request
goes to a local daemon's socket (the Docker Engine API) instead of the network; the URL's host
is then only a name.

Failures raise :class:`HttpError` (an :class:`~pyspire_sdk.errors.UnavailableError`: retrying
may succeed) whose message names the method and the URL without its query string or user
information, which may carry secrets; headers and bodies are never part of a message.

aiohttp is imported when the first request is made, not when this module is imported, so a
process that loads a plugin without using it does not pay for the import.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "HttpClient",
    "HttpError",
    "HttpResponse",
    "HttpStatusError",
    "redacted_url",
]

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pyspire_sdk.errors import InvalidArgumentError, UnavailableError

if TYPE_CHECKING:
    import aiohttp

DEFAULT_TIMEOUT = 10.0
"""Seconds a whole request (connect, send, read the body) may take."""

DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds to establish the connection (TLS handshake included)."""

DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
"""The largest response body read; a longer one fails the request."""

_READ_CHUNK = 64 * 1024


def redacted_url(url: str) -> str:
    """``url`` as errors and logs may show it: scheme, host, port and path only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "(malformed url)"
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


class HttpError(UnavailableError):
    """A request failed: no connection, a timeout, a body too large or not what was expected.

    ``url`` is the redacted URL (see :func:`redacted_url`).
    """

    def __init__(self, method: str, url: str, reason: str) -> None:
        self.method = method
        self.url = redacted_url(url)
        self.reason = reason
        super().__init__(f"{method} {self.url}: {reason}")


class HttpStatusError(HttpError):
    """The endpoint answered with a status other than 2xx; ``status`` holds it."""

    def __init__(self, method: str, url: str, status: int, phrase: str) -> None:
        self.status = status
        super().__init__(method, url, f"HTTP {status} {phrase}".rstrip())


@dataclass(frozen=True)
class HttpResponse:
    """A complete response: status, headers (names lower-case) and the whole body."""

    method: str
    url: str
    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    def json(self) -> Any:
        """The body parsed as JSON; :class:`HttpError` when it is not."""
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            raise HttpError(self.method, self.url, "the response is not JSON") from None

    def json_object(self) -> dict[str, Any]:
        """The body parsed as a JSON object; :class:`HttpError` when it is anything else."""
        value = self.json()
        if not isinstance(value, dict):
            raise HttpError(self.method, self.url, "the response is not a JSON object")
        return value


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        raise InvalidArgumentError(f"url {redacted_url(url)!r} is malformed: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError(
            f"url {redacted_url(url)!r} must be an absolute http or https URL"
        )


class HttpClient:
    """A pool of connections for one plugin, with the bounds above.

    Create it in ``configure`` and close it in ``close`` (or use it as an async context
    manager). It may be shared by concurrent requests.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        ca_file: Path | None = None,
        client_certificate: Path | None = None,
        client_key: Path | None = None,
        verify: bool = True,
        check_hostname: bool = True,
        unix_socket: Path | None = None,
    ) -> None:
        if (client_certificate is None) != (client_key is None):
            raise InvalidArgumentError("client_certificate and client_key go together")
        if timeout <= 0 or connect_timeout <= 0:
            raise InvalidArgumentError("timeout and connect_timeout must be positive")
        if max_response_bytes <= 0:
            raise InvalidArgumentError("max_response_bytes must be positive")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_response_bytes = max_response_bytes
        self.ca_file = ca_file
        self.client_certificate = client_certificate
        self.client_key = client_key
        self.verify = verify
        self.check_hostname = check_hostname
        self.unix_socket = unix_socket
        self._session: aiohttp.ClientSession | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; later requests fail."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def open(self) -> None:
        """Prepare the connection pool now (loading ``ca_file`` and the client certificate),
        so a configuration that cannot work fails in ``configure`` rather than at the first
        request. Raises :class:`~pyspire_sdk.errors.UnavailableError` when one of them cannot
        be loaded."""
        await self._open()

    async def _open(self) -> aiohttp.ClientSession:
        async with self._opening:
            if self._closed:
                raise UnavailableError("the http client is closed")
            if self._session is None:
                import aiohttp

                connector: aiohttp.BaseConnector
                if self.unix_socket is not None:
                    connector = aiohttp.UnixConnector(path=str(self.unix_socket))
                else:
                    tls = await asyncio.to_thread(
                        _tls_context,
                        self.ca_file,
                        self.client_certificate,
                        self.client_key,
                        self.verify,
                        self.check_hostname,
                    )
                    connector = aiohttp.TCPConnector(ssl=tls)
                self._session = aiohttp.ClientSession(
                    connector=connector,
                    timeout=aiohttp.ClientTimeout(
                        total=self.timeout, sock_connect=self.connect_timeout
                    ),
                    trust_env=False,
                    auto_decompress=True,
                )
            return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        expect_ok: bool = True,
    ) -> HttpResponse:
        """Send one request and read the whole response.

        ``params`` are added to the query string, ``json_body`` or ``form`` become the body.
        With ``expect_ok`` (the default) a status other than 2xx raises
        :class:`HttpStatusError`. Raises :class:`HttpError` for every other failure and
        :class:`~pyspire_sdk.errors.InvalidArgumentError` for a URL that is not absolute
        http(s).
        """
        _check_url(url)
        session = await self._open()
        import aiohttp

        try:
            async with session.request(
                method,
                url,
                headers=dict(headers or {}),
                params=dict(params or {}),
                json=json_body,
                data=dict(form) if form is not None else None,
                allow_redirects=False,
            ) as response:
                length = response.content_length
                if length is not None and length > self.max_response_bytes:
                    raise HttpError(
                        method, url, f"the response is larger than {self.max_response_bytes} bytes"
                    )
                body = await self._read(response, method, url)
                answer = HttpResponse(
                    method=method,
                    url=url,
                    status=response.status,
                    headers={name.lower(): value for name, value in response.headers.items()},
                    body=body,
                )
                if expect_ok and not 200 <= response.status < 300:
                    raise HttpStatusError(method, url, response.status, response.reason or "")
                return answer
        except TimeoutError:
            raise HttpError(method, url, f"timed out after {self.timeout:g}s") from None
        except aiohttp.ClientSSLError as error:
            raise HttpError(method, url, f"tls failed: {_ssl_reason(error)}") from None
        except aiohttp.ClientError as error:
            raise HttpError(method, url, _client_reason(error)) from None

    async def _read(self, response: aiohttp.ClientResponse, method: str, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await response.content.read(_READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_response_bytes:
                raise HttpError(
                    method, url, f"the response is larger than {self.max_response_bytes} bytes"
                )
            chunks.append(chunk)

    async def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """``GET url``; a status other than 2xx raises :class:`HttpStatusError`."""
        return await self.request("GET", url, headers=headers, params=params)

    async def post(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """``POST url`` with a JSON or form body; a status other than 2xx raises
        :class:`HttpStatusError`."""
        return await self.request("POST", url, headers=headers, json_body=json_body, form=form)


def _tls_context(
    ca_file: Path | None,
    client_certificate: Path | None,
    client_key: Path | None,
    verify: bool,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """The context HTTPS requests use (file I/O: built off the event loop)."""
    try:
        if not verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca_file is None:
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(cafile=str(ca_file))
        if verify and not check_hostname:
            context.check_hostname = False
    except (OSError, ssl.SSLError) as error:
        raise UnavailableError(f"ca_file {str(ca_file)!r} cannot be loaded: {error}") from None
    if client_certificate is not None and client_key is not None:
        try:
            context.load_cert_chain(client_certificate, client_key)
        except (OSError, ssl.SSLError) as error:
            raise UnavailableError(
                f"client_certificate {str(client_certificate)!r} cannot be loaded: "
                f"{getattr(error, 'strerror', None) or error}"
            ) from None
    return context


def _ssl_reason(error: BaseException) -> str:
    cause = getattr(error, "certificate_error", None) or getattr(error, "os_error", None) or error
    reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None)
    return str(reason or cause)


def _client_reason(error: BaseException) -> str:
    """What went wrong, without the URL aiohttp puts in some messages (it may carry a query)."""
    import aiohttp

    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect: {error.os_error.strerror or error.os_error}"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the response body is malformed"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"malformed response (HTTP {error.status})"
    return type(error).__name__
