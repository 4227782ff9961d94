"""The TLS an HTTPS bundle endpoint serves with, for either profile of the SPIFFE federation
standard.

Python's ``ssl`` cannot swap the certificate of a context, so each change builds a new context
and the listening context's SNI callback moves every new connection onto the newest one
(connections already open keep theirs). ``https_spiffe`` serves the server's own X509-SVID,
handed over at every rotation; ``https_web`` serves a certificate and key read from PEM files,
read again every ``file_sync_interval`` and swapped in when they changed. A changed pair that
does not load (a key that does not match, a half-written file) is logged and the pair in use
kept.
"""

from __future__ import annotations

__all__ = ["EndpointTls", "ServingFiles"]

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire.config.federation import ServingCertFile
from pyspire.transport.tls import build_web_server_context
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PyspireError

_log = structlog.get_logger("pyspire.server.federation")


class EndpointTls:
    """The listening context of the bundle endpoint, serving the newest certificate given."""

    def __init__(self) -> None:
        self._current: ssl.SSLContext | None = None
        self.listening = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.listening.minimum_version = ssl.TLSVersion.TLSv1_2
        self.listening.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if self._current is not None:
            connection.context = self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def use(self, context: ssl.SSLContext) -> None:
        """Serve new connections with ``context`` from now on."""
        self._current = context

    async def use_svid(self, chain_der: Sequence[bytes], private_key: PrivateKeyTypes) -> None:
        """Serve the X509-SVID ``chain_der`` (leaf first) from now on (``https_spiffe``)."""
        self.use(await asyncio.to_thread(build_web_server_context, chain_der, private_key))


def _context_from_files(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert_path, key_path)
    return context


def _read_pair(cert_path: Path, key_path: Path) -> tuple[bytes, bytes]:
    return cert_path.read_bytes(), key_path.read_bytes()


class ServingFiles:
    """The ``https_web`` certificate and key files, loaded into an :class:`EndpointTls` and
    reloaded when their contents change."""

    def __init__(self, files: ServingCertFile, tls: EndpointTls, clock: Clock) -> None:
        self._files = files
        self._tls = tls
        self._clock = clock
        self._loaded: tuple[bytes, bytes] | None = None

    async def load(self) -> None:
        """Load the pair now; :class:`PyspireError` naming the setting when it cannot be."""
        files = self._files
        try:
            pair = await asyncio.to_thread(_read_pair, files.cert_file_path, files.key_file_path)
            context = await asyncio.to_thread(
                _context_from_files, files.cert_file_path, files.key_file_path
            )
        except (OSError, ssl.SSLError) as error:
            raise PyspireError(
                "federation.bundle_endpoint.profile.https_web.serving_cert_file: cannot load "
                f"{files.cert_file_path} and {files.key_file_path}: {error}"
            ) from None
        self._tls.use(context)
        self._loaded = pair

    async def _reload_if_changed(self) -> None:
        files = self._files
        try:
            pair = await asyncio.to_thread(_read_pair, files.cert_file_path, files.key_file_path)
            if pair == self._loaded:
                return
            await self.load()
        except (OSError, PyspireError) as error:
            _log.error(
                "bundle endpoint certificate not reloaded, the loaded one kept", error=str(error)
            )
            return
        _log.info("bundle endpoint certificate reloaded", cert_file=str(files.cert_file_path))

    async def run(self) -> None:
        """Check the files every ``file_sync_interval`` until cancelled."""
        interval = self._files.file_sync_interval.total_seconds()
        while True:
            await self._clock.sleep(interval)
            await self._reload_if_changed()
