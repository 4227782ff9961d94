"""The trust an agent starts from: the bundle it checks the server against on first contact.

Before its first attestation the agent has no SVID and no bundle of its own, so the operator
tells it how to trust the server (exactly one way, checked by
:meth:`pyspire.config.agent.AgentConfig.validate`):

- ``trust_bundle_path``: a file holding the bundle, PEM or SPIFFE bundle JSON per
  ``trust_bundle_format``;
- ``trust_bundle_url``: the same, downloaded over HTTPS and authenticated by the system's CAs
  (the server's own CA cannot vouch for the bundle that is meant to authenticate it);
- ``insecure_bootstrap``: no bundle; the first connection accepts whichever server answers, and
  the bundle that server hands out is pinned from then on. For tests only.

The bootstrap bundle is only used until the agent has attested; afterwards the agent keeps the
bundle the server gives it (see :mod:`pyspire.agent.storage`).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_FETCH_TIMEOUT",
    "MAX_BUNDLE_BYTES",
    "BootstrapTrust",
    "bootstrap_trust",
    "fetch_trust_bundle_url",
    "load_trust_bundle_file",
    "parse_trust_bundle",
]

import asyncio
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal
from urllib.parse import urlsplit

import structlog

from pyspire.config.agent import AgentConfig
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import ConfigError, ConfigIssue, InvalidArgumentError, UnavailableError
from pyspire_sdk.spiffeid import TrustDomain

BundleFormat = Literal["pem", "spiffe"]

DEFAULT_FETCH_TIMEOUT = 10.0
"""Seconds a download of ``trust_bundle_url`` may take, connection included."""

MAX_BUNDLE_BYTES = 1024 * 1024
"""The largest bootstrap bundle accepted; a bundle is a few kilobytes, so more is an error."""

_log = structlog.get_logger("pyspire.agent.bootstrap")


@dataclass(frozen=True)
class BootstrapTrust:
    """How to authenticate the server before the agent has a bundle of its own.

    ``bundle`` is None for insecure bootstrap: the first connection does not verify the server.
    ``source`` is the configuration key the trust came from, for logs and errors.
    """

    bundle: Bundle | None
    source: str

    @property
    def insecure(self) -> bool:
        """True when the server is not authenticated on first contact."""
        return self.bundle is None


def parse_trust_bundle(
    trust_domain: TrustDomain, data: bytes, bundle_format: BundleFormat
) -> Bundle:
    """A bundle of ``trust_domain`` from ``data`` in ``bundle_format`` (``pem`` or ``spiffe``).

    Raises :class:`InvalidArgumentError` when the data does not parse or holds no X.509
    authority: without one the server's certificate cannot be verified.
    """
    if bundle_format == "pem":
        bundle = Bundle.from_pem(trust_domain, data)
    elif bundle_format == "spiffe":
        bundle = Bundle.from_spiffe_json(trust_domain, data)
    else:
        raise InvalidArgumentError(
            f"unknown bundle format {bundle_format!r}, expected 'pem' or 'spiffe'"
        )
    if not bundle.x509_authorities:
        raise InvalidArgumentError("the bundle has no X.509 authority to verify the server with")
    return bundle


def _read_file(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_BUNDLE_BYTES + 1)
    if len(data) > MAX_BUNDLE_BYTES:
        raise InvalidArgumentError(f"the file is larger than {MAX_BUNDLE_BYTES} bytes")
    return data


async def load_trust_bundle_file(
    path: Path, trust_domain: TrustDomain, bundle_format: BundleFormat
) -> Bundle:
    """The bootstrap bundle in ``path``; :class:`ConfigError` naming ``trust_bundle_path`` and
    the reason when the file cannot be read or parsed."""
    try:
        data = await asyncio.to_thread(_read_file, path)
        return parse_trust_bundle(trust_domain, data, bundle_format)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            [ConfigIssue("trust_bundle_path", f"cannot read {str(path)!r}: {reason}")]
        ) from None
    except InvalidArgumentError as error:
        raise ConfigError(
            [
                ConfigIssue(
                    "trust_bundle_path",
                    f"{str(path)!r} is not a valid {bundle_format} bundle: {error}",
                )
            ]
        ) from None


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to other https URLs: a downgrade would lose the authentication
    the download depends on."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme != "https":
            raise urllib.error.URLError(f"refusing a redirect to a non-https URL {newurl!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]


def _download(url: str, timeout: float, context: ssl.SSLContext) -> bytes:
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), _HttpsOnlyRedirects()
    )
    request = urllib.request.Request(url, headers={"Accept": "application/json, */*"})  # noqa: S310 - https only, checked by the caller
    with opener.open(request, timeout=timeout) as response:
        status = response.status
        if status != 200:
            raise urllib.error.URLError(f"unexpected HTTP status {status}")
        data: bytes = response.read(MAX_BUNDLE_BYTES + 1)
    if len(data) > MAX_BUNDLE_BYTES:
        raise urllib.error.URLError(f"the response is larger than {MAX_BUNDLE_BYTES} bytes")
    return data


async def fetch_trust_bundle_url(
    url: str,
    trust_domain: TrustDomain,
    bundle_format: BundleFormat,
    *,
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
    context: ssl.SSLContext | None = None,
) -> Bundle:
    """Download the bootstrap bundle from ``url`` (https only) within ``fetch_timeout`` seconds.

    The download is authenticated by ``context``, by default one trusting the system's CAs.
    Raises :class:`UnavailableError` naming ``trust_bundle_url`` when the download fails (it
    may work later) and :class:`ConfigError` when the URL is not https or what it serves is not
    a bundle.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise ConfigError(
            [ConfigIssue("trust_bundle_url", f"expected an https URL, found {url!r}")]
        )
    tls = context if context is not None else ssl.create_default_context()
    try:
        data = await asyncio.to_thread(_download, url, fetch_timeout, tls)
    except urllib.error.HTTPError as error:
        raise UnavailableError(
            f"trust_bundle_url: {url!r} answered HTTP {error.code} {error.reason}"
        ) from None
    except urllib.error.URLError as error:
        raise UnavailableError(f"trust_bundle_url: cannot fetch {url!r}: {error.reason}") from None
    except (OSError, TimeoutError) as error:
        raise UnavailableError(f"trust_bundle_url: cannot fetch {url!r}: {error}") from None
    try:
        return parse_trust_bundle(trust_domain, data, bundle_format)
    except InvalidArgumentError as error:
        raise ConfigError(
            [
                ConfigIssue(
                    "trust_bundle_url",
                    f"{url!r} did not serve a valid {bundle_format} bundle: {error}",
                )
            ]
        ) from None


