"""Which container, and which Kubernetes pod, a process runs in, from ``/proc/<pid>/cgroup``.

Container attestors (docker, k8s) begin with the same question: given the caller's pid, what is
its container ID and, under Kubernetes, its pod UID? The kernel writes the answer into the
process's cgroup paths, and a workload cannot forge them, so they are the authority. This module
reads them the way SPIRE does, for every layout seen in practice:

- cgroup v1 (one line per hierarchy, ``4:memory:/docker/<id>``), v2 (one line
  ``0::/system.slice/docker-<id>.scope``) and hybrid hosts (both kinds of line);
- the cgroupfs driver (``/kubepods/burstable/pod<uid>/<id>``) and the systemd driver
  (``/kubepods.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope``);
- nested paths (a kind node inside Docker: ``/docker/<node>/kubepods/.../pod<uid>/<id>``), and
  container runtimes that put pod and container in one segment (``...slice:cri-containerd:<id>``).

:func:`find_container` follows SPIRE's container locator: in each path, walking segments from
the last, the first 64-hex-digit word is the container ID; walking on from there, the first
``pod<uid>`` word is the pod UID (systemd's ``_`` turned back into ``-``). Lines that name a pod
win over lines that do not; two different pods or containers are a conflict, and a conflict is
an error rather than a guess. :class:`ContainerIdMatchers` is SPIRE's older, configurable
locator (``container_id_cgroup_matchers``): path patterns with ``*`` for any one segment and
``<id>`` for the container ID.

:func:`pyspire_sdk.procfs.read_cgroups` reads the file for a pid and makes sure the pid named
one process throughout, so the container found is the caller's.
"""

from __future__ import annotations

__all__ = [
    "CONTAINER_ID_SEGMENT",
    "WILDCARD_SEGMENT",
    "CgroupLine",
    "ContainerConflictError",
    "ContainerIdMatchers",
    "ContainerIdentity",
    "find_container",
    "parse_cgroups",
]

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyspire_sdk._cgroup_lines import CgroupLine, parse_cgroups
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError

WILDCARD_SEGMENT = "*"
"""In a :class:`ContainerIdMatchers` pattern, a segment that matches any one path segment."""

CONTAINER_ID_SEGMENT = "<id>"
"""In a :class:`ContainerIdMatchers` pattern, the segment that is the container ID."""

# Both cgroupfs (dashes) and systemd (underscores) renderings of the pod UID. Word boundaries
# are ASCII, as in Go's regexp.
_POD_UID = re.compile(
    r"\bpod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})\b",
    re.ASCII,
)
# A container ID is, by convention of every runtime, 64 hex digits.
_CONTAINER_ID = re.compile(r"\b([0-9a-fA-F]{64})\b", re.ASCII)


class ContainerConflictError(UnavailableError):
    """The cgroups of one process name two different containers (or pods); choosing either
    could hand out another workload's identity, so the process is not attested."""


@dataclass(frozen=True, slots=True)
class ContainerIdentity:
    """The container a process runs in, and its pod's UID when it is in a Kubernetes pod (and
    the caller asked for it)."""

    container_id: str
    pod_uid: str | None = None


def _segments_from_last(path: str) -> list[str]:
    """The path's segments, last first, up to (not including) the first empty one: ``/a/b``
    gives ``["b", "a"]``, and a path ending in ``/`` gives nothing."""
    segments: list[str] = []
    for segment in reversed(path.split("/")):
        if not segment:
            break
        segments.append(segment)
    return segments


def _identity_in_path(path: str, *, with_pod_uid: bool) -> ContainerIdentity | None:
    segments = _segments_from_last(path)
    for index, segment in enumerate(segments):
        found = _CONTAINER_ID.search(segment)
        if found is None:
            continue
        if not with_pod_uid:
            return ContainerIdentity(found.group(1))
        # What precedes the ID in its own segment is searched first, then earlier segments.
        rest = [segment[: found.start(1)], *segments[index + 1 :]]
        for candidate in rest:
            pod = _POD_UID.search(candidate)
            if pod is not None:
                return ContainerIdentity(found.group(1), pod.group(1).replace("_", "-"))
        return ContainerIdentity(found.group(1))
    return None


