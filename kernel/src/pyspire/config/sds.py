"""The ``[agent.sds]`` table: how the agent names the secrets it serves to Envoy over SDS.

Keys and defaults are SPIRE's (``doc/spire_agent.md``, "SDS Configuration").
"""

from __future__ import annotations

__all__ = ["SdsConfig"]

from collections.abc import Iterator
from dataclasses import dataclass

from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue
from pyspire_sdk.limits import first_control_character

_NAME_KEYS = ("default_svid_name", "default_bundle_name", "default_all_bundles_name")


@dataclass(frozen=True, kw_only=True)
class SdsConfig:
    """Resource names and validator choice of the Envoy Secret Discovery Service."""

    default_svid_name: str = setting(
        default="default",
        description="Resource name of the TLS certificate holding the caller's default X509-SVID.",
    )
    default_bundle_name: str = setting(
        default="ROOTCA",
        description="Resource name of the validation context of the agent's own trust domain.",
    )
    default_all_bundles_name: str = setting(
        default="ALL",
        description=(
            "Resource name of the validation context of every trust domain the caller may see "
            "(own and federated; needs the SPIFFE certificate validator)."
        ),
    )
    disable_spiffe_cert_validation: bool = setting(
        default=False,
        description=(
            "Send validation contexts with trusted CAs instead of Envoy's SPIFFE certificate "
            "validator; an Envoy's node metadata key of the same name overrides it."
        ),
    )

    def validate(self) -> Iterator[ConfigIssue]:
        for key in _NAME_KEYS:
            value: str = getattr(self, key)
            if not value.strip():
                yield ConfigIssue(key, "must not be empty")
            elif first_control_character(value) is not None:
                yield ConfigIssue(key, "must not hold control characters")

    def warnings(self) -> list[ConfigIssue]:
        """SPIRE's advice: equal default bundle names make the all-bundles name unreachable."""
        if self.default_bundle_name == self.default_all_bundles_name:
            return [
                ConfigIssue(
                    "default_all_bundles_name",
                    "equals default_bundle_name, so it is ignored: the name serves the agent's "
                    "own trust domain only; give the two distinct values",
                )
            ]
        return []
