"""What ``azure_msi`` asks Azure Resource Manager about an attested VM, and as whom.

Per tenant, the server signs in either with an application's client secret (the OAuth2
client-credentials grant at ``<authority_host>/<tenant>/oauth2/v2.0/token``) or, without one,
with the managed identity of the VM it runs on (from IMDS; the subscription then comes from
IMDS's instance metadata), as SPIRE does with azidentity. Access tokens are reused until a
minute before they expire, by the injected clock.

The calls (SPIRE's ``apiClient``): list the VM whose identity is the token's principal, read
the VM, read each of its network interfaces.
"""

from __future__ import annotations

__all__ = [
    "ClientSecretCredential",
    "ManagedIdentityCredential",
    "ResourceManager",
    "VirtualMachineRef",
    "parse_resource_id",
]

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from pyspire_nodeattestor_azure_msi.agent import fetch_msi_token
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PermissionDeniedError, UnavailableError
from pyspire_sdk.http import HttpClient, HttpError

_RENEW_BEFORE = timedelta(minutes=1)
_MAX_PAGES = 20
RESOURCES_API_VERSION = "2021-04-01"
COMPUTE_API_VERSION = "2024-07-01"
NETWORK_API_VERSION = "2024-05-01"

_RESOURCE_ID = {
    "vm": re.compile(
        r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Compute/"
        r"virtualMachines/([^/]+)$"
    ),
    "nic": re.compile(
        r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/"
        r"networkInterfaces/([^/]+)$"
    ),
    "nsg": re.compile(
        r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/"
        r"networkSecurityGroups/([^/]+)$"
    ),
    "subnet": re.compile(
        r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/"
        r"virtualNetworks/([^/]+)/subnets/([^/]+)$"
    ),
}
_NAMES = {
    "vm": "virtual machine",
    "nic": "network interface",
    "nsg": "network security group",
    "subnet": "virtual network subnet",
}


def parse_resource_id(kind: str, resource_id: str) -> tuple[str, ...]:
    """The resource group and name(s) in a resource ID of ``kind`` (``vm``, ``nic``, ``nsg``,
    ``subnet``); :class:`UnavailableError` for an ID of another shape."""
    match = _RESOURCE_ID[kind].match(resource_id)
    if match is None:
        raise UnavailableError(f"malformed {_NAMES[kind]} ID {resource_id!r}")
    return match.groups()


