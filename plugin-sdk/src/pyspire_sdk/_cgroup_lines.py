"""The lines of ``/proc/<pid>/cgroup``: read by :mod:`pyspire_sdk.procfs`, interpreted by
:mod:`pyspire_sdk.cgroups` (which re-exports these names)."""

from __future__ import annotations

from typing import NamedTuple

from pyspire_sdk.errors import UnavailableError


class CgroupLine(NamedTuple):
    """One line ``hierarchy-ID:controller-list:cgroup-path``; on cgroup v2 the one line is
    ``("0", "", "/path")``, and the path may itself hold colons."""

    hierarchy_id: str
    controllers: str
    path: str


def parse_cgroups(text: str, *, pid: int | None = None) -> tuple[CgroupLine, ...]:
    """The lines of a cgroup file; empty lines are skipped. A line with fewer than three
    colon-separated fields raises :class:`~pyspire_sdk.errors.UnavailableError` (the file is
    the kernel's, so a malformed one means something is wrong, not that there is no answer)."""
    lines: list[CgroupLine] = []
    for line in text.splitlines():
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            who = f"process {pid}: " if pid is not None else ""
            raise UnavailableError(f"{who}cgroup line {line!r} is malformed")
        lines.append(CgroupLine(parts[0], parts[1], parts[2]))
    return tuple(lines)
