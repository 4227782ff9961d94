"""The module pyspire loads through the entry point: it registers the ``docker`` attestor.

Registration imports no HTTP client: the engine client is made when the agent configures the
attestor, and aiohttp is loaded at the first engine call.
"""

from __future__ import annotations

__all__ = ["pyspire_workload_attestors"]

from typing import Any

from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor


@hookimpl
def pyspire_workload_attestors() -> list[PluginRegistration[Any, WorkloadAttestor]]:
    from pyspire_workloadattestor_docker.attestor import PLUGIN_NAME, DockerAttestor
    from pyspire_workloadattestor_docker.config import DockerAttestorConfig

    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=DockerAttestorConfig,
            factory=DockerAttestor,
            description="labels, environment and image of the caller's Docker container",
        )
    ]
