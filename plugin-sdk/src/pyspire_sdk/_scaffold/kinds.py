"""What the scaffold knows about each plugin type beyond its templates."""

from __future__ import annotations

__all__ = ["PLUGIN_TYPES", "SCAFFOLD_KINDS", "ScaffoldKind"]

from dataclasses import dataclass

from pyspire_sdk.hookspecs import HOOKSPEC_MODULES

PLUGIN_TYPES: tuple[str, ...] = tuple(
    module.__name__.rsplit(".", 1)[1] for module in HOOKSPEC_MODULES
)
"""Every plugin type as written in TOML, one per hook specification module of the SDK."""


@dataclass(frozen=True)
class ScaffoldKind:
    """One plugin type as the scaffold writes it.

    ``sides`` are the processes that load plugins of the type (``server``, ``agent``).
    ``configs`` name the configuration classes of ``config.py`` (after the class prefix), in the
    order the type's hooks register them, each with the heading of its README table (empty
    for the only one). ``dependencies`` are requirements beyond the SDK. ``contract`` names
    the SDK's contract suite class for the type, empty while the SDK has none.
    """

    plugin_type: str
    title: str
    sides: tuple[str, ...]
    configs: tuple[tuple[str, str], ...] = (("Config", ""),)
    dependencies: tuple[str, ...] = ()
    contract: str = ""


_CRYPTOGRAPHY = "cryptography>=42"

SCAFFOLD_KINDS: dict[str, ScaffoldKind] = {
    kind.plugin_type: kind
    for kind in (
        ScaffoldKind("datastore", "datastore", ("server",), contract="DataStoreContract"),
        ScaffoldKind(
            "key_manager", "key manager", ("server", "agent"), contract="KeyManagerContract"
        ),
        ScaffoldKind(
            "node_attestor",
            "node attestor",
            ("server", "agent"),
            configs=(
                ("ServerConfig", "Server half"),
                ("AgentConfig", "Agent half"),
            ),
            contract="NodeAttestorContract",
        ),
        ScaffoldKind(
            "workload_attestor",
            "workload attestor",
            ("agent",),
            contract="WorkloadAttestorContract",
        ),
        ScaffoldKind(
            "upstream_authority",
            "upstream authority",
            ("server",),
            dependencies=(_CRYPTOGRAPHY,),
            contract="UpstreamAuthorityContract",
        ),
        ScaffoldKind("notifier", "notifier", ("server",)),
        ScaffoldKind("bundle_publisher", "bundle publisher", ("server",)),
        ScaffoldKind("credential_composer", "credential composer", ("server",)),
        ScaffoldKind("svid_store", "SVID store", ("agent",), dependencies=(_CRYPTOGRAPHY,)),
    )
}
"""The scaffold's knowledge of every plugin type, in :data:`PLUGIN_TYPES` order."""
