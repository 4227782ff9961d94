"""A fake Kubernetes API server on loopback (HTTPS, bearer token) for tests and benchmarks.

It serves what ``k8s_psat`` calls, shaped as the published Kubernetes API: ``POST
/apis/authentication.k8s.io/v1/tokenreviews``, ``GET /api/v1/namespaces/{ns}/pods/{name}`` and
``GET /api/v1/nodes/{name}``, and answers errors with ``Status`` objects. It issues projected
service account tokens (JWTs bound to a pod, for audiences, with an expiry) and reviews them
as the API server's TokenReview does::

    fake = FakeKubernetes(clock)
    node = fake.add_node(FakeNode(name="node-1"))
    pod = fake.add_pod(FakePod(name="spire-agent-x", node_name=node.name))
    async with fake.serving(tmp_path) as kube:
        kubeconfig = kube.kubeconfig          # for the server's kube_config_file
        token = fake.projected_token(pod)     # what the kubelet writes for the agent
"""

from __future__ import annotations

__all__ = ["FakeKubernetes", "FakeKubernetesEndpoints", "FakeNode", "FakePod"]

import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from pyspire_nodeattestor_k8s_psat.names import POD_NAME_KEY, POD_UID_KEY
from pyspire_sdk.clock import Clock
from pyspire_sdk.jwk import parse_jwk_set
from pyspire_sdk.jwt import ClaimRules, InvalidJwtError, verify_jwt
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.loopback import Handler, LoopbackServer, LoopbackThread, serve_loopback
from pyspire_sdk.testing.pki import TestAuthority
from pyspire_sdk.testing.tokens import TokenIssuer

API_SERVER_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
TOKEN_LIFETIME = 600


@dataclass
class FakeNode:
    """A node: name, UID, labels and internal IP."""

    name: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str = "10.0.0.1"


@dataclass
class FakePod:
    """A pod running as a service account on a node."""

    name: str
    node_name: str
    namespace: str = "spire"
    service_account: str = "spire-agent"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    labels: Mapping[str, str] = field(default_factory=dict)
    host_ip: str = "10.0.0.1"


@dataclass(frozen=True)
class FakeKubernetesEndpoints:
    """Where the fake listens: its URL and a kubeconfig file for it."""

    url: str
    kubeconfig: Path
    ca_file: Path


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        status=code,
    )


