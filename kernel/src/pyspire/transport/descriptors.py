"""The open-file limit of a process that holds a connection per agent.

Every connection is a file descriptor, and Linux's default soft limit (1,024 on many
systems) is far below the connections a server keeps (:data:`pyspire.server.runtime.
SERVER_API_LIMITS`); past it, accepting fails and agents are refused. Go raises the soft
limit to the hard limit at start for SPIRE; :func:`raise_open_files_limit` does it here, and
where the hard limit is lower, :func:`connections_within` bounds a listener's connections by it
(refused by the listener, rather than accepts failing with EMFILE).
"""

from __future__ import annotations

__all__ = ["connections_within", "raise_open_files_limit"]

import dataclasses
import resource

from pyspire.transport.limits import ConnectionLimits


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft limit on open files to ``wanted`` (at most the hard limit; never lowered)
    and return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def connections_within(limits: ConnectionLimits, open_files: int, reserve: int) -> ConnectionLimits:
    """``limits`` keeping at most ``open_files - reserve`` connections (at least one): the
    files the process needs besides them are ``reserve``."""
    room = max(1, open_files - reserve)
    if room >= limits.max_connections:
        return limits
    return dataclasses.replace(limits, max_connections=room)
