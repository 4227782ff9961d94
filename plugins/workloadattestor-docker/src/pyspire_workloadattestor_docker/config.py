"""Settings of the ``docker`` workload attestor, with SPIRE's names and defaults."""

from __future__ import annotations

__all__ = ["DEFAULT_DOCKER_SOCKET_PATH", "DockerAttestorConfig"]

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.cgroups import ContainerIdMatchers
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue, InvalidArgumentError

DEFAULT_DOCKER_SOCKET_PATH = "unix:///var/run/docker.sock"
"""Where the Docker Engine listens by default (the Docker client's default host)."""

_UNIX_SCHEME = "unix://"
_API_VERSION = re.compile(r"[0-9]+\.[0-9]+")


@dataclass(frozen=True, kw_only=True)
class DockerAttestorConfig:
    """How the ``docker`` attestor finds a caller's container and asks the engine about it."""

    docker_socket_path: str = setting(
        DEFAULT_DOCKER_SOCKET_PATH,
        description="the Docker Engine API address, a unix socket as unix:///path/to/docker.sock",
    )
    docker_version: str = setting(
        "",
        description=(
            "the Docker Engine API version to call, such as 1.41; empty calls the engine's "
            "own (latest) version"
        ),
    )
    container_id_cgroup_matchers: tuple[str, ...] = setting(
        (),
        description=(
            "cgroup path patterns that locate the container ID, such as /docker/<id>: * stands "
            "for one path segment and <id> for the container ID; needs "
            "use_new_container_locator = false"
        ),
    )
    use_new_container_locator: bool = setting(
        True,
        description=(
            "find the container ID as SPIRE's container locator does (the last 64-hex-digit "
            "word of each cgroup path); false uses container_id_cgroup_matchers"
        ),
    )
    verbose_container_locator_logs: bool = setting(
        False,
        description="log every cgroup line of an attested process at debug level",
    )

    @property
    def socket(self) -> Path:
        """The engine's unix socket (valid once :meth:`validate` found no issue)."""
        return Path(self.docker_socket_path.removeprefix(_UNIX_SCHEME))

    def matchers(self) -> ContainerIdMatchers | None:
        """The configured matchers, or ``None`` when the container locator is used."""
        if self.use_new_container_locator or not self.container_id_cgroup_matchers:
            return None
        return ContainerIdMatchers(self.container_id_cgroup_matchers)

    def validate(self) -> Iterator[ConfigIssue]:
        if not self.docker_socket_path.startswith(_UNIX_SCHEME) or not self.socket.is_absolute():
            yield ConfigIssue(
                "docker_socket_path",
                f"must be unix:// followed by an absolute path, got {self.docker_socket_path!r}",
            )
        if self.docker_version and not _API_VERSION.fullmatch(self.docker_version):
            yield ConfigIssue(
                "docker_version",
                f"must be an API version such as 1.41, got {self.docker_version!r}",
            )
        if self.container_id_cgroup_matchers and self.use_new_container_locator:
            yield ConfigIssue(
                "container_id_cgroup_matchers",
                "the new container locator and custom cgroup matchers cannot both be used; "
                "set use_new_container_locator = false to use the matchers",
            )
        elif self.container_id_cgroup_matchers:
            try:
                ContainerIdMatchers(self.container_id_cgroup_matchers, key="")
            except InvalidArgumentError as error:
                yield ConfigIssue("container_id_cgroup_matchers", str(error).removeprefix(": "))
