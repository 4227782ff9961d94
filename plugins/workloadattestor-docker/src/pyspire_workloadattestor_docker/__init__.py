"""The ``docker`` workload attestor: selectors from the caller's Docker container."""

from pyspire_workloadattestor_docker.attestor import DockerAttestor
from pyspire_workloadattestor_docker.config import DockerAttestorConfig
from pyspire_workloadattestor_docker.engine import ContainerFacts, DockerEngine

__all__ = ["ContainerFacts", "DockerAttestor", "DockerAttestorConfig", "DockerEngine"]
