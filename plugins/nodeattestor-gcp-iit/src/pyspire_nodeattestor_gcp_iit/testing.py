"""A fake of the Google services ``gcp_iit`` talks to, on loopback, for tests and benchmarks.

Shaped as Google publishes them: the metadata service's identity-token and access-token
endpoints (plain HTTP, ``Metadata-Flavor: Google`` required), the OAuth2 key set
(``/oauth2/v3/certs``) and token endpoint (JWT-bearer grant), and the Compute Engine API's
``instances.get`` (bearer token required), the last three over HTTPS with a test CA::

    fake = FakeGcp(clock)
    fake.add_instance(FakeInstance(name="web-1", tags=("blue",)))
    async with fake.serving(tmp_path) as endpoints:
        ...  # agent: identity_token_host=endpoints.metadata_host; server: endpoints.jwks_url

The metadata service speaks for the instance named by ``current`` (the last one added).
"""

from __future__ import annotations

__all__ = ["FakeGcp", "FakeGcpEndpoints", "FakeInstance"]

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pyspire_nodeattestor_gcp_iit.compute import COMPUTE_SCOPE
from pyspire_sdk.clock import Clock
from pyspire_sdk.jwk import JwkSet
from pyspire_sdk.jwt import ClaimRules, InvalidJwtError, verify_jwt
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.loopback import Handler, LoopbackServer, LoopbackThread, serve_loopback
from pyspire_sdk.testing.pki import TestAuthority
from pyspire_sdk.testing.tokens import TokenIssuer

TOKEN_LIFETIME = 3600


@dataclass
class FakeInstance:
    """A Compute Engine instance the fake knows."""

    name: str
    project_id: str = "project-123"
    project_number: int = 123456789
    zone: str = "us-west1-b"
    instance_id: str = field(default_factory=lambda: str(secrets.randbelow(10**18)))
    email: str = "123456789-compute@developer.gserviceaccount.com"
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str | None] = field(default_factory=dict)
    created: int = 1_700_000_000

    def resource(self) -> dict[str, Any]:
        """The ``instances.get`` answer."""
        return {
            "kind": "compute#instance",
            "id": self.instance_id,
            "name": self.name,
            "zone": f"projects/{self.project_id}/zones/{self.zone}",
            "tags": {"items": list(self.tags), "fingerprint": "abc"},
            "labels": dict(self.labels),
            "metadata": {
                "kind": "compute#metadata",
                "items": [
                    {"key": key, **({"value": value} if value is not None else {})}
                    for key, value in self.metadata.items()
                ],
            },
        }


@dataclass(frozen=True)
class FakeGcpEndpoints:
    """Where the fake listens, as the plugin's settings take it."""

    metadata_host: str
    jwks_url: str
    compute_endpoint: str
    token_uri: str
    ca_file: Path


