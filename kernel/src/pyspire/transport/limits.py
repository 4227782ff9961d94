"""How many connections a listener keeps, and for how long.

Whoever reaches a listener can open connections to it, and each one holds a file descriptor and
memory until it closes. Agents connect before they have an SVID (node attestation runs over TLS
without a client certificate), so such connections are legitimate, but they prove nothing about
the peer: they are bounded in number per source address, and every connection is bounded in
time (TLS handshake, first request, idle between calls), as is the wait for a call's request
message. Overall a listener keeps at most ``max_connections``: file descriptors and memory stay
bounded whatever the peers do. The counts here are sans-IO; :mod:`pyspire.transport.listener`
applies them to sockets, :class:`~pyspire.transport.calls.WithCallContext` to calls.
"""

from __future__ import annotations

__all__ = ["Admitted", "ConnectionCounts", "ConnectionLimits", "Refused"]

from collections import Counter
from dataclasses import dataclass, fields

from pyspire_sdk.errors import InvalidArgumentError


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    """The bounds of one listener (each listener has fixed defaults; tests pass short ones)."""

    max_connections: int
    """Connections open at once, in every state; more are closed as soon as accepted."""

    max_unverified_per_address: int | None = None
    """Connections open at once from one IP address without a verified client certificate
    (TLS handshakes in progress included); None: no per-address bound (unix sockets)."""

    handshake_timeout: float = 10.0
    """Seconds a TLS handshake may take."""

    first_request_timeout: float = 10.0
    """Seconds from connect (or handshake) to the first call."""

    idle_timeout: float = 300.0
    """Seconds a connection may stay open with no call in progress after its last call."""

    request_timeout: float = 10.0
    """Seconds from the start of a call to the arrival of its (first) request message; a call
    still waiting for it then ends with DEADLINE_EXCEEDED."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and value <= 0:
                raise InvalidArgumentError(
                    f"{field.name}: must be greater than zero, found {value}"
                )


@dataclass(frozen=True, eq=False)
class Admitted:
    """A connection the counts hold a place for, until :meth:`ConnectionCounts.release`
    (compared by identity: two connections from one address are two places)."""

    address: str


@dataclass(frozen=True)
class Refused:
    """Why a connection was refused (for the log)."""

    reason: str


class ConnectionCounts:
    """Open connections of one listener: overall, and unverified ones per source address."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._open: set[Admitted] = set()
        self._unverified: set[Admitted] = set()
        self._per_address: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return len(self._open)

    def unverified_from(self, address: str) -> int:
        return self._per_address[address]

    def admit(self, address: str) -> Admitted | Refused:
        """Hold a place for a new, not yet verified connection from ``address``, if there is
        one."""
        limits = self.limits
        if len(self._open) >= limits.max_connections:
            return Refused(f"{limits.max_connections} connections are open")
        per_address = limits.max_unverified_per_address
        if per_address is not None and self._per_address[address] >= per_address:
            return Refused(
                f"{per_address} connections without a verified client certificate are open "
                "from this address"
            )
        admitted = Admitted(address)
        self._open.add(admitted)
        self._unverified.add(admitted)
        self._per_address[address] += 1
        return admitted

    def verified(self, admitted: Admitted) -> None:
        """The peer presented a client certificate our bundle verifies: it no longer counts
        against its address."""
        if admitted in self._unverified:
            self._unverified.discard(admitted)
            self._forget_address(admitted.address)

    def release(self, admitted: Admitted) -> None:
        """The connection closed (safe to call more than once)."""
        if admitted not in self._open:
            return
        self._open.discard(admitted)
        self.verified(admitted)

    def _forget_address(self, address: str) -> None:
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]