async def bootstrap_trust(
    config: AgentConfig,
    *,
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
    url_context: ssl.SSLContext | None = None,
) -> BootstrapTrust:
    """The bootstrap trust ``config`` asks for.

    Raises :class:`ConfigError` when not exactly one way is configured or the configured
    bundle is unusable, :class:`UnavailableError` when the bundle URL cannot be reached.
    Insecure bootstrap logs a warning every time it is chosen.
    """
    chosen = config.bootstrap_keys_set()
    if len(chosen) != 1:
        found = " and ".join(chosen) if chosen else "none"
        raise ConfigError(
            [
                ConfigIssue(
                    "",
                    "exactly one of trust_bundle_path, trust_bundle_url, insecure_bootstrap "
                    f"must be set, found {found}",
                )
            ]
        )
    source = chosen[0]
    if config.trust_bundle_path is not None:
        bundle = await load_trust_bundle_file(
            config.trust_bundle_path, config.trust_domain, config.trust_bundle_format
        )
    elif config.trust_bundle_url is not None:
        bundle = await fetch_trust_bundle_url(
            config.trust_bundle_url,
            config.trust_domain,
            config.trust_bundle_format,
            fetch_timeout=fetch_timeout,
            context=url_context,
        )
    else:
        _log.warning(
            "INSECURE BOOTSTRAP: the server is not authenticated on first contact; any "
            "server answering at the configured address will be trusted and its bundle pinned",
            server_address=config.server_address,
            server_port=config.server_port,
        )
        return BootstrapTrust(bundle=None, source=source)
    _log.info(
        "bootstrap bundle loaded",
        source=source,
        trust_domain=config.trust_domain.name,
        x509_authorities=len(bundle.x509_authorities),
    )
    return BootstrapTrust(bundle=bundle, source=source)
