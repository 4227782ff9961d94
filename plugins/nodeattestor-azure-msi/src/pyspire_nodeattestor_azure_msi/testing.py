"""A fake of the Azure services ``azure_msi`` talks to, on loopback, for tests and benchmarks.

Shaped as Azure publishes them: the Instance Metadata Service (plain HTTP, ``Metadata: true``
required) with managed identity tokens and instance metadata; Microsoft Entra ID's OpenID
configuration, key set and client-credentials token endpoint; and Resource Manager's resource
list (filtered by principal), virtual machines and network interfaces (bearer token required),
the last two over HTTPS with a test CA::

    fake = FakeAzure(clock)
    fake.add_vm(FakeVm(name="web", resource_group="frontend"))
    async with fake.serving(tmp_path) as endpoints:
        ...  # agent: imds_endpoint; server: authority_host, resource_manager_endpoint, ca_file

IMDS speaks for the VM named by ``current`` (the last one added).
"""

from __future__ import annotations

__all__ = ["FakeAzure", "FakeAzureEndpoints", "FakeNic", "FakeVm"]

import contextlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from pyspire_sdk.clock import Clock
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.loopback import Handler, LoopbackServer, LoopbackThread, serve_loopback
from pyspire_sdk.testing.pki import TestAuthority
from pyspire_sdk.testing.tokens import TokenIssuer

TOKEN_LIFETIME = 8 * 3600
TENANT = "00000000-1111-2222-3333-444444444444"
SUBSCRIPTION = "d5b40d61-272e-48da-beb9-05f295c42bd6"
_PRINCIPAL_FILTER = re.compile(r"identity/principalId eq '([^']*)'")


@dataclass
class FakeNic:
    """A network interface: its group, name, security group and subnets (group, vnet, subnet)."""

    name: str
    resource_group: str = "frontend"
    security_group: tuple[str, str] | None = ("frontend", "webservers")
    subnets: tuple[tuple[str, str, str], ...] = (("frontend", "vnet", "default"),)


@dataclass
class FakeVm:
    """A VM with a system-assigned managed identity."""

    name: str
    resource_group: str = "frontend"
    subscription_id: str = SUBSCRIPTION
    tenant_id: str = TENANT
    principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    nics: tuple[FakeNic, ...] = ()

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )


def _nic_id(subscription: str, nic: FakeNic) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{nic.resource_group}"
        f"/providers/Microsoft.Network/networkInterfaces/{nic.name}"
    )


@dataclass(frozen=True)
class FakeAzureEndpoints:
    """Where the fake listens, as the plugin's settings take it."""

    imds_endpoint: str
    authority_host: str
    resource_manager_endpoint: str
    ca_file: Path


