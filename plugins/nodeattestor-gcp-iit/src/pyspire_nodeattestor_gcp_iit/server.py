"""The server half of ``gcp_iit``: verify the instance identity token and name the agent.

The token must be signed (RS256) by a key of Google's JWK Set, be for the audience
``spire-gcp-node-attestor``, be within its validity (a minute of leeway for clock skew) and
name a project on ``projectid_allow_list``. The agent ID comes from ``agent_path_template``.
With ``use_instance_metadata`` the instance is read from the Compute Engine API for its tags,
labels and metadata. As in SPIRE, a node attests once (``can_reattest`` is false): the host
refuses a second attestation of the same agent ID, so a token stolen from the node is of no
use once the agent has attested.
"""

from __future__ import annotations

__all__ = ["DEFAULT_AGENT_PATH_TEMPLATE", "ServerGcpIitAttestor", "ServerGcpIitConfig"]

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyspire_nodeattestor_gcp_iit.compute import (
    AccessTokens,
    ComputeClient,
    Instance,
    ServiceAccountKey,
    load_service_account,
)
from pyspire_nodeattestor_gcp_iit.identity import (
    TEMPLATE_FIELDS,
    TOKEN_AUDIENCE,
    IdentityToken,
)
from pyspire_sdk.agent_path import AgentPathTemplate
from pyspire_sdk.config import setting
from pyspire_sdk.errors import (
    ConfigIssue,
    InvalidArgumentError,
    PermissionDeniedError,
    PluginError,
)
from pyspire_sdk.http import HttpClient
from pyspire_sdk.jwks import RemoteJwks
from pyspire_sdk.jwt import ClaimRules, InvalidJwtError, MalformedJwtError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import Challenger

DEFAULT_AGENT_PATH_TEMPLATE = "/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}"
GOOGLE_JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"
COMPUTE_ENDPOINT = "https://compute.googleapis.com/compute/v1"
_ALGORITHMS = ("RS256",)  # Google signs instance identity tokens with RS256 only
_RULES = ClaimRules(audiences=(TOKEN_AUDIENCE,))


