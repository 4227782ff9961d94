"""Notifiers: plugins told about the server's trust bundle, in configured order.

Two kinds of event, as in SPIRE's ``Notifier``:

- :class:`BundleLoaded` is sent once when the server has loaded its bundle at start, through
  :meth:`Notifier.notify_and_advise`: the notifier may *veto* the start by raising (for
  example when it cannot write the bundle where workloads expect it). "Notify and advise".
- :class:`BundleUpdated` is sent after every change of the bundle (a new or tainted CA, a
  pruned key), through :meth:`Notifier.notify`. Failures are logged and counted and retried
  with the SDK's backoff (:mod:`pyspire_sdk.backoff`); they never stop the server.
"""

from __future__ import annotations

__all__ = [
    "BundleLoaded",
    "BundleUpdated",
    "Notifier",
    "NotifierEvent",
    "pyspire_notifiers",
]

from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.plugin import Plugin, PluginRegistration, hookspec


@dataclass(frozen=True, slots=True)
class BundleLoaded:
    """The server loaded (or created) its trust bundle at start; ``bundle`` is that bundle."""

    bundle: Bundle


@dataclass(frozen=True, slots=True)
class BundleUpdated:
    """The trust bundle changed; ``bundle`` is the new content, with a higher sequence number."""

    bundle: Bundle


NotifierEvent: TypeAlias = BundleLoaded | BundleUpdated
"""Every event a notifier can receive. New kinds may be added; see :class:`Notifier`."""


@runtime_checkable
class Notifier(Plugin, Protocol):
    """Receives server events.

    Guarantees both sides keep:

    - At start the host tells notifiers :class:`BundleLoaded` one after another in configured
      order. Updates reach each notifier through a queue of its own, so one slow notifier
      never delays another; a notifier is never called concurrently with itself, and sees
      bundles in the order they happened. A notifier that is behind (busy, or failing and
      waiting to be retried) is told the newest bundle next: each event carries the whole
      bundle, so those in between are skipped.
    - **No opinion** is returning ``None`` without doing anything: a notifier ignores event
      kinds it does not handle, so new kinds can be added without breaking it.
    - ``notify_and_advise`` raising (any :class:`~pyspire_sdk.errors.PyspireError`, with the
      reason) makes the server refuse to start, naming the notifier; ``notify`` raising is
      logged and counted, and the newest bundle is offered again after a backoff delay.
    - Handling the same event twice is harmless (a retry after a failure may repeat one).
    """

    async def notify(self, event: NotifierEvent) -> None:
        """Be told about ``event`` (in practice a :class:`BundleUpdated`); errors are logged."""
        ...

    async def notify_and_advise(self, event: NotifierEvent) -> None:
        """Be told about ``event`` (in practice a :class:`BundleLoaded`); raise to veto."""
        ...


@hookspec
def pyspire_notifiers() -> list[PluginRegistration[Any, Notifier]]:  # type: ignore[empty-body]
    """Return the notifiers this plugin module provides.

    A server runs any number of them, in configured order. Return ``[]`` when the module
    provides none. The hook is synchronous and must not do I/O.
    """