class FakeKubernetes:
    """The API server's side: nodes, pods, projected tokens and their review."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.issuer = TokenIssuer("RS256")
        self.nodes: dict[str, FakeNode] = {}
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.credential = secrets.token_urlsafe(24)
        """The bearer token the kubeconfig gives the server."""
        self.reviews: list[dict[str, Any]] = []

    def add_node(self, node: FakeNode) -> FakeNode:
        """Know ``node``."""
        self.nodes[node.name] = node
        return node

    def add_pod(self, pod: FakePod) -> FakePod:
        """Know ``pod``."""
        self.pods[(pod.namespace, pod.name)] = pod
        return pod

    def projected_token(
        self,
        pod: FakePod,
        audiences: Sequence[str] = ("spire-server",),
        lifetime: int = TOKEN_LIFETIME,
    ) -> str:
        """A projected service account token bound to ``pod``, as the kubelet mounts it."""
        now = int(self.clock.now().timestamp())
        return self.issuer.issue(
            {
                "aud": list(audiences),
                "exp": now + lifetime,
                "iat": now,
                "nbf": now,
                "iss": API_SERVER_AUDIENCE,
                "sub": f"system:serviceaccount:{pod.namespace}:{pod.service_account}",
                "kubernetes.io": {
                    "namespace": pod.namespace,
                    "pod": {"name": pod.name, "uid": pod.uid},
                    "serviceaccount": {"name": pod.service_account, "uid": "sa-uid"},
                },
            }
        )

    def _authorize(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.credential}":
            return _status(401, "Unauthorized", "Unauthorized")
        return None

    async def _token_review(self, request: web.Request) -> web.Response:
        if (refused := self._authorize(request)) is not None:
            return refused
        body = await request.json()
        self.reviews.append(body)
        spec = body.get("spec") or {}
        token = str(spec.get("token") or "")
        audiences = list(spec.get("audiences") or [API_SERVER_AUDIENCE])
        status: dict[str, Any] = {"user": {}}
        try:
            verified = verify_jwt(
                token,
                parse_jwk_set(self.issuer.jwks()),
                algorithms=("RS256",),
                rules=ClaimRules(audiences=audiences),
                now=self.clock.now(),
            )
        except InvalidJwtError as error:
            status["error"] = f"[invalid bearer token, {error}]"
        else:
            claims = verified.claims["kubernetes.io"]
            token_audiences = verified.claims["aud"]
            status = {
                "authenticated": True,
                "user": {
                    "username": verified.claims["sub"],
                    "uid": claims["serviceaccount"]["uid"],
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{claims['namespace']}",
                        "system:authenticated",
                    ],
                    "extra": {
                        POD_NAME_KEY: [claims["pod"]["name"]],
                        POD_UID_KEY: [claims["pod"]["uid"]],
                    },
                },
                "audiences": [aud for aud in audiences if aud in token_audiences],
            }
        return web.json_response(
            {
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
            status=201,
        )

    async def _pod(self, request: web.Request) -> web.Response:
        if (refused := self._authorize(request)) is not None:
            return refused
        info = request.match_info
        pod = self.pods.get((info["namespace"], info["name"]))
        if pod is None:
            return _status(404, "NotFound", f'pods "{info["name"]}" not found')
        return web.json_response(
            {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": pod.name,
                    "namespace": pod.namespace,
                    "uid": pod.uid,
                    "labels": dict(pod.labels),
                },
                "spec": {
                    "nodeName": pod.node_name,
                    "serviceAccountName": pod.service_account,
                    "containers": [{"name": "spire-agent", "image": "spire-agent:test"}],
                },
                "status": {"phase": "Running", "hostIP": pod.host_ip},
            }
        )

    async def _node(self, request: web.Request) -> web.Response:
        if (refused := self._authorize(request)) is not None:
            return refused
        node = self.nodes.get(request.match_info["name"])
        if node is None:
            return _status(404, "NotFound", f'nodes "{request.match_info["name"]}" not found')
        return web.json_response(
            {
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {"name": node.name, "uid": node.uid, "labels": dict(node.labels)},
                "status": {"addresses": [{"type": "InternalIP", "address": node.ip}]},
            }
        )

    def routes(self) -> list[tuple[str, str, Handler]]:
        """The API server's routes."""
        return [
            ("POST", "/apis/authentication.k8s.io/v1/tokenreviews", self._token_review),
            ("GET", "/api/v1/namespaces/{namespace}/pods/{name}", self._pod),
            ("GET", "/api/v1/nodes/{name}", self._node),
        ]

    def write_kubeconfig(self, path: Path, server: LoopbackServer) -> Path:
        """A kubeconfig (JSON is YAML) for ``server``: its CA file and the bearer token."""
        assert server.ca_file is not None
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fake",
                    "cluster": {"server": server.url, "certificate-authority": str(server.ca_file)},
                }
            ],
            "users": [{"name": "spire-server", "user": {"token": self.credential}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "spire-server"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(document, indent=2))
        path.chmod(0o600)
        return path

    def _endpoints(self, server: LoopbackServer, directory: Path) -> FakeKubernetesEndpoints:
        assert server.ca_file is not None
        kubeconfig = self.write_kubeconfig(directory / "kubeconfig", server)
        return FakeKubernetesEndpoints(
            url=server.url, kubeconfig=kubeconfig, ca_file=server.ca_file
        )

    @contextlib.asynccontextmanager
    async def serving(self, directory: Path) -> AsyncIterator[FakeKubernetesEndpoints]:
        """Serve on loopback until the block ends; TLS files and the kubeconfig go to
        ``directory``."""
        authority = TestAuthority(TrustDomain("kubernetes.test"))
        async with serve_loopback(self.routes(), tls=authority, directory=directory) as server:
            yield self._endpoints(server, directory)

    @contextlib.contextmanager
    def serving_in_thread(self, directory: Path) -> Iterator[FakeKubernetesEndpoints]:
        """:meth:`serving` for synchronous callers (end-to-end tests, benchmarks)."""
        authority = TestAuthority(TrustDomain("kubernetes.test"))
        with LoopbackThread(self.routes(), tls=authority, directory=directory) as server:
            yield self._endpoints(server, directory)
