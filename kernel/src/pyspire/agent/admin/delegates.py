"""Who may use the Delegated Identity API: a caller holding an identity listed in
``authorized_delegates``.

The caller's selectors come from attesting its pid (as for the Workload API); the registration
entries they match are its identities, and one of them must be listed. As in SPIRE, the check is
made against the agent's current entries when a call starts and again on every update of an open
stream, so a delegate whose entry is deleted (or whose ID is no longer listed after a restart)
loses its streams. Sans-IO: a snapshot and selectors in, the delegate's listed ID or a refusal
out.
"""

from __future__ import annotations

__all__ = ["DelegateAuthorizer"]

from collections.abc import Iterable

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.identities import Snapshot
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId

_SHOWN_IDS = 5
"""How many of a refused caller's identities its refusal names."""


class DelegateAuthorizer:
    """Decides whether a caller with given selectors is an authorized delegate."""

    def __init__(self, authorized: Iterable[SpiffeId]) -> None:
        self._authorized = frozenset(authorized)

    @property
    def authorized(self) -> frozenset[SpiffeId]:
        """The SPIFFE IDs of ``authorized_delegates``."""
        return self._authorized

    def check(self, snapshot: Snapshot, selectors: frozenset[Selector]) -> SpiffeId:
        """The listed identity of the caller with ``selectors`` (its oldest listed entry's).

        Raises :class:`GRPCError` UNAVAILABLE while the agent does not know its entries yet,
        and PERMISSION_DENIED, saying why, when the caller matches no entry or none of its
        identities is listed.
        """
        if not snapshot.synced:
            raise GRPCError(Status.UNAVAILABLE, "agent has not synced its entries yet")
        entries = snapshot.view(selectors).entries
        if not entries:
            raise GRPCError(
                Status.PERMISSION_DENIED,
                "no identity issued: the caller matches no registration entry, so it cannot "
                "be an authorized delegate",
            )
        for entry in entries:
            if entry.spiffe_id in self._authorized:
                return entry.spiffe_id
        ids = sorted({str(entry.spiffe_id) for entry in entries})
        shown = ", ".join(ids[:_SHOWN_IDS]) + (", ..." if len(ids) > _SHOWN_IDS else "")
        raise GRPCError(
            Status.PERMISSION_DENIED,
            "caller not configured as an authorized delegate: none of its identities "
            f"({shown}) is listed in authorized_delegates",
        )