def find_container(
    cgroups: Iterable[CgroupLine | tuple[str, str, str]], *, with_pod_uid: bool = False
) -> ContainerIdentity | None:
    """The container (and, with ``with_pod_uid``, the pod) named by a process's cgroup lines,
    or ``None`` when no line names a container (a process on the host).

    A line that names a pod overrides the lines without one seen before it, and lines without
    a pod are ignored once one was found: a kind node's own cgroup (``0::/docker/<node>/...``)
    must not hide the pod container inside it. Lines that name no container at all (``0::/``
    on a hybrid host, ``3:rdma:/``) say nothing and are skipped. Raises
    :class:`ContainerConflictError` when the remaining lines name two containers or two pods.
    """
    chosen: ContainerIdentity | None = None
    for line in cgroups:
        path = line[2]
        found = _identity_in_path(path, with_pod_uid=with_pod_uid)
        if found is None:
            continue
        if chosen is not None and chosen.pod_uid is not None and found.pod_uid is None:
            continue
        if chosen is not None and (chosen.pod_uid is None) == (found.pod_uid is None):
            if found.pod_uid != chosen.pod_uid:
                raise ContainerConflictError(
                    f"multiple pod UIDs found ({chosen.pod_uid!r}, {found.pod_uid!r})"
                )
            if found.container_id != chosen.container_id:
                raise ContainerConflictError(
                    f"multiple container IDs found ({chosen.container_id!r}, "
                    f"{found.container_id!r})"
                )
        chosen = found
    return chosen


def _pattern_regex(pattern: str, key: str) -> re.Pattern[str]:
    parts = pattern.split("/")
    if parts.count(CONTAINER_ID_SEGMENT) != 1:
        raise InvalidArgumentError(
            f"{key}: pattern {pattern!r} must contain the container id token "
            f"{CONTAINER_ID_SEGMENT!r} exactly once"
        )
    translated = [
        "[^/]*"
        if part == WILDCARD_SEGMENT
        else "([^/]*)"
        if part == CONTAINER_ID_SEGMENT
        else re.escape(part)
        for part in parts
    ]
    return re.compile("/".join(translated))


def _equivalent(first: str, second: str) -> bool:
    """Whether two patterns could match the same path: same length, and every segment pair is
    equal or holds a token."""
    if first == second:
        return True
    a, b = first.split("/"), second.split("/")
    if len(a) != len(b):
        return False
    tokens = (WILDCARD_SEGMENT, CONTAINER_ID_SEGMENT)
    return all(x == y or x in tokens or y in tokens for x, y in zip(a, b, strict=True))


class ContainerIdMatchers:
    """SPIRE's ``container_id_cgroup_matchers``: whole-path patterns such as
    ``/docker/<id>`` or ``/kubepods/*/*/<id>``, tried in order on every cgroup path.

    Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` naming ``key`` when there is no
    pattern, a pattern lacks ``<id>`` or holds it twice, or two patterns are ambiguous (could
    match the same path).
    """

    def __init__(
        self, patterns: Sequence[str], *, key: str = "container_id_cgroup_matchers"
    ) -> None:
        if not patterns:
            raise InvalidArgumentError(f"{key}: at least one pattern must be given")
        ambiguous = sorted(
            {
                pattern
                for index, first in enumerate(patterns)
                for second in patterns[index + 1 :]
                if _equivalent(first, second)
                for pattern in (first, second)
            }
        )
        if ambiguous:
            raise InvalidArgumentError(f"{key}: patterns must not be ambiguous: {ambiguous!r}")
        self.patterns = tuple(patterns)
        self._regexes = tuple(_pattern_regex(pattern, key) for pattern in patterns)

    def match(self, path: str) -> str | None:
        """The container ID in ``path`` by the first pattern matching the whole path (it may
        be empty), or ``None`` when none matches."""
        for regex in self._regexes:
            found = regex.fullmatch(path)
            if found is not None:
                return found.group(1)
        return None

    def find(self, cgroups: Iterable[CgroupLine | tuple[str, str, str]]) -> str | None:
        """The one container ID the matching lines name, or ``None`` when no line matches.
        Raises :class:`ContainerConflictError` when matching lines name two IDs, and
        :class:`~pyspire_sdk.errors.UnavailableError` when patterns matched but gave only an
        empty ID."""
        matched = False
        container_id = ""
        for line in cgroups:
            candidate = self.match(line[2])
            if candidate is None:
                continue
            matched = True
            if not container_id:
                container_id = candidate
            elif candidate != container_id:
                raise ContainerConflictError(
                    f"multiple container IDs found in cgroups ({container_id!r}, {candidate!r})"
                )
        if not matched:
            return None
        if not container_id:
            raise UnavailableError("a cgroup matcher matched, but no container id was found")
        return container_id
