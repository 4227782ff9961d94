"""The ``k8s`` workload attestor: selectors from the caller's Kubernetes pod and container."""

from pyspire_workloadattestor_k8s.attestor import K8sAttestor
from pyspire_workloadattestor_k8s.config import K8sAttestorConfig
from pyspire_workloadattestor_k8s.kubelet import PodList, PodListSource
from pyspire_workloadattestor_k8s.pods import ContainerStatus, Pod

__all__ = ["ContainerStatus", "K8sAttestor", "K8sAttestorConfig", "Pod", "PodList", "PodListSource"]