class FakeAzure:
    """Azure's side: issues MSI tokens for its VMs and answers the APIs."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.issuer = TokenIssuer("RS256")
        self.vms: dict[str, FakeVm] = {}
        self.current = ""
        self.apps: dict[tuple[str, str], str] = {}
        """(tenant, app ID) → client secret of the applications that may sign in."""
        self.arm_tokens: set[str] = set()
        self.arm_calls = 0
        self.server_subscription = SUBSCRIPTION

    def add_vm(self, vm: FakeVm) -> FakeVm:
        """Know ``vm`` and speak for it from now on."""
        self.vms[vm.name] = vm
        self.current = vm.name
        return vm

    def msi_token(self, vm: FakeVm, resource: str, **changes: Any) -> str:
        """An MSI access token as Entra ID issues it to ``vm`` (``changes`` override claims)."""
        now = int(self.clock.now().timestamp())
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{vm.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME,
            "oid": vm.principal_id,
            "sub": vm.principal_id,
            "tid": vm.tenant_id,
            "xms_mirid": vm.resource_id,
        }
        claims.update(changes)
        return self.issuer.issue(claims, header={"x5t": self.issuer.key_id})

    # -- IMDS ----------------------------------------------------------------------------

    @staticmethod
    def _metadata_header(request: web.Request) -> None:
        if request.headers.get("Metadata") != "true":
            raise web.HTTPBadRequest(text='{"error":"invalid_request"}')

    async def _imds_token(self, request: web.Request) -> web.Response:
        self._metadata_header(request)
        resource = request.query.get("resource", "")
        vm = self.vms.get(self.current)
        if vm is None or not resource or request.query.get("api-version") is None:
            raise web.HTTPBadRequest(text='{"error":"invalid_request"}')
        token = self.msi_token(vm, resource)
        self.arm_tokens.add(token)
        return web.json_response(
            {
                "access_token": token,
                "expires_in": str(TOKEN_LIFETIME),
                "resource": resource,
                "token_type": "Bearer",
            }
        )

    async def _imds_instance(self, request: web.Request) -> web.Response:
        self._metadata_header(request)
        return web.json_response(
            {
                "compute": {
                    "name": "spire-server",
                    "subscriptionId": self.server_subscription,
                    "resourceGroupName": "control",
                }
            }
        )

    # -- Entra ID ------------------------------------------------------------------------

    async def _openid(self, request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}"
        return web.json_response(
            {"issuer": base + "/common/v2.0", "jwks_uri": base + "/common/discovery/keys"}
        )

    async def _keys(self, request: web.Request) -> web.Response:
        return web.json_response(self.issuer.jwks())

    async def _client_credentials(self, request: web.Request) -> web.Response:
        form = await request.post()
        tenant = request.match_info["tenant"]
        app = str(form.get("client_id", ""))
        if (
            form.get("grant_type") != "client_credentials"
            or self.apps.get((tenant, app)) != form.get("client_secret")
            or not str(form.get("scope", "")).endswith("/.default")
        ):
            raise web.HTTPUnauthorized(text='{"error":"invalid_client"}')
        token = "arm." + secrets.token_urlsafe(24)
        self.arm_tokens.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
        )

    # -- Resource Manager ----------------------------------------------------------------

    def _authorize(self, request: web.Request) -> None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.arm_tokens:
            raise web.HTTPUnauthorized(text='{"error":{"code":"InvalidAuthenticationToken"}}')
        self.arm_calls += 1

    async def _resources(self, request: web.Request) -> web.Response:
        self._authorize(request)
        match = _PRINCIPAL_FILTER.search(request.query.get("$filter", ""))
        principal = match.group(1) if match else None
        subscription = request.match_info["subscription"]
        found = [
            {"id": vm.resource_id, "name": vm.name, "type": "Microsoft.Compute/virtualMachines"}
            for vm in self.vms.values()
            if vm.subscription_id == subscription and vm.principal_id == principal
        ]
        return web.json_response({"value": found})

    async def _vm(self, request: web.Request) -> web.Response:
        self._authorize(request)
        info = request.match_info
        vm = self.vms.get(info["name"])
        if vm is None or vm.resource_group != info["group"]:
            raise web.HTTPNotFound(text='{"error":{"code":"ResourceNotFound"}}')
        interfaces = [{"id": _nic_id(vm.subscription_id, nic)} for nic in vm.nics]
        return web.json_response(
            {
                "id": vm.resource_id,
                "name": vm.name,
                "properties": {"networkProfile": {"networkInterfaces": interfaces}},
            }
        )

    async def _nic(self, request: web.Request) -> web.Response:
        self._authorize(request)
        info = request.match_info
        for vm in self.vms.values():
            for nic in vm.nics:
                if nic.name == info["name"] and nic.resource_group == info["group"]:
                    return web.json_response(self._nic_resource(vm.subscription_id, nic))
        raise web.HTTPNotFound(text='{"error":{"code":"ResourceNotFound"}}')

    @staticmethod
    def _nic_resource(subscription: str, nic: FakeNic) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "ipConfigurations": [
                {
                    "name": f"ipconfig{number}",
                    "properties": {
                        "subnet": {
                            "id": f"/subscriptions/{subscription}/resourceGroups/{group}"
                            f"/providers/Microsoft.Network/virtualNetworks/{network}"
                            f"/subnets/{subnet}"
                        }
                    },
                }
                for number, (group, network, subnet) in enumerate(nic.subnets)
            ]
        }
        if nic.security_group is not None:
            group, name = nic.security_group
            properties["networkSecurityGroup"] = {
                "id": f"/subscriptions/{subscription}/resourceGroups/{group}"
                f"/providers/Microsoft.Network/networkSecurityGroups/{name}"
            }
        return {"id": _nic_id(subscription, nic), "name": nic.name, "properties": properties}

    def imds_routes(self) -> list[tuple[str, str, Handler]]:
        """IMDS's routes (plain HTTP)."""
        return [
            ("GET", "/metadata/identity/oauth2/token", self._imds_token),
            ("GET", "/metadata/instance", self._imds_instance),
        ]

    def cloud_routes(self) -> list[tuple[str, str, Handler]]:
        """Entra ID's and Resource Manager's routes (HTTPS)."""
        subscription = "/subscriptions/{subscription}"
        group = subscription + "/resourceGroups/{group}/providers"
        return [
            ("GET", "/common/.well-known/openid-configuration", self._openid),
            ("GET", "/common/discovery/keys", self._keys),
            ("POST", "/{tenant}/oauth2/v2.0/token", self._client_credentials),
            ("GET", subscription + "/resources", self._resources),
            ("GET", group + "/Microsoft.Compute/virtualMachines/{name}", self._vm),
            ("GET", group + "/Microsoft.Network/networkInterfaces/{name}", self._nic),
        ]

    @staticmethod
    def _endpoints(imds: LoopbackServer, cloud: LoopbackServer) -> FakeAzureEndpoints:
        assert cloud.ca_file is not None
        return FakeAzureEndpoints(
            imds_endpoint=imds.url,
            authority_host=cloud.url,
            resource_manager_endpoint=cloud.url,
            ca_file=cloud.ca_file,
        )

    @contextlib.asynccontextmanager
    async def serving(self, directory: Path) -> AsyncIterator[FakeAzureEndpoints]:
        """Serve both on loopback until the block ends; TLS files go to ``directory``."""
        authority = TestAuthority(TrustDomain("azure.test"))
        async with (
            serve_loopback(self.imds_routes()) as imds,
            serve_loopback(self.cloud_routes(), tls=authority, directory=directory) as cloud,
        ):
            yield self._endpoints(imds, cloud)

    @contextlib.contextmanager
    def serving_in_thread(self, directory: Path) -> Iterator[FakeAzureEndpoints]:
        """:meth:`serving` for synchronous callers (end-to-end tests, benchmarks)."""
        authority = TestAuthority(TrustDomain("azure.test"))
        with (
            LoopbackThread(self.imds_routes()) as imds,
            LoopbackThread(self.cloud_routes(), tls=authority, directory=directory) as cloud,
        ):
            yield self._endpoints(imds, cloud)
