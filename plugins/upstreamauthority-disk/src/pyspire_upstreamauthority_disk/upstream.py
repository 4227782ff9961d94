"""The ``disk`` upstream authority, as SPIRE's ``upstreamauthority/disk``.

The upstream CA's certificate (with its intermediates), its private key and, optionally, the
roots are read from PEM files and checked as SPIRE checks them (:mod:`pyspire_sdk.upstream_ca`):
the key matches the first certificate; without a bundle file that certificate must be alone
and self-signed, and is the root; with one, the certificates verify against the bundle's roots
and follow every minted CA in its chain. The key file must grant nothing to group and others.

The files are read again, in a worker thread, before each mint (SPIRE reloads them on each
mint too), so an operator replaces the upstream CA by replacing the files; what changed is
parsed and checked again, and a set of files that does not load leaves the last good one in
use, with a warning. JWT keys are not published upstream (``publish_jwt_key`` returns ``[]``)
and the roots never change by subscription (the subscription ends at once): the server follows
the roots through the answers to its mints.
"""

from __future__ import annotations

__all__ = ["DiskUpstreamAuthority"]

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pyspire_sdk.bundle import JwtAuthority
from pyspire_sdk.errors import ConfigError, ConfigIssue, PluginError
from pyspire_sdk.files import LooseFileModeError, read_private_file
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.upstream_authority import UpstreamBundle, UpstreamX509CA
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.upstream_ca import PemSources, UpstreamCa, load_upstream_ca
from pyspire_upstreamauthority_disk.config import DiskUpstreamConfig


@dataclass(frozen=True)
class _Files:
    """The three files' contents as last read (``bundle`` None when not configured)."""

    key: bytes
    certificates: bytes
    bundle: bytes | None


def _unreadable(field: str, path: Path, error: OSError) -> ConfigError:
    if isinstance(error, LooseFileModeError):
        return ConfigError([ConfigIssue(field, str(error))])
    reason = error.strerror or str(error)
    return ConfigError([ConfigIssue(field, f"{path}: cannot read the file: {reason}")])


def _read(field: str, path: Path, *, private: bool = False) -> bytes:
    try:
        return read_private_file(path) if private else path.read_bytes()
    except OSError as error:
        raise _unreadable(field, path, error) from None


def _read_files(config: DiskUpstreamConfig) -> _Files:
    """Blocking: the files' contents; ConfigError naming the setting of a file that cannot be
    read or (the key) is open to group or others."""
    bundle = config.bundle_file_path
    return _Files(
        key=_read("key_file_path", config.key_file_path, private=True),
        certificates=_read("cert_file_path", config.cert_file_path),
        bundle=None if bundle is None else _read("bundle_file_path", bundle),
    )


def _load(
    files: _Files, config: DiskUpstreamConfig, trust_domain: TrustDomain, now: datetime
) -> UpstreamCa:
    """Blocking (parsing, chain verification): the upstream CA the files describe."""
    sources = PemSources(
        key_field="key_file_path",
        key_source=str(config.key_file_path),
        certificates_field="cert_file_path",
        certificates_source=str(config.cert_file_path),
        bundle_field="bundle_file_path",
        bundle_source=str(config.bundle_file_path or ""),
    )
    return load_upstream_ca(
        key_pem=files.key,
        certificates_pem=files.certificates,
        bundle_pem=files.bundle,
        trust_domain=trust_domain,
        now=now,
        sources=sources,
    )


def _read_and_load(
    config: DiskUpstreamConfig, trust_domain: TrustDomain, now: datetime
) -> tuple[_Files, UpstreamCa]:
    files = _read_files(config)
    return files, _load(files, config, trust_domain, now)


@dataclass(frozen=True)
class _Configured:
    config: DiskUpstreamConfig
    host: HostServices


class DiskUpstreamAuthority:
    """SPIRE's ``disk`` upstream authority; see the module documentation."""

    def __init__(self) -> None:
        self._configured: _Configured | None = None
        self._loaded: tuple[_Files, UpstreamCa] | None = None
        self._reloading = asyncio.Lock()

    async def configure(self, config: DiskUpstreamConfig, host: HostServices) -> None:
        """Read and check the files; ConfigError naming the setting and the reason."""
        self._loaded = await asyncio.to_thread(
            _read_and_load, config, host.trust_domain, host.clock.now()
        )
        self._configured = _Configured(config, host)

    async def close(self) -> None:
        self._loaded = None

    def _require(self) -> tuple[_Configured, tuple[_Files, UpstreamCa]]:
        if self._configured is None or self._loaded is None:
            raise PluginError("the disk upstream authority is not configured")
        return self._configured, self._loaded

    async def _current(self) -> UpstreamCa:
        """The upstream CA from the files as they are now, or the last good one when they
        changed into something that does not load."""
        async with self._reloading:
            configured, (files, ca) = self._require()
            config, host = configured.config, configured.host
            try:
                now_files = await asyncio.to_thread(_read_files, config)
                if now_files != files:
                    ca = await asyncio.to_thread(
                        _load, now_files, config, host.trust_domain, host.clock.now()
                    )
                    self._loaded = (now_files, ca)
                    host.logger.info(
                        "upstream CA files reloaded",
                        upstream_ca=ca.certificate.subject.rfc4514_string(),
                        not_after=ca.certificate.not_valid_after_utc.isoformat(),
                    )
            except ConfigError as error:
                host.logger.warning(
                    "upstream CA files not reloaded: the last good ones stay in use",
                    error=str(error),
                )
            return ca

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        """Sign the server's CA CSR with the upstream CA (SPIRE's rules, see
        :meth:`pyspire_sdk.upstream_ca.UpstreamCa.mint`)."""
        ca = await self._current()
        now = self._require()[0].host.clock.now()
        return await asyncio.to_thread(ca.mint, csr_der, preferred_ttl, now)

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        """Files hold no JWT keys: the server keeps its own in the bundle (SPIRE answers
        Unimplemented here)."""
        return []

    async def subscribe_to_bundle_updates(self) -> AsyncIterator[UpstreamBundle]:
        """No updates: the roots are what each mint returns."""
        updates: tuple[UpstreamBundle, ...] = ()  # an async generator that ends at once
        for update in updates:
            yield update
