"""The two Docker Engine API calls the attestor makes, over the engine's unix socket."""

from __future__ import annotations

__all__ = ["ContainerFacts", "DockerEngine"]

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.http import HttpClient, HttpStatusError

ENGINE_TIMEOUT = 10.0
"""Seconds one engine call may take."""

MAX_INSPECT_BYTES = 4 * 1024 * 1024
"""The largest inspect document read; containers with huge environments stay well below."""


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    """What ``GET /containers/{id}/json`` says about a container's configuration."""

    labels: Mapping[str, str]
    env: tuple[str, ...]
    image: str


def _text_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise UnavailableError(f"docker engine: container {field} is not a map of strings")
    return dict(value)


def _text_list(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UnavailableError(f"docker engine: container {field} is not a list of strings")
    return tuple(value)


class DockerEngine:
    """A client of one Docker Engine; open it in ``configure``, close it in ``close``.

    ``api_version`` (``"1.41"``) prefixes every path with ``/v1.41`` as the Docker client
    does; empty calls the engine's own version.
    """

    def __init__(self, socket: Path, api_version: str = "") -> None:
        self._client = HttpClient(
            unix_socket=socket, timeout=ENGINE_TIMEOUT, max_response_bytes=MAX_INSPECT_BYTES
        )
        self._base = "http://docker" + (f"/v{api_version}" if api_version else "")

    async def close(self) -> None:
        await self._client.close()

    async def inspect_container(self, container_id: str) -> ContainerFacts:
        """The configuration of container ``container_id``; :class:`UnavailableError` when the
        engine cannot be reached, does not know the container or answers something else."""
        url = f"{self._base}/containers/{quote(container_id, safe='')}/json"
        document = (await self._client.get(url)).json_object()
        config = document.get("Config")
        if not isinstance(config, dict):
            raise UnavailableError("docker engine: the container has no Config")
        image = config.get("Image") or ""
        if not isinstance(image, str):
            raise UnavailableError("docker engine: container Config.Image is not a string")
        return ContainerFacts(
            labels=_text_map(config.get("Labels"), "Config.Labels"),
            env=_text_list(config.get("Env"), "Config.Env"),
            image=image,
        )

    async def image_id(self, image: str) -> str | None:
        """The ID (config digest) of ``image``, or ``None`` when the engine has no such image
        any more (it may be removed while a container of it runs)."""
        url = f"{self._base}/images/{quote(image, safe='')}/json"
        try:
            document = (await self._client.get(url)).json_object()
        except HttpStatusError as error:
            if error.status == 404:
                return None
            raise
        identifier = document.get("Id")
        return identifier if isinstance(identifier, str) and identifier else None
