"""The module pyspire loads through the entry point: it registers the ``k8s`` attestor.

Registration imports no HTTP client: aiohttp is loaded at the first kubelet call.
"""

from __future__ import annotations

__all__ = ["pyspire_workload_attestors"]

from typing import Any

from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor


@hookimpl
def pyspire_workload_attestors() -> list[PluginRegistration[Any, WorkloadAttestor]]:
    from pyspire_workloadattestor_k8s.attestor import PLUGIN_NAME, K8sAttestor
    from pyspire_workloadattestor_k8s.config import K8sAttestorConfig

    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=K8sAttestorConfig,
            factory=K8sAttestor,
            description="pod and container of the caller, from the kubelet of this node",
        )
    ]
