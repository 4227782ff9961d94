"""The ``environ`` workload attestor: chosen environment variables of the calling process.

For each configured variable name present in the workload's ``/proc/<pid>/environ``, the
attestor returns the selector value ``NAME:value`` (the agent adds the selector type
``environ``), so a registration entry can require ``environ:APP:billing``.

What this can and cannot prove: ``/proc/<pid>/environ`` holds the environment the process was
*started* with; later changes made by the process itself are not visible. Whoever starts a
process chooses its environment, so use these selectors together with others (``unix:uid``,
a container image) that say who started it.
"""

from __future__ import annotations

__all__ = ["EnvironAttestor", "EnvironConfig"]

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue, InvalidArgumentError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.procfs import DEFAULT_PROC_ROOT, read_start_time


@dataclass(frozen=True, kw_only=True)
class EnvironConfig:
    """Settings of the ``environ`` workload attestor."""

    names: tuple[str, ...] = setting(
        description=(
            "environment variable names to turn into selectors `NAME:value`, in this order; "
            "a name may not be empty or contain '=', ':' or NUL"
        ),
    )
    max_value_bytes: int = setting(
        256,
        description="values longer than this many bytes are skipped rather than turned into "
        "selectors",
    )

    def validate(self) -> Iterator[ConfigIssue]:
        """Rules that span fields: at least one name, each usable, none twice, a positive
        size limit."""
        if not self.names:
            yield ConfigIssue("names", "at least one variable name is required")
        seen: set[str] = set()
        for index, name in enumerate(self.names):
            if not name:
                yield ConfigIssue(f"names[{index}]", "a variable name must not be empty")
            elif any(character in name for character in "=:\0"):
                yield ConfigIssue(
                    f"names[{index}]",
                    f"invalid variable name {name!r}: it must not contain '=', ':' or NUL",
                )
            elif name in seen:
                yield ConfigIssue(f"names[{index}]", f"variable name {name!r} is listed twice")
            seen.add(name)
        if self.max_value_bytes < 1:
            yield ConfigIssue(
                "max_value_bytes", f"must be at least 1, found {self.max_value_bytes}"
            )


def _read_environ(path: Path, pid: int) -> bytes:
    try:
        return path.read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        raise UnavailableError(f"process {pid} does not exist") from None
    except PermissionError:
        raise UnavailableError(f"process {pid}: reading environ is not permitted") from None
    except OSError as error:
        raise UnavailableError(
            f"process {pid}: reading environ failed: {error.strerror or error}"
        ) from None


def _parse_environ(data: bytes) -> dict[bytes, bytes]:
    """``NAME=value`` records separated by NUL; the first record of a name wins, as with
    ``getenv``."""
    variables: dict[bytes, bytes] = {}
    for record in data.split(b"\0"):
        name, separator, value = record.partition(b"=")
        if separator and name and name not in variables:
            variables[name] = value
    return variables


class EnvironAttestor:
    """A :class:`~pyspire_sdk.plugins.workload_attestor.WorkloadAttestor` reading
    ``/proc/<pid>/environ``.

    Guarantees: values come only from the configured names, in configured order; a value
    longer than ``max_value_bytes`` or not valid UTF-8 is skipped (and its name logged, never
    the value, which may be a secret); a process that vanishes, cannot be read, or whose pid is
    reused while it is read raises :class:`~pyspire_sdk.errors.UnavailableError`. File work runs
    in a thread; ``attest`` is safe to call concurrently.
    """

    def __init__(self, *, proc_root: Path = DEFAULT_PROC_ROOT) -> None:
        self._proc_root = proc_root
        self._config: EnvironConfig | None = None
        self._host: HostServices | None = None

    async def configure(self, config: EnvironConfig, host: HostServices) -> None:
        """Keep the settings; nothing is opened."""
        self._config = config
        self._host = host

    async def close(self) -> None:
        """Nothing to release; the attestor holds no files between calls."""
        self._config = None

    async def attest(self, pid: int) -> Sequence[str]:
        """``NAME:value`` for every configured name set in the environment of ``pid``."""
        config = self._config
        if config is None or self._host is None:
            raise PluginError("environ workload attestor is not configured (or already closed)")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise InvalidArgumentError(f"pid must be a positive integer, got {pid!r}")
        start_time = await read_start_time(pid, proc_root=self._proc_root)
        data = await asyncio.to_thread(_read_environ, self._proc_root / str(pid) / "environ", pid)
        if await read_start_time(pid, proc_root=self._proc_root) != start_time:
            raise UnavailableError(
                f"process {pid} was replaced by another process while being read"
            )
        variables = _parse_environ(data)
        values: list[str] = []
        for name in config.names:
            raw = variables.get(name.encode("utf-8", errors="surrogateescape"))
            if raw is None:
                continue
            if len(raw) > config.max_value_bytes:
                self._host.logger.debug(
                    "environment variable skipped",
                    pid=pid,
                    variable=name,
                    reason=f"value is longer than {config.max_value_bytes} bytes",
                )
                continue
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._host.logger.debug(
                    "environment variable skipped",
                    pid=pid,
                    variable=name,
                    reason="value is not valid utf-8",
                )
                continue
            values.append(f"{name}:{value}")
        return values
