"""The bundle endpoint: this server's trust bundle served over HTTPS as the SPIFFE Trust Domain
and Bundle standard says, for federated servers to fetch.

``GET /`` answers the bundle document (``application/json``): the X.509 and JWT authorities as
JWKs, the bundle's ``spiffe_sequence``, and ``spiffe_refresh_hint`` set to the configured
``refresh_hint`` (as SPIRE does). Other paths answer 404, other methods 405; no client
authentication is asked for. The document is encoded once per bundle version and served from
memory (the bundle feed holds the current bundle).
"""

from __future__ import annotations

__all__ = ["BundleEndpoint", "serve_bundle_endpoint"]

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Mapping
from http import HTTPStatus

from pyspire.config.federation import BundleEndpointConfig
from pyspire.server.federation.endpoint_tls import EndpointTls, ServingFiles
from pyspire.server.identity import ServerIdentity
from pyspire.tasks import Service
from pyspire.telemetry.handler import HttpResponse
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PyspireError

JSON = "application/json"


class BundleEndpoint:
    """Answers the endpoint's requests from the current bundle."""

    def __init__(self, current: Callable[[], Bundle | None], refresh_hint: int) -> None:
        self._current = current
        self._refresh_hint = refresh_hint
        self._encoded: tuple[Bundle, bytes] | None = None

    def document(self) -> bytes | None:
        """The bundle document as served, None before the bundle is loaded."""
        bundle = self._current()
        if bundle is None:
            return None
        if self._encoded is None or self._encoded[0] is not bundle:
            served = dataclasses.replace(bundle, refresh_hint=self._refresh_hint)
            body = json.dumps(served.to_spiffe_document(), separators=(",", ":")).encode()
            self._encoded = (bundle, body)
        return self._encoded[1]

    async def answer(self, path: str, _headers: Mapping[str, str]) -> HttpResponse:
        if path != "/":
            return HttpResponse(HTTPStatus.NOT_FOUND)
        body = self.document()
        if body is None:
            return HttpResponse(HTTPStatus.SERVICE_UNAVAILABLE)
        return HttpResponse(HTTPStatus.OK, body, JSON)


@dataclasses.dataclass(frozen=True)
class ServedEndpoint:
    """A listening bundle endpoint: its port and the background services it needs."""

    port: int
    services: dict[str, Service]


@contextlib.asynccontextmanager
async def serve_bundle_endpoint(
    config: BundleEndpointConfig,
    *,
    current: Callable[[], Bundle | None],
    identity: ServerIdentity,
    clock: Clock,
) -> AsyncIterator[ServedEndpoint]:
    """Serve the bundle endpoint ``config`` describes until the block ends.

    Raises :class:`PyspireError` naming the setting when the serving files cannot be loaded
    or the address cannot be bound.
    """
    from pyspire.telemetry.http import serve_http

    tls = EndpointTls()
    services: dict[str, Service] = {}
    files = config.serving_cert_file
    if files is None:
        await tls.use_svid(identity.svid.cert_chain, identity.key)
        identity.add_svid_listener(tls.use_svid)
    else:
        serving = ServingFiles(files, tls, clock)
        await serving.load()
        services["bundle-endpoint-files"] = serving.run
    endpoint = BundleEndpoint(current, int(config.refresh_hint.total_seconds()))
    async with contextlib.AsyncExitStack() as stack:
        try:
            server = await stack.enter_async_context(
                serve_http(
                    endpoint.answer,
                    config.address,
                    config.port,
                    name="federation.bundle_endpoint",
                    ssl_context=tls.listening,
                )
            )
        except OSError as error:
            raise PyspireError(
                f"federation.bundle_endpoint: cannot listen on {config.address}:{config.port}: "
                f"{error.strerror or error}"
            ) from None
        yield ServedEndpoint(port=server.port, services=services)
