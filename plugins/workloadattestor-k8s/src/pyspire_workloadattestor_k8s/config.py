"""Settings of the ``k8s`` workload attestor, with SPIRE's names and defaults."""

from __future__ import annotations

__all__ = [
    "DEFAULT_KUBELET_CA_PATH",
    "DEFAULT_NODE_NAME_ENV",
    "DEFAULT_SECURE_KUBELET_PORT",
    "DEFAULT_TOKEN_PATH",
    "K8sAttestorConfig",
]

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue

DEFAULT_SECURE_KUBELET_PORT = 10250
DEFAULT_MAX_POLL_ATTEMPTS = 60
DEFAULT_POLL_RETRY_INTERVAL = timedelta(milliseconds=500)
DEFAULT_RELOAD_INTERVAL = timedelta(minutes=1)
DEFAULT_KUBELET_CA_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
DEFAULT_TOKEN_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
DEFAULT_NODE_NAME_ENV = "MY_NODE_NAME"


@dataclass(frozen=True, kw_only=True)
class K8sAttestorConfig:
    """How the ``k8s`` attestor reaches the kubelet of its node and what it reports."""

    kubelet_read_only_port: int = setting(
        0,
        description=(
            "the kubelet's read-only HTTP port on 127.0.0.1; 0 uses the secure port instead "
            "(the two cannot both be set)"
        ),
    )
    kubelet_secure_port: int = setting(
        0,
        description=f"the kubelet's HTTPS port; 0 means {DEFAULT_SECURE_KUBELET_PORT}",
    )
    kubelet_ca_path: Path = setting(
        DEFAULT_KUBELET_CA_PATH,
        description="the CA certificates the kubelet's serving certificate is verified against",
    )
    skip_kubelet_verification: bool = setting(
        False, description="do not verify the kubelet's serving certificate at all"
    )
    token_path: Path = setting(
        DEFAULT_TOKEN_PATH,
        description=(
            "the service account token sent to the kubelet, re-read every reload_interval; "
            "not used with a client certificate or anonymous authentication"
        ),
    )
    certificate_path: Path | None = setting(
        None,
        description="a client certificate to present to the kubelet instead of the token",
    )
    private_key_path: Path | None = setting(None, description="the private key of certificate_path")
    use_anonymous_authentication: bool = setting(
        False, description="send neither a token nor a client certificate"
    )
    node_name_env: str = setting(
        DEFAULT_NODE_NAME_ENV,
        description=(
            "the environment variable holding this node's name, used when node_name is empty"
        ),
    )
    node_name: str = setting(
        "",
        description=(
            "this node's name: the kubelet is reached by it and its certificate must name it; "
            "without a name the kubelet is reached at 127.0.0.1 and only its chain is verified"
        ),
    )
    max_poll_attempts: int = setting(
        DEFAULT_MAX_POLL_ATTEMPTS,
        description=(
            "how many pod lists are fetched before a container the kubelet does not list yet "
            "fails the attestation; 0 or less means 60"
        ),
    )
    poll_retry_interval: timedelta = setting(
        DEFAULT_POLL_RETRY_INTERVAL,
        description="the wait between two pod list fetches of one attestation; 0 means 500ms",
    )
    reload_interval: timedelta = setting(
        DEFAULT_RELOAD_INTERVAL,
        description="how often the token is re-read from token_path; 0 means 1m",
    )
    disable_container_selectors: bool = setting(
        False,
        description=(
            "leave out the container-name and container-image selectors, and attest a process "
            "of a known pod even when its container is not listed"
        ),
    )
    verbose_container_locator_logs: bool = setting(
        False, description="log every cgroup line of an attested process at debug level"
    )

    @property
    def secure(self) -> bool:
        return self.kubelet_read_only_port <= 0

    @property
    def port(self) -> int:
        if not self.secure:
            return self.kubelet_read_only_port
        return (
            self.kubelet_secure_port
            if self.kubelet_secure_port > 0
            else (DEFAULT_SECURE_KUBELET_PORT)
        )

    @property
    def attempts(self) -> int:
        return self.max_poll_attempts if self.max_poll_attempts > 0 else DEFAULT_MAX_POLL_ATTEMPTS

    @property
    def retry_interval(self) -> timedelta:
        if self.poll_retry_interval > timedelta(0):
            return self.poll_retry_interval
        return DEFAULT_POLL_RETRY_INTERVAL

    @property
    def token_reload_interval(self) -> timedelta:
        if self.reload_interval > timedelta(0):
            return self.reload_interval
        return DEFAULT_RELOAD_INTERVAL

    def validate(self) -> Iterator[ConfigIssue]:
        if self.kubelet_read_only_port > 0 and self.kubelet_secure_port > 0:
            yield ConfigIssue("", "cannot use both the read-only and secure port")
        for key, port in (
            ("kubelet_read_only_port", self.kubelet_read_only_port),
            ("kubelet_secure_port", self.kubelet_secure_port),
        ):
            if port > 65535:
                yield ConfigIssue(key, f"must be a port number, got {port}")
        if self.certificate_path is not None and self.private_key_path is None:
            yield ConfigIssue("private_key_path", "is required with certificate_path")
        if self.private_key_path is not None and self.certificate_path is None:
            yield ConfigIssue("certificate_path", "is required with private_key_path")
