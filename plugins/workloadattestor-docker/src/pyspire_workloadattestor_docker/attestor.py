"""The ``docker`` workload attestor.

Selector values, as SPIRE's ``docker`` attestor makes them (the host adds the type ``docker``):

- ``label:<key>:<value>`` for every label of the container;
- ``env:<NAME>=<value>`` for every variable of the container's configured environment;
- ``image_id:<image>``: the image the container was created from, as given then
  (``registry/app:1.2``, or an ID);
- ``image_config_digest:<id>``: that image's ID, the digest of its configuration
  (``sha256:...``), when the engine still has the image.

A process that is in no container gets no selectors ("no opinion"). Everything else the
attestor cannot establish (the engine unreachable, the container unknown after retries, two
containers named by one process's cgroups) fails the attestation.
"""

from __future__ import annotations

__all__ = ["DockerAttestor"]

from pathlib import Path

import structlog
from structlog.typing import FilteringBoundLogger

from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.cgroups import CgroupLine, ContainerIdMatchers, find_container
from pyspire_sdk.clock import Clock, SystemClock
from pyspire_sdk.errors import InvalidArgumentError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.procfs import DEFAULT_PROC_ROOT, read_cgroups
from pyspire_workloadattestor_docker.config import DockerAttestorConfig
from pyspire_workloadattestor_docker.engine import ContainerFacts, DockerEngine

PLUGIN_NAME = "docker"

INSPECT_RETRIES = 3
"""Further tries of a failed container inspection, as SPIRE makes: a container that has just
started may not be inspectable yet."""

INSPECT_BACKOFF = BackoffPolicy(initial=0.1, maximum=0.4)
"""Waits between inspection tries: 100, 200 and 400 ms at most, as SPIRE's."""


def _selector_values(facts: ContainerFacts, image_id: str | None) -> list[str]:
    values = [f"label:{key}:{value}" for key, value in facts.labels.items()]
    values.extend(f"env:{variable}" for variable in facts.env)
    if facts.image:
        values.append(f"image_id:{facts.image}")
    if image_id:
        values.append(f"image_config_digest:{image_id}")
    return values


class DockerAttestor:
    """Attests processes running in Docker containers by their container's configuration.

    ``proc_root`` is a seam for a host procfs mounted elsewhere and for tests.
    """

    def __init__(self, proc_root: Path = DEFAULT_PROC_ROOT) -> None:
        self._proc_root = proc_root
        self._config: DockerAttestorConfig | None = None
        self._matchers: ContainerIdMatchers | None = None
        self._engine: DockerEngine | None = None
        self._clock: Clock = SystemClock()
        self._logger: FilteringBoundLogger = structlog.get_logger().bind(plugin=PLUGIN_NAME)

    async def configure(self, config: DockerAttestorConfig, host: HostServices) -> None:
        """Keep ``config`` and prepare the engine client; nothing is dialled until a process
        is attested, so an engine that starts after the agent is fine."""
        engine = DockerEngine(config.socket, config.docker_version)
        previous, self._engine = self._engine, engine
        if previous is not None:
            await previous.close()
        self._matchers = config.matchers()
        self._config = config
        self._clock = host.clock
        self._logger = host.logger
        self._logger.info(
            "docker workload attestor configured",
            docker_socket_path=config.docker_socket_path,
            docker_version=config.docker_version or "engine default",
            container_locator="matchers" if self._matchers is not None else "cgroup paths",
        )

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.close()

    def _container_id(self, pid: int, lines: tuple[CgroupLine, ...]) -> str | None:
        assert self._config is not None
        if self._config.verbose_container_locator_logs:
            for index, line in enumerate(lines, start=1):
                self._logger.debug(
                    "cgroup enumerated", pid=pid, index=index, total=len(lines), path=line.path
                )
        if self._matchers is not None:
            return self._matchers.find(lines)
        found = find_container(lines)
        return found.container_id if found is not None else None

    async def _inspect(self, engine: DockerEngine, container_id: str) -> ContainerFacts:
        backoff = Backoff(INSPECT_BACKOFF)
        while True:
            try:
                return await engine.inspect_container(container_id)
            except UnavailableError as error:
                if backoff.failures >= INSPECT_RETRIES:
                    raise UnavailableError(
                        f"container {container_id}: cannot inspect it: {error}"
                    ) from None
                await self._clock.sleep(backoff.failed())

    async def attest(self, pid: int) -> list[str]:
        """The selector values of process ``pid`` (without the ``docker`` type); ``[]`` for a
        process in no container."""
        engine = self._engine
        if self._config is None or engine is None:
            raise PluginError("docker workload attestor is not configured")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise InvalidArgumentError(f"pid must be a positive integer, got {pid!r}")
        lines = await read_cgroups(pid, proc_root=self._proc_root)
        container_id = self._container_id(pid, lines)
        if container_id is None:
            return []
        facts = await self._inspect(engine, container_id)
        image_id = await engine.image_id(facts.image) if facts.image else None
        return _selector_values(facts, image_id)
