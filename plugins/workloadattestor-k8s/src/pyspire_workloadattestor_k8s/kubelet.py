"""The kubelet's ``/pods`` endpoint, fetched at most once per retry interval.

Every attestation of a process in a pod needs the pod list, and on a busy node many arrive at
once; like SPIRE, concurrent attestations share one fetch, and a list fetched less than
``poll_retry_interval`` ago is reused by a new attestation. An attestation that retries (its
container is not listed yet) waits for a list fetched after the one it saw.
"""

from __future__ import annotations

__all__ = ["KUBELET_TIMEOUT", "MAX_POD_LIST_BYTES", "PodList", "PodListSource"]

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.http import HttpClient, HttpError
from pyspire_workloadattestor_k8s.config import K8sAttestorConfig
from pyspire_workloadattestor_k8s.pods import Pod, parse_pod_list

KUBELET_TIMEOUT = 10.0
"""Seconds one pod list fetch may take."""

MAX_POD_LIST_BYTES = 64 * 1024 * 1024
"""The largest pod list read: a node's pods with long specs stay well below."""


@dataclass(frozen=True, slots=True)
class PodList:
    """The pods listed at ``fetched_at`` (on the attestor's clock)."""

    pods: tuple[Pod, ...]
    fetched_at: datetime


def _read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise UnavailableError(
            f"token_path {str(path)!r} cannot be read: {error.strerror or error}"
        ) from None


class PodListSource:
    """Fetches the pod list from the kubelet the configuration names."""

    def __init__(self, config: K8sAttestorConfig, node_name: str, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        host = node_name or "127.0.0.1"
        if config.secure:
            self.url = f"https://{host}:{config.port}/pods"
        else:
            self.url = f"http://127.0.0.1:{config.port}/pods"
        verified = config.secure and not config.skip_kubelet_verification
        self._client = HttpClient(
            timeout=KUBELET_TIMEOUT,
            max_response_bytes=MAX_POD_LIST_BYTES,
            ca_file=config.kubelet_ca_path if verified else None,
            verify=not config.skip_kubelet_verification,
            # Without a node name the kubelet is reached at 127.0.0.1, which its certificate
            # does not name: SPIRE then verifies the chain alone.
            check_hostname=bool(node_name),
            client_certificate=config.certificate_path if config.secure else None,
            client_key=config.private_key_path if config.secure else None,
        )
        self._uses_token = (
            config.secure
            and not config.use_anonymous_authentication
            and config.certificate_path is None
        )
        self._token: tuple[datetime, str] | None = None
        self._latest: PodList | None = None
        self._fetching = asyncio.Lock()

    async def open(self) -> None:
        """Load the kubelet CA and the client certificate now, so a configuration naming
        files that cannot be read fails at start; raises
        :class:`~pyspire_sdk.errors.UnavailableError` naming the file."""
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def _headers(self) -> dict[str, str]:
        if not self._uses_token:
            return {}
        now = self._clock.now()
        if self._token is None or now - self._token[0] >= self._config.token_reload_interval:
            self._token = (now, await asyncio.to_thread(_read_token, self._config.token_path))
        return {"Authorization": f"Bearer {self._token[1]}"}

    def _fresh(self, newer_than: datetime | None) -> PodList | None:
        latest = self._latest
        if latest is None:
            return None
        if newer_than is not None:
            return latest if latest.fetched_at > newer_than else None
        interval: timedelta = self._config.retry_interval
        return latest if self._clock.now() < latest.fetched_at + interval else None

    async def pods(self, newer_than: datetime | None = None) -> PodList:
        """A pod list: a recent one when ``newer_than`` is ``None``, else one fetched after
        ``newer_than``. Raises :class:`~pyspire_sdk.errors.UnavailableError` when the kubelet
        cannot be reached or answers something that is not a pod list."""
        async with self._fetching:
            cached = self._fresh(newer_than)
            if cached is not None:
                return cached
            started = self._clock.now()
            try:
                response = await self._client.get(self.url, headers=await self._headers())
                document = await asyncio.to_thread(json.loads, response.body)
            except HttpError as error:
                raise UnavailableError(f"kubelet pod list: {error}") from None
            except ValueError:
                raise UnavailableError("kubelet pod list: the response is not JSON") from None
            listed = PodList(await asyncio.to_thread(parse_pod_list, document), started)
            self._latest = listed
            return listed