class FakeGcp:
    """Google's side: issues identity tokens for its instances and answers the APIs."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.issuer = TokenIssuer("RS256")
        self.instances: dict[str, FakeInstance] = {}
        self.current = ""
        self.audience_override: str | None = None
        self.account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.account_email = "attestor@project-123.iam.gserviceaccount.com"
        self.access_tokens: set[str] = set()
        self.compute_calls = 0

    def add_instance(self, instance: FakeInstance) -> FakeInstance:
        """Know ``instance`` and speak for it from now on."""
        self.instances[instance.name] = instance
        self.current = instance.name
        return instance

    def identity_token(self, instance: FakeInstance, audience: str, **changes: Any) -> str:
        """A token as Google issues it for ``instance`` (``changes`` override claims)."""
        now = int(self.clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com",
            "aud": audience,
            "azp": "117",
            "sub": "117",
            "email": instance.email,
            "email_verified": True,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            "google": {
                "compute_engine": {
                    "project_id": instance.project_id,
                    "project_number": instance.project_number,
                    "zone": instance.zone,
                    "instance_id": instance.instance_id,
                    "instance_name": instance.name,
                    "instance_creation_timestamp": instance.created,
                }
            },
        }
        claims.update(changes)
        return self.issuer.issue(claims)

    def write_service_account_file(self, path: Path, token_uri: str) -> Path:
        """A service account key file whose ``token_uri`` is the fake's token endpoint."""
        pem = self.account_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        document = {
            "type": "service_account",
            "project_id": "project-123",
            "private_key_id": "key-1",
            "private_key": pem,
            "client_email": self.account_email,
            "token_uri": token_uri,
        }
        path.write_text(json.dumps(document))
        path.chmod(0o600)
        return path

    # -- the metadata service ------------------------------------------------------------

    @staticmethod
    def _metadata_flavor(request: web.Request) -> None:
        if request.headers.get("Metadata-Flavor") != "Google":
            raise web.HTTPForbidden(text="Missing Metadata-Flavor:Google header")

    async def _identity(self, request: web.Request) -> web.Response:
        self._metadata_flavor(request)
        instance = self.instances.get(self.current)
        audience = request.query.get("audience", "")
        if instance is None or not audience or request.query.get("format") != "full":
            raise web.HTTPBadRequest(text="audience and format=full are required")
        return web.Response(text=self.identity_token(instance, self.audience_override or audience))

    async def _metadata_token(self, request: web.Request) -> web.Response:
        self._metadata_flavor(request)
        return web.json_response(self._new_access_token())

    def _new_access_token(self) -> dict[str, Any]:
        token = "ya29." + secrets.token_urlsafe(24)
        self.access_tokens.add(token)
        return {"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}

    # -- googleapis ----------------------------------------------------------------------

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.issuer.jwks())

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            raise web.HTTPBadRequest(text='{"error":"unsupported_grant_type"}')
        keys = JwkSet(keys={"key-1": (self.account_key.public_key(),)})
        try:
            verified = verify_jwt(
                str(form.get("assertion", "")),
                keys,
                algorithms=("RS256",),
                rules=ClaimRules(audiences=(str(request.url),)),
                now=self.clock.now(),
            )
        except InvalidJwtError as error:
            raise web.HTTPBadRequest(text=json.dumps({"error": str(error)})) from None
        if verified.claims.get("scope") != COMPUTE_SCOPE:
            raise web.HTTPBadRequest(text='{"error":"invalid_scope"}')
        return web.json_response(self._new_access_token())

    async def _instance(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.access_tokens:
            raise web.HTTPUnauthorized(text='{"error":{"code":401}}')
        self.compute_calls += 1
        info = request.match_info
        instance = self.instances.get(info["name"])
        if (
            instance is None
            or instance.project_id != info["project"]
            or instance.zone != info["zone"]
        ):
            raise web.HTTPNotFound(text='{"error":{"code":404}}')
        return web.json_response(instance.resource())

    def metadata_routes(self) -> list[tuple[str, str, Handler]]:
        """The metadata service's routes (plain HTTP)."""
        base = "/computeMetadata/v1/instance/service-accounts/{account}"
        return [
            ("GET", base + "/identity", self._identity),
            ("GET", base + "/token", self._metadata_token),
        ]

    def google_routes(self) -> list[tuple[str, str, Handler]]:
        """googleapis' routes (HTTPS)."""
        return [
            ("GET", "/oauth2/v3/certs", self._jwks),
            ("POST", "/token", self._token),
            (
                "GET",
                "/compute/v1/projects/{project}/zones/{zone}/instances/{name}",
                self._instance,
            ),
        ]

    @staticmethod
    def _endpoints(metadata: LoopbackServer, google: LoopbackServer) -> FakeGcpEndpoints:
        assert google.ca_file is not None
        return FakeGcpEndpoints(
            metadata_host=metadata.host,
            jwks_url=google.url + "/oauth2/v3/certs",
            compute_endpoint=google.url + "/compute/v1",
            token_uri=google.url + "/token",
            ca_file=google.ca_file,
        )

    @contextlib.asynccontextmanager
    async def serving(self, directory: Path) -> AsyncIterator[FakeGcpEndpoints]:
        """Serve both on loopback until the block ends; TLS files go to ``directory``."""
        authority = TestAuthority(TrustDomain("googleapis.test"))
        async with (
            serve_loopback(self.metadata_routes()) as metadata,
            serve_loopback(self.google_routes(), tls=authority, directory=directory) as google,
        ):
            yield self._endpoints(metadata, google)

    @contextlib.contextmanager
    def serving_in_thread(self, directory: Path) -> Iterator[FakeGcpEndpoints]:
        """:meth:`serving` for synchronous callers (end-to-end tests, benchmarks)."""
        authority = TestAuthority(TrustDomain("googleapis.test"))
        with (
            LoopbackThread(self.metadata_routes()) as metadata,
            LoopbackThread(self.google_routes(), tls=authority, directory=directory) as google,
        ):
            yield self._endpoints(metadata, google)