@dataclass(frozen=True, kw_only=True)
class ServerGcpIitConfig:
    """The server half's settings (SPIRE's keys, and the endpoints it calls)."""

    projectid_allow_list: tuple[str, ...] = setting(
        description="projects whose instances may attest; a token of any other is refused"
    )
    use_instance_metadata: bool = setting(
        False,
        description="read the instance from the Compute Engine API for tag, label and "
        "metadata selectors",
    )
    service_account_file: str = setting(
        "",
        description="service account key file for the Compute Engine API; empty: "
        "GOOGLE_APPLICATION_CREDENTIALS, else the instance's own account via the metadata "
        "service",
    )
    allowed_label_keys: tuple[str, ...] = setting(
        (), description="instance label keys that become `label` selectors"
    )
    allowed_metadata_keys: tuple[str, ...] = setting(
        (), description="instance metadata keys that become `metadata` selectors"
    )
    max_metadata_value_size: int = setting(
        128,
        description="longest metadata value (bytes) a selector may carry; a longer allowed "
        "value fails the attestation",
    )
    agent_path_template: str = setting(
        DEFAULT_AGENT_PATH_TEMPLATE,
        description="the agent ID's path after /spire/agent, with fields such as "
        "{{ .ProjectID }}, {{ .InstanceID }}, {{ .Zone }}, {{ .InstanceName }}",
    )
    jwks_url: str = setting(
        GOOGLE_JWKS_URL, description="where Google publishes the keys that sign the tokens"
    )
    compute_endpoint: str = setting(
        COMPUTE_ENDPOINT, description="base URL of the Compute Engine API"
    )
    ca_file: Path | None = setting(
        None,
        description="PEM file of CA certificates trusted for the HTTPS calls, in place of the "
        "system's",
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """Rules across keys: a non-empty allow-list, a template that parses, a positive
        size limit."""
        if not self.projectid_allow_list:
            yield ConfigIssue("projectid_allow_list", "must name at least one project")
        if self.max_metadata_value_size <= 0:
            yield ConfigIssue("max_metadata_value_size", "must be positive")
        try:
            AgentPathTemplate.parse(self.agent_path_template, TEMPLATE_FIELDS)
        except InvalidArgumentError as error:
            yield ConfigIssue("agent_path_template", str(error))


class ServerGcpIitAttestor:
    """Verifies GCP instance identity tokens."""

    def __init__(self) -> None:
        self._config = ServerGcpIitConfig(projectid_allow_list=("unconfigured",))
        self._host: HostServices | None = None
        self._http: HttpClient | None = None
        self._jwks: RemoteJwks | None = None
        self._compute: ComputeClient | None = None
        self._template: AgentPathTemplate | None = None

    async def configure(self, config: ServerGcpIitConfig, host: HostServices) -> None:
        """Prepare the HTTPS client, the key set and, with ``use_instance_metadata``, the
        Compute API credentials; a key file that cannot be used fails here."""
        self._config = config
        self._host = host
        self._template = AgentPathTemplate.parse(config.agent_path_template, TEMPLATE_FIELDS)
        self._http = HttpClient(ca_file=config.ca_file)
        await self._http.open()
        self._jwks = RemoteJwks(self._http, config.jwks_url, host.clock, logger=host.logger)
        if config.use_instance_metadata:
            key: ServiceAccountKey | None = None
            path = config.service_account_file or os.environ.get(
                "GOOGLE_APPLICATION_CREDENTIALS", ""
            )
            if path:
                key = await asyncio.to_thread(load_service_account, Path(path))
            tokens = AccessTokens(self._http, host.clock, key)
            self._compute = ComputeClient(self._http, config.compute_endpoint, tokens)

    async def close(self) -> None:
        """Close the HTTPS client."""
        if self._http is not None:
            await self._http.close()

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        """Verify the token in ``payload``; the agent ID and selectors it grants."""
        if self._host is None or self._jwks is None or self._template is None:
            raise PluginError("gcp_iit: used before configure")
        config = self._config
        try:
            verified = await self._jwks.verify(payload, algorithms=_ALGORITHMS, rules=_RULES)
        except MalformedJwtError as error:
            raise InvalidArgumentError(f"unable to parse the identity token: {error}") from None
        except InvalidJwtError as error:
            raise PermissionDeniedError(f"identity token refused: {error}") from None
        identity = IdentityToken.from_claims(verified.claims)
        engine = identity.compute_engine
        if engine.project_id not in config.projectid_allow_list:
            raise PermissionDeniedError(
                f'identity token project ID "{engine.project_id}" is not in the allow list'
            )
        try:
            agent = self._template.agent_id(self._host.trust_domain, identity.template_values())
        except InvalidArgumentError as error:
            raise PermissionDeniedError(f"cannot make the agent ID: {error}") from None
        values = [
            f"project-id:{engine.project_id}",
            f"zone:{engine.zone}",
            f"instance-name:{engine.instance_name}",
        ]
        if identity.email:
            values.append(f"sa:{identity.email}")
        if self._compute is not None:
            instance = await self._compute.instance(
                engine.project_id, engine.zone, engine.instance_name
            )
            values += self._instance_values(instance)
        return AttestationResult(agent_id=agent, selector_values=tuple(values), can_reattest=False)

    def _instance_values(self, instance: Instance) -> list[str]:
        config = self._config
        values = [f"tag:{tag}" for tag in instance.tags]
        values += [
            f"label:{key}:{value}"
            for key, value in sorted(instance.labels.items())
            if key in config.allowed_label_keys
        ]
        for key, value in instance.metadata:
            if key not in config.allowed_metadata_keys:
                continue
            size = len((value or "").encode("utf-8"))
            if size > config.max_metadata_value_size:
                raise PermissionDeniedError(
                    f'instance metadata "{key}" is {size} bytes, over max_metadata_value_size '
                    f"({config.max_metadata_value_size})"
                )
            values.append(f"metadata:{key}:{value or ''}")
        return values
