"""What a GCP instance identity token says, and the names both halves agree on.

The token is the one the metadata service returns for
``/computeMetadata/v1/instance/service-accounts/<account>/identity?audience=...&format=full``:
a JWT signed by Google (RS256) whose ``google.compute_engine`` claim describes the instance
(SPIRE's ``gcp.IdentityToken``).
"""

from __future__ import annotations

__all__ = ["PLUGIN_NAME", "TOKEN_AUDIENCE", "ComputeEngine", "IdentityToken"]

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire_sdk.errors import PermissionDeniedError

PLUGIN_NAME = "gcp_iit"
TOKEN_AUDIENCE = "spire-gcp-node-attestor"  # noqa: S105 - an audience
"""The audience the agent asks the token for and the server requires (SPIRE's)."""


@dataclass(frozen=True)
class ComputeEngine:
    """The instance the token was issued to."""

    project_id: str
    project_number: int
    zone: str
    instance_id: str
    instance_name: str
    instance_creation_timestamp: int


@dataclass(frozen=True)
class IdentityToken:
    """The claims of a verified instance identity token that attestation uses."""

    email: str
    compute_engine: ComputeEngine

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> IdentityToken:
        """Read the claims; a token without the instance's details (one requested without
        ``format=full``) is refused with :class:`PermissionDeniedError`."""
        google = claims.get("google")
        engine = google.get("compute_engine") if isinstance(google, Mapping) else None
        if not isinstance(engine, Mapping):
            raise PermissionDeniedError(
                "identity token has no google.compute_engine claim (it must be requested "
                "with format=full)"
            )

        def text(name: str) -> str:
            value = engine.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            if not isinstance(value, str) or not value:
                raise PermissionDeniedError(
                    f"identity token claim google.compute_engine.{name} is missing"
                )
            return value

        def number(name: str) -> int:
            value = engine.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PermissionDeniedError(
                    f"identity token claim google.compute_engine.{name} is not a number"
                )
            return value

        email = claims.get("email", "")
        return cls(
            email=email if isinstance(email, str) else "",
            compute_engine=ComputeEngine(
                project_id=text("project_id"),
                project_number=number("project_number"),
                zone=text("zone"),
                instance_id=text("instance_id"),
                instance_name=text("instance_name"),
                instance_creation_timestamp=number("instance_creation_timestamp"),
            ),
        )

    def template_values(self) -> dict[str, str]:
        """The fields ``agent_path_template`` may use (SPIRE's names)."""
        engine = self.compute_engine
        return {
            "PluginName": PLUGIN_NAME,
            "ProjectID": engine.project_id,
            "ProjectNumber": str(engine.project_number),
            "Zone": engine.zone,
            "InstanceID": engine.instance_id,
            "InstanceName": engine.instance_name,
            "InstanceCreationTimestamp": str(engine.instance_creation_timestamp),
            "ServiceAccount": self.email.replace("@", "_"),
        }


TEMPLATE_FIELDS = (
    "PluginName",
    "ProjectID",
    "ProjectNumber",
    "Zone",
    "InstanceID",
    "InstanceName",
    "InstanceCreationTimestamp",
    "ServiceAccount",
)
"""Every field :meth:`IdentityToken.template_values` provides."""

__all__ += ["TEMPLATE_FIELDS"]
