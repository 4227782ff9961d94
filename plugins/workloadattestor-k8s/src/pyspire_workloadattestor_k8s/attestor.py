"""The ``k8s`` workload attestor.

Selector values, as SPIRE's ``k8s`` attestor makes them (the host adds the type ``k8s``), for a
process whose container the kubelet lists:

- ``sa:<service account>``, ``ns:<namespace>``, ``node-name:<node>``, ``pod-uid:<uid>``,
  ``pod-name:<name>``;
- ``pod-label:<key>:<value>`` per label, ``pod-owner:<kind>:<name>`` and
  ``pod-owner-uid:<kind>:<uid>`` per owner reference;
- ``pod-image:<image>`` for the image name and image ID of every container,
  ``pod-image-count:<n>`` (containers), and ``pod-init-image:...``/``pod-init-image-count:<n>``
  for init containers;
- unless ``disable_container_selectors``: ``container-name:<name>`` and
  ``container-image:<image>`` (name and ID) of the caller's own container.

A process in no container gets no selectors. A container the kubelet does not list yet (it
has just started) is looked for again every ``poll_retry_interval``, up to
``max_poll_attempts`` pod lists; then, or when the kubelet cannot be reached, the attestation
fails.
"""

from __future__ import annotations

__all__ = ["K8sAttestor"]

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import structlog
from structlog.typing import FilteringBoundLogger

from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.cgroups import ContainerIdentity, find_container
from pyspire_sdk.errors import InvalidArgumentError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.procfs import DEFAULT_PROC_ROOT, read_cgroups
from pyspire_workloadattestor_k8s.config import K8sAttestorConfig
from pyspire_workloadattestor_k8s.kubelet import PodList, PodListSource
from pyspire_workloadattestor_k8s.pods import container_selectors, pod_selectors

PLUGIN_NAME = "k8s"


class K8sAttestor:
    """Attests processes of Kubernetes pods on this node by what the kubelet says of them.

    ``proc_root`` is a seam for a host procfs mounted elsewhere and for tests; ``environ``
    (``os.environ.get`` by default) is where ``node_name_env`` is looked up.
    """

    def __init__(
        self,
        proc_root: Path = DEFAULT_PROC_ROOT,
        environ: Callable[[str], str | None] = os.environ.get,
    ) -> None:
        self._proc_root = proc_root
        self._environ = environ
        self._config: K8sAttestorConfig | None = None
        self._source: PodListSource | None = None
        self._host: HostServices | None = None
        self._logger: FilteringBoundLogger = structlog.get_logger().bind(plugin=PLUGIN_NAME)

    def _node_name(self, config: K8sAttestorConfig) -> str:
        if config.node_name:
            return config.node_name
        return self._environ(config.node_name_env) or ""

    async def configure(self, config: K8sAttestorConfig, host: HostServices) -> None:
        """Keep ``config`` and load the kubelet CA and client certificate (a file that cannot
        be read fails here, naming it); the kubelet is first asked when a process in a pod is
        attested, and the token is read then (and again every ``reload_interval``)."""
        node_name = self._node_name(config)
        source = PodListSource(config, node_name, host.clock)
        try:
            await source.open()
        except UnavailableError:
            await source.close()
            raise
        previous, self._source = self._source, source
        if previous is not None:
            await previous.close()
        self._config = config
        self._host = host
        self._logger = host.logger
        self._logger.info(
            "k8s workload attestor configured", kubelet=source.url, node_name=node_name or None
        )

    async def close(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            await source.close()

    async def _identity(self, pid: int) -> ContainerIdentity | None:
        assert self._config is not None
        lines = await read_cgroups(pid, proc_root=self._proc_root)
        if self._config.verbose_container_locator_logs:
            for index, line in enumerate(lines, start=1):
                self._logger.debug(
                    "cgroup enumerated", pid=pid, index=index, total=len(lines), path=line.path
                )
        return find_container(lines, with_pod_uid=True)

    def _selectors(self, listed: PodList, identity: ContainerIdentity) -> list[str] | None:
        """The values for ``identity`` in ``listed``, or ``None`` when it is not listed."""
        assert self._config is not None
        found: list[str] | None = None
        for pod in listed.pods:
            if identity.pod_uid is not None and pod.uid != identity.pod_uid:
                continue
            status = pod.container(identity.container_id)
            values: list[str] | None = None
            if status is not None:
                values = pod_selectors(pod)
                if not self._config.disable_container_selectors:
                    values += container_selectors(status)
            elif identity.pod_uid is not None and self._config.disable_container_selectors:
                values = pod_selectors(pod)
            if values is not None:
                if found is not None:
                    raise UnavailableError(f"two pods found with container {identity.container_id}")
                found = values
        return found

    async def attest(self, pid: int) -> list[str]:
        """The selector values of process ``pid`` (without the ``k8s`` type); ``[]`` for a
        process in no container."""
        config, source, host = self._config, self._source, self._host
        if config is None or source is None or host is None:
            raise PluginError("k8s workload attestor is not configured")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise InvalidArgumentError(f"pid must be a positive integer, got {pid!r}")
        identity = await self._identity(pid)
        if identity is None:
            return []
        interval = config.retry_interval.total_seconds()
        backoff = Backoff(BackoffPolicy(initial=interval, maximum=interval, jitter=0))
        seen: datetime | None = None
        for attempt in range(1, config.attempts + 1):
            try:
                listed = await source.pods(newer_than=seen)
            except UnavailableError as error:
                if attempt >= config.attempts:
                    raise
                self._logger.warning(
                    "unable to get pod list; will retry", error=str(error), attempt=attempt
                )
            else:
                seen = listed.fetched_at
                values = self._selectors(listed, identity)
                if values is not None:
                    return values
                self._logger.debug(
                    "container not listed yet; will retry",
                    container_id=identity.container_id,
                    pod_uid=identity.pod_uid,
                    attempt=attempt,
                )
            if attempt < config.attempts:
                await host.clock.sleep(backoff.failed())
        raise UnavailableError(
            f"container {identity.container_id}: no selectors found after "
            f"{config.attempts} poll attempts"
        )