class _CachedToken:
    def __init__(self, clock: Clock, fetch: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
        self._clock = clock
        self._fetch = fetch
        self._token = ""
        self._expires_at: datetime | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            now = self._clock.now()
            if self._expires_at is None or now >= self._expires_at - _RENEW_BEFORE:
                answer = await self._fetch()
                token = answer.get("access_token")
                if not isinstance(token, str) or not token:
                    raise UnavailableError("the token endpoint answered without access_token")
                try:
                    lifetime = float(answer.get("expires_in", 0))  # IMDS sends a string
                except (TypeError, ValueError):
                    lifetime = 0.0
                self._token = token
                self._expires_at = now + timedelta(seconds=lifetime)
            return self._token


class ClientSecretCredential:
    """An application's client secret, exchanged for Resource Manager tokens."""

    def __init__(
        self,
        http: HttpClient,
        clock: Clock,
        *,
        authority_host: str,
        tenant_id: str,
        app_id: str,
        app_secret: str,
        scope: str,
    ) -> None:
        self._cache = _CachedToken(clock, self._fetch)
        self._http = http
        self._url = f"{authority_host.rstrip('/')}/{quote(tenant_id, safe='')}/oauth2/v2.0/token"
        self._form = {
            "grant_type": "client_credentials",
            "client_id": app_id,
            "client_secret": app_secret,
            "scope": scope,
        }

    async def _fetch(self) -> Mapping[str, Any]:
        return (await self._http.post(self._url, form=self._form)).json_object()

    async def token(self) -> str:
        """A token valid for at least another minute."""
        return await self._cache.token()


class ManagedIdentityCredential:
    """The server VM's own managed identity, from IMDS."""

    def __init__(self, http: HttpClient, clock: Clock, *, imds_endpoint: str, resource: str):
        self._cache = _CachedToken(clock, self._fetch)
        self._http = http
        self._imds = imds_endpoint
        self._resource = resource

    async def _fetch(self) -> Mapping[str, Any]:
        return await fetch_msi_token(self._http, self._imds, self._resource)

    async def token(self) -> str:
        """A token valid for at least another minute."""
        return await self._cache.token()


Credential = ClientSecretCredential | ManagedIdentityCredential


async def imds_subscription(http: HttpClient, imds_endpoint: str) -> str:
    """The subscription of the VM the server runs on, from IMDS's instance metadata."""
    response = await http.get(
        imds_endpoint.rstrip("/") + "/metadata/instance",
        headers={"Metadata": "true"},
        params={"api-version": "2021-02-01", "format": "json"},
    )
    compute = response.json_object().get("compute")
    subscription = compute.get("subscriptionId") if isinstance(compute, Mapping) else None
    if not isinstance(subscription, str) or not subscription:
        raise HttpError("GET", response.url, "instance metadata has no compute.subscriptionId")
    return subscription


__all__ += ["Credential", "imds_subscription"]


@dataclass(frozen=True)
class VirtualMachineRef:
    """Where a VM is: its resource group and name."""

    resource_group: str
    name: str


class ResourceManager:
    """Resource Manager calls in one subscription, as one credential."""

    def __init__(
        self, http: HttpClient, endpoint: str, subscription_id: str, credential: Credential
    ) -> None:
        self._http = http
        self._endpoint = endpoint.rstrip("/")
        self.subscription_id = subscription_id
        self._credential = credential

    def _url(self, *parts: str) -> str:
        escaped = "/".join(quote(part, safe="") for part in parts)
        return f"{self._endpoint}/subscriptions/{quote(self.subscription_id, safe='')}/{escaped}"

    async def _get(self, url: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        token = await self._credential.token()
        try:
            response = await self._http.get(
                url, headers={"Authorization": f"Bearer {token}"}, params=params
            )
        except HttpError as error:
            raise UnavailableError(f"resource manager call failed: {error}") from None
        return response.json_object()

    async def virtual_machine_of(self, principal_id: str) -> VirtualMachineRef:
        """The VM whose managed identity is ``principal_id``: exactly one must exist."""
        odata = principal_id.replace("'", "''")
        url: str | None = self._url("resources")
        params: Mapping[str, str] | None = {
            "$filter": "resourceType eq 'Microsoft.Compute/virtualMachines' and "
            f"identity/principalId eq '{odata}'",
            "api-version": RESOURCES_API_VERSION,
        }
        found: list[Any] = []
        for _ in range(_MAX_PAGES):
            if url is None:
                break
            page = await self._get(url, params)
            values = page.get("value")
            found += values if isinstance(values, list) else []
            next_link = page.get("nextLink")
            url, params = (
                (next_link, None) if isinstance(next_link, str) and next_link else (None, None)
            )
        if not found:
            raise PermissionDeniedError(
                f'no virtual machine of subscription "{self.subscription_id}" has the '
                f'principal "{principal_id}"'
            )
        if len(found) > 1:
            raise PermissionDeniedError(
                f'more than one resource has the principal "{principal_id}"'
            )
        resource_id = found[0].get("id") if isinstance(found[0], Mapping) else None
        if not isinstance(resource_id, str) or not resource_id:
            raise UnavailableError("the virtual machine resource has no ID")
        group, name = parse_resource_id("vm", resource_id)
        return VirtualMachineRef(resource_group=group, name=name)

    async def network_interface_ids(self, vm: VirtualMachineRef) -> list[str]:
        """The resource IDs of the VM's network interfaces."""
        resource = await self._get(
            self._url(
                "resourceGroups",
                vm.resource_group,
                "providers",
                "Microsoft.Compute",
                "virtualMachines",
                vm.name,
            ),
            {"api-version": COMPUTE_API_VERSION},
        )
        properties = resource.get("properties")
        profile = properties.get("networkProfile") if isinstance(properties, Mapping) else None
        interfaces = profile.get("networkInterfaces") if isinstance(profile, Mapping) else None
        return [
            item["id"]
            for item in interfaces or ()
            if isinstance(item, Mapping) and isinstance(item.get("id"), str)
        ]

    async def network_interface(self, resource_group: str, name: str) -> dict[str, Any]:
        """A network interface resource."""
        return await self._get(
            self._url(
                "resourceGroups",
                resource_group,
                "providers",
                "Microsoft.Network",
                "networkInterfaces",
                name,
            ),
            {"api-version": NETWORK_API_VERSION},
        )
