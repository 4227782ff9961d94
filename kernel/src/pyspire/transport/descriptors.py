"""The open-file limit of a process that holds a connection per agent.

Every connection is a file descriptor, and Linux's default soft limit (1,024 on many
systems) is far below the connections a server keeps (:data:`pyspire.server.runtime.
SERVER_API_LIMITS`); past it, accepting fails and agents are refused. Go raises the soft
limit to the hard limit at start for SPIRE; :func:`raise_open_files_limit` does it here.
"""

from __future__ import annotations

__all__ = ["raise_open_files_limit"]

import resource


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft limit on open files to ``wanted`` (at most the hard limit; never lowered)
    and return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
