"""The Compute Engine API call ``instances.get``, and the access token it needs.

Credentials follow Google's Application Default Credentials as SPIRE uses them: the service
account key file named by ``service_account_file`` (or ``GOOGLE_APPLICATION_CREDENTIALS``)
is exchanged for an access token at its ``token_uri`` with a signed JWT assertion (RFC 7523);
without one, the token of the instance's own service account comes from the metadata service
(``GCE_METADATA_HOST`` overrides its host, as in Google's libraries). Tokens are reused until
a minute before they expire, by the injected clock.
"""

from __future__ import annotations

__all__ = ["COMPUTE_SCOPE", "AccessTokens", "ComputeClient", "Instance", "load_service_account"]

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PluginError, UnavailableError
from pyspire_sdk.http import HttpClient, HttpError
from pyspire_sdk.jwt import sign_jwt

COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute.readonly"
DEFAULT_METADATA_HOST = "metadata.google.internal"
_RENEW_BEFORE = timedelta(minutes=1)
_ASSERTION_LIFETIME = 3600


@dataclass(frozen=True)
class ServiceAccountKey:
    """A service account key file's parts that the token exchange needs."""

    client_email: str
    private_key_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    token_uri: str


def load_service_account(path: Path) -> ServiceAccountKey:
    """Read a service account key file (JSON, as the Cloud console writes it); raises
    :class:`PluginError` naming the file and what is wrong with it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise PluginError(f"service_account_file {str(path)!r} cannot be read: {error}") from None
    if not isinstance(document, dict) or document.get("type") != "service_account":
        raise PluginError(f"service_account_file {str(path)!r} is not a service account key")
    fields = {}
    for name in ("client_email", "private_key", "token_uri"):
        value = document.get(name)
        if not isinstance(value, str) or not value:
            raise PluginError(f"service_account_file {str(path)!r} has no {name}")
        fields[name] = value
    try:
        key = serialization.load_pem_private_key(fields["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise PluginError(
            f"service_account_file {str(path)!r}: private_key is not a PEM private key"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PluginError(f"service_account_file {str(path)!r}: private_key is not an RSA key")
    key_id = document.get("private_key_id")
    return ServiceAccountKey(
        client_email=fields["client_email"],
        private_key_id=key_id if isinstance(key_id, str) else "",
        private_key=key,
        token_uri=fields["token_uri"],
    )


class AccessTokens:
    """OAuth access tokens for the Compute API, from a key file or the metadata service."""

    def __init__(self, http: HttpClient, clock: Clock, key: ServiceAccountKey | None) -> None:
        self._http = http
        self._clock = clock
        self._key = key
        self._token = ""
        self._expires_at: datetime | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A token valid for at least another minute."""
        async with self._lock:
            now = self._clock.now()
            if self._expires_at is None or now >= self._expires_at - _RENEW_BEFORE:
                answer = await (self._exchange(now) if self._key else self._from_metadata())
                token = answer.get("access_token")
                lifetime = answer.get("expires_in", 0)
                if not isinstance(token, str) or not token:
                    raise UnavailableError("the token endpoint answered without access_token")
                if not isinstance(lifetime, int | float) or isinstance(lifetime, bool):
                    lifetime = 0
                self._token = token
                self._expires_at = now + timedelta(seconds=float(lifetime))
            return self._token

    async def _exchange(self, now: datetime) -> dict[str, Any]:
        key = self._key
        assert key is not None
        issued = int(now.timestamp())
        assertion = sign_jwt(
            {"typ": "JWT", "kid": key.private_key_id} if key.private_key_id else {"typ": "JWT"},
            {
                "iss": key.client_email,
                "scope": COMPUTE_SCOPE,
                "aud": key.token_uri,
                "iat": issued,
                "exp": issued + _ASSERTION_LIFETIME,
            },
            key.private_key,
            "RS256",
        )
        response = await self._http.post(
            key.token_uri,
            form={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            },
        )
        return response.json_object()

    async def _from_metadata(self) -> dict[str, Any]:
        host = os.environ.get("GCE_METADATA_HOST") or DEFAULT_METADATA_HOST
        url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
        response = await self._http.get(url, headers={"Metadata-Flavor": "Google"})
        return response.json_object()


@dataclass(frozen=True)
class Instance:
    """The parts of a Compute Engine instance resource that selectors come from."""

    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    metadata: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> Instance:
        """Read an ``instances.get`` answer; members of the wrong shape count as absent."""
        tags = resource.get("tags")
        items = tags.get("items") if isinstance(tags, Mapping) else None
        labels = resource.get("labels")
        metadata = resource.get("metadata")
        entries = metadata.get("items") if isinstance(metadata, Mapping) else None
        return cls(
            tags=tuple(item for item in items or () if isinstance(item, str)),
            labels={
                key: value
                for key, value in (labels.items() if isinstance(labels, Mapping) else ())
                if isinstance(key, str) and isinstance(value, str)
            },
            metadata=tuple(
                (entry["key"], entry.get("value") if isinstance(entry.get("value"), str) else None)
                for entry in entries or ()
                if isinstance(entry, Mapping) and isinstance(entry.get("key"), str)
            ),
        )


class ComputeClient:
    """``instances.get`` against ``endpoint`` (``https://compute.googleapis.com/compute/v1``)."""

    def __init__(self, http: HttpClient, endpoint: str, tokens: AccessTokens) -> None:
        self._http = http
        self._endpoint = endpoint.rstrip("/")
        self._tokens = tokens

    async def instance(self, project: str, zone: str, name: str) -> Instance:
        """The instance ``name`` of ``project`` in ``zone``; :class:`UnavailableError` (an
        :class:`~pyspire_sdk.http.HttpError`) when the API cannot be asked or says no."""
        url = "/".join(
            (
                self._endpoint,
                "projects",
                quote(project, safe=""),
                "zones",
                quote(zone, safe=""),
                "instances",
                quote(name, safe=""),
            )
        )
        token = await self._tokens.token()
        try:
            response = await self._http.get(url, headers={"Authorization": f"Bearer {token}"})
        except HttpError as error:
            raise UnavailableError(f"failed to fetch instance metadata: {error}") from None
        return Instance.from_resource(response.json_object())
