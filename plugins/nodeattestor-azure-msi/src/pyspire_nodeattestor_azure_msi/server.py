"""The server half of ``azure_msi``: verify the MSI token, then ask Azure about the VM.

The token (``{"token": ...}``) must be signed by a key of Microsoft's JWK Set (found through
the OpenID Connect discovery document of ``<authority_host>/common/``) with an RSA or EC
algorithm, carry a tenant (``tid``) configured in ``tenants`` and a principal (``sub``), be
for that tenant's ``resource_id`` and be within its validity, with five minutes of leeway as
SPIRE allows (MSI tokens live for hours; clocks of VMs drift). The agent ID comes from
``agent_path_template``. The VM whose managed identity the principal is, its network
interfaces, their security groups and subnets become selectors. As in SPIRE, a node attests
once (``can_reattest`` is false).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_AGENT_PATH_TEMPLATE",
    "ServerAzureMsiAttestor",
    "ServerAzureMsiConfig",
    "TenantConfig",
]

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pyspire_nodeattestor_azure_msi.arm import (
    ClientSecretCredential,
    Credential,
    ManagedIdentityCredential,
    ResourceManager,
    imds_subscription,
    parse_resource_id,
)
from pyspire_nodeattestor_azure_msi.names import (
    DEFAULT_IMDS_ENDPOINT,
    DEFAULT_RESOURCE_ID,
    PLUGIN_NAME,
)
from pyspire_sdk.agent_path import AgentPathTemplate
from pyspire_sdk.config import setting
from pyspire_sdk.errors import (
    ConfigIssue,
    InvalidArgumentError,
    PermissionDeniedError,
    PluginError,
)
from pyspire_sdk.http import HttpClient, HttpError
from pyspire_sdk.jwks import RemoteJwks, openid_jwks_uri
from pyspire_sdk.jwt import ClaimRules, InvalidJwtError, MalformedJwtError, check_claims
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import Challenger

DEFAULT_AGENT_PATH_TEMPLATE = "/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}"
TEMPLATE_FIELDS = ("PluginName", "TenantID", "PrincipalID")
AUTHORITY_HOST = "https://login.microsoftonline.com"
RESOURCE_MANAGER = "https://management.azure.com"
TOKEN_LEEWAY = timedelta(minutes=5)
_ALGORITHMS = tuple(f"{family}{size}" for family in ("RS", "ES", "PS") for size in (256, 384, 512))
_SIGNATURE_RULES = ClaimRules(leeway=TOKEN_LEEWAY)
MAX_PAYLOAD_BYTES = 32 * 1024


@dataclass(frozen=True, kw_only=True)
class TenantConfig:
    """One tenant whose VMs may attest (SPIRE's keys)."""

    resource_id: str = setting(
        DEFAULT_RESOURCE_ID,
        description="the resource (audience) the tenant's MSI tokens must be for",
    )
    subscription_id: str = setting(
        "", description="subscription the tenant's VMs are looked up in (with app credentials)"
    )
    app_id: str = setting("", description="application (client) ID to read the VMs as")
    app_secret: str = setting("", description="that application's client secret", secret=True)

    def validate(self) -> Iterable[ConfigIssue]:
        """The three credential keys go together."""
        given = {
            "subscription_id": self.subscription_id,
            "app_id": self.app_id,
            "app_secret": self.app_secret,
        }
        if any(given.values()):
            for key, value in given.items():
                if not value:
                    yield ConfigIssue(
                        key, "missing: subscription_id, app_id and app_secret go together"
                    )


@dataclass(frozen=True, kw_only=True)
class ServerAzureMsiConfig:
    """The server half's settings (SPIRE's keys, and the endpoints it calls)."""

    tenants: dict[str, TenantConfig] = setting(
        description="tenants whose VMs may attest, by tenant ID; tokens of others are refused"
    )
    agent_path_template: str = setting(
        DEFAULT_AGENT_PATH_TEMPLATE,
        description="the agent ID's path after /spire/agent, with the fields "
        "{{ .PluginName }}, {{ .TenantID }} and {{ .PrincipalID }}",
    )
    authority_host: str = setting(
        AUTHORITY_HOST,
        description="Microsoft Entra ID: its /common/ OpenID configuration names the token "
        "keys, its /<tenant>/oauth2/v2.0/token endpoint signs in applications",
    )
    resource_manager_endpoint: str = setting(
        RESOURCE_MANAGER, description="base URL of Azure Resource Manager"
    )
    imds_endpoint: str = setting(
        DEFAULT_IMDS_ENDPOINT,
        description="the server VM's Instance Metadata Service, for tenants without app "
        "credentials",
    )
    ca_file: Path | None = setting(
        None,
        description="PEM file of CA certificates trusted for the HTTPS calls, in place of the "
        "system's",
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """At least one tenant, and a template that parses."""
        if not self.tenants:
            yield ConfigIssue("tenants", "must have at least one tenant")
        try:
            AgentPathTemplate.parse(self.agent_path_template, TEMPLATE_FIELDS)
        except InvalidArgumentError as error:
            yield ConfigIssue("agent_path_template", str(error))


@dataclass
class _Tenant:
    resource_id: str
    resource_manager: ResourceManager = field(repr=False)


class ServerAzureMsiAttestor:
    """Verifies Azure MSI tokens and resolves the VM's selectors."""

    def __init__(self) -> None:
        self._host: HostServices | None = None
        self._http: HttpClient | None = None
        self._jwks: RemoteJwks | None = None
        self._template: AgentPathTemplate | None = None
        self._tenants: dict[str, _Tenant] = {}

    async def configure(self, config: ServerAzureMsiConfig, host: HostServices) -> None:
        """Prepare the HTTPS client, the key set and one Resource Manager client per tenant
        (a tenant without app credentials asks IMDS for the server VM's subscription now, so
        a server that cannot have one fails here)."""
        self._host = host
        self._template = AgentPathTemplate.parse(config.agent_path_template, TEMPLATE_FIELDS)
        self._http = http = HttpClient(ca_file=config.ca_file)
        await http.open()
        authority = config.authority_host.rstrip("/")
        self._jwks = RemoteJwks(
            http,
            lambda: openid_jwks_uri(http, authority + "/common/"),
            host.clock,
            logger=host.logger,
        )
        scope = config.resource_manager_endpoint.rstrip("/") + "/.default"
        for tenant_id, tenant in config.tenants.items():
            credential: Credential
            if tenant.app_id:
                credential = ClientSecretCredential(
                    http,
                    host.clock,
                    authority_host=authority,
                    tenant_id=tenant_id,
                    app_id=tenant.app_id,
                    app_secret=tenant.app_secret,
                    scope=scope,
                )
                subscription = tenant.subscription_id
            else:
                credential = ManagedIdentityCredential(
                    http,
                    host.clock,
                    imds_endpoint=config.imds_endpoint,
                    resource=config.resource_manager_endpoint.rstrip("/") + "/",
                )
                try:
                    subscription = await imds_subscription(http, config.imds_endpoint)
                except HttpError as error:
                    raise PluginError(
                        f"azure_msi: tenant {tenant_id!r} has no app credentials and the "
                        f"server's instance metadata cannot be read: {error}"
                    ) from None
            self._tenants[tenant_id] = _Tenant(
                resource_id=tenant.resource_id,
                resource_manager=ResourceManager(
                    http, config.resource_manager_endpoint, subscription, credential
                ),
            )

    async def close(self) -> None:
        """Close the HTTPS client."""
        if self._http is not None:
            await self._http.close()

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        """Verify the MSI token in ``payload``; the agent ID and selectors it grants."""
        if self._host is None or self._jwks is None or self._template is None:
            raise PluginError("azure_msi: used before configure")
        token = _token_of(payload)
        try:
            verified = await self._jwks.verify(
                token, algorithms=_ALGORITHMS, rules=_SIGNATURE_RULES
            )
        except MalformedJwtError as error:
            raise InvalidArgumentError(f"unable to parse the MSI token: {error}") from None
        except InvalidJwtError as error:
            raise PermissionDeniedError(f"MSI token refused: {error}") from None
        tenant_id = _claim(verified.claims, "tid", "tenant ID")
        principal_id = _claim(verified.claims, "sub", "subject")
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            raise PermissionDeniedError(f'tenant "{tenant_id}" is not authorized')
        try:
            check_claims(
                verified.claims,
                ClaimRules(audiences=(tenant.resource_id,), leeway=TOKEN_LEEWAY),
                self._host.clock.now(),
            )
        except InvalidJwtError as error:
            raise PermissionDeniedError(f"MSI token refused: {error}") from None
        values = {"PluginName": PLUGIN_NAME, "TenantID": tenant_id, "PrincipalID": principal_id}
        try:
            agent = self._template.agent_id(self._host.trust_domain, values)
        except InvalidArgumentError as error:
            raise PermissionDeniedError(f"cannot make the agent ID: {error}") from None
        selectors = await _resolve(tenant.resource_manager, principal_id)
        return AttestationResult(agent_id=agent, selector_values=selectors, can_reattest=False)


def _token_of(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidArgumentError(f"attestation data is longer than {MAX_PAYLOAD_BYTES} bytes")
    try:
        data: Any = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgumentError("attestation data is not JSON") from None
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise InvalidArgumentError("attestation data has no token")
    return token


def _claim(claims: Mapping[str, Any], name: str, meaning: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise PermissionDeniedError(f"MSI token has no {meaning} claim ({name!r})")
    return value


async def _resolve(arm: ResourceManager, principal_id: str) -> tuple[str, ...]:
    """SPIRE's selectors for the VM of ``principal_id``, sorted, each once."""
    vm = await arm.virtual_machine_of(principal_id)
    values = {
        f"subscription-id:{arm.subscription_id}",
        f"vm-name:{vm.resource_group}:{vm.name}",
    }
    for interface_id in await arm.network_interface_ids(vm):
        group, name = parse_resource_id("nic", interface_id)
        interface = await arm.network_interface(group, name)
        properties = interface.get("properties")
        if not isinstance(properties, Mapping):
            continue
        nsg = properties.get("networkSecurityGroup")
        if isinstance(nsg, Mapping) and isinstance(nsg.get("id"), str):
            nsg_group, nsg_name = parse_resource_id("nsg", nsg["id"])
            values.add(f"network-security-group:{nsg_group}:{nsg_name}")
        for configuration in properties.get("ipConfigurations") or ():
            inner = configuration.get("properties") if isinstance(configuration, Mapping) else None
            subnet = inner.get("subnet") if isinstance(inner, Mapping) else None
            if isinstance(subnet, Mapping) and isinstance(subnet.get("id"), str):
                subnet_group, network, subnet_name = parse_resource_id("subnet", subnet["id"])
                values.add(f"virtual-network:{subnet_group}:{network}")
                values.add(f"virtual-network-subnet:{subnet_group}:{network}:{subnet_name}")
    return tuple(sorted(values))


__all__ += ["TEMPLATE_FIELDS"]
