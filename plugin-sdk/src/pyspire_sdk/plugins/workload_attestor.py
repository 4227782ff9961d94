"""Workload attestors: which facts hold for the process calling the Workload API.

The agent learns the caller's pid from the Workload API socket and asks every configured
workload attestor, as a chain in configured order, for selector values about that pid. It makes
selectors whose type is each attestor's plugin name (:func:`workload_selectors`), merges them,
and serves the SVIDs of the entries whose selectors are all among them.

Because an identity is handed out on the strength of these facts, the contract is strict about
failure: an attestor that cannot tell must say so by raising, not by returning fewer selectors
than the truth. Shared ``/proc`` reading with pid-reuse detection is in
:mod:`pyspire_sdk.procfs`.
"""

from __future__ import annotations

__all__ = [
    "WorkloadAttestor",
    "pyspire_workload_attestors",
    "workload_selectors",
]

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from pyspire_sdk.plugin import Plugin, PluginRegistration, hookspec
from pyspire_sdk.selector import Selector


def workload_selectors(plugin_name: str, values: Iterable[str]) -> tuple[Selector, ...]:
    """The selectors an attestor's values stand for: type = ``plugin_name``, sorted, unique.

    Raises :class:`~pyspire_sdk.errors.InvalidSelectorError` for an empty value, which the host
    treats as a failure of that attestor.
    """
    return tuple(sorted({Selector(plugin_name, value) for value in values}))


@runtime_checkable
class WorkloadAttestor(Plugin, Protocol):
    """Turns a process ID into selector values.

    Guarantees the host relies on:

    - The result is a sequence of non-empty strings, values only (``"uid:1000"``, not
      ``"unix:uid:1000"``); order does not matter and duplicates are harmless.
    - **No opinion** is an empty sequence: the process is not one this attestor knows about
      (not in a container, not a Kubernetes pod). Returning ``[]`` is *not* a way to report
      trouble.
    - When the process vanished, or data this attestor needs cannot be read (a permission
      denied on ``/proc``, the container runtime not answering), raise
      :class:`~pyspire_sdk.errors.UnavailableError`; the host then fails the Workload API call
      ("workload attestation failed") rather than issue SVIDs on partial facts. A pid that is
      not a positive integer raises :class:`~pyspire_sdk.errors.InvalidArgumentError`.
    - For the same process, the answer is the same every time, also when called concurrently:
      ``attest`` is safe to run concurrently for any pids.
    - ``attest`` finishes promptly; the host applies its own deadline and cancels a call that
      takes too long, so an attestor must tolerate cancellation.
    """

    async def attest(self, pid: int) -> Sequence[str]:
        """The selector values that hold for process ``pid``."""
        ...


@hookspec
def pyspire_workload_attestors() -> list[PluginRegistration[Any, WorkloadAttestor]]:  # type: ignore[empty-body]
    """Return the workload attestors this plugin module provides.

    Each registration's name is how operators list the attestor in the agent's TOML and the
    selector type of every value it returns. Return ``[]`` when the module provides none. The
    hook is synchronous and must not do I/O.
    """
