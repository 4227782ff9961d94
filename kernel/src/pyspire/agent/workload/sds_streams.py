"""The xDS protocol state of one Secret Discovery Service stream, without I/O.

**State of the world** (``StreamSecrets``), as SPIRE's agent keeps it:

- the version counts changes of what the caller's secrets are made of; the first response
  says ``1``; a response sent because the requested names changed repeats the version;
- every response has a fresh nonce; a request whose ``response_nonce`` is not the last nonce
  sent is stale and ignored (the client has not seen the newest response yet);
- a request that answers the last response with another version, or with ``error_detail``
  set, is a NACK: it is reported, and nothing is sent again unless the names change or the
  secrets do (the same version is never resent);
- a request without ``node`` keeps the node of the earlier ones (it chooses the validator).

**Incremental** (``DeltaSecrets``), as the xDS protocol describes it (SPIRE's agent does not
serve it):

- a first request naming no resources, or any request subscribing to ``*``, is a wildcard
  subscription to everything the caller may have; unsubscribing from ``*`` ends it;
- each resource's version is a digest of its bytes, so ``initial_resource_versions`` of a
  client that reconnects spares it the resources it already holds;
- a response carries the resources whose version the client does not hold and, in
  ``removed_resources``, the subscribed names the caller has no secret for (told once) and the
  wildcard resources that are gone; subscriptions change whatever the nonce; a NACK is
  reported and what was rejected is not resent.
"""

from __future__ import annotations

__all__ = [
    "WILDCARD",
    "DeltaChanges",
    "DeltaStream",
    "Received",
    "SotwStream",
    "XdsStream",
    "new_nonce",
    "resource_version",
]

import hashlib
import secrets
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pyspire.proto.gen.codec.envoy_config_core_v3 import Node
from pyspire.proto.gen.codec.envoy_service_discovery_v3 import (
    DeltaDiscoveryRequest,
    DiscoveryRequest,
)

_R_contra = TypeVar("_R_contra", contravariant=True)

WILDCARD = "*"
"""The incremental xDS name of a wildcard subscription."""


def new_nonce() -> str:
    """A nonce for one response: random, so a client cannot mistake a response of an earlier
    stream for one of this."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Received:
    """What a request means: whether to answer it now, whether it was ignored as stale, the
    client's complaint when it rejected the last response (a NACK), and the names it asked
    for (for the log)."""

    respond: bool
    stale: bool = False
    rejected: str | None = None
    names: tuple[str, ...] = ()


class XdsStream(Protocol[_R_contra]):
    """The protocol state of one xDS stream, either variant: what the Secret Discovery Service
    asks of it between a stream's requests and the agent's snapshots."""

    @property
    def node(self) -> Node | None:
        """The node of the latest request that carried one (it chooses the validator)."""
        ...

    def receive(self, request: _R_contra) -> Received:
        """Take a request from the client."""
        ...

    def update(self, content: Hashable) -> bool:
        """Take what the caller's secrets are made of now; True when they changed and a
        request is waiting for them."""
        ...


def _rejection(error: object | None, message: str | None, fallback: str | None) -> str | None:
    if error is not None:
        return message or "rejected without a message"
    return fallback


class SotwStream:
    """State-of-the-world xDS bookkeeping of one ``StreamSecrets`` call."""

    def __init__(self, nonces: Callable[[], str] = new_nonce) -> None:
        self._nonces = nonces
        self._version = 0
        self._content: Hashable | None = None
        self._names: tuple[str, ...] | None = None
        self._node: Node | None = None
        self._nonce = ""
        self._sent_version = ""

    @property
    def names(self) -> tuple[str, ...]:
        """The resource names of the last request that counted (none: everything)."""
        return self._names or ()

    @property
    def node(self) -> Node | None:
        """The node of the latest request that carried one."""
        return self._node

    def receive(self, request: DiscoveryRequest) -> Received:
        """Take a request from the client."""
        rejected = None
        if self._nonce:
            if request.response_nonce != self._nonce:
                return Received(respond=False, stale=True, names=tuple(request.resource_names))
            status = request.error_detail
            mismatch = (
                f"version {request.version_info!r} applied instead of {self._sent_version!r}"
                if request.version_info != self._sent_version
                else None
            )
            rejected = _rejection(status, status.message if status else None, mismatch)
        if request.node is not None:
            self._node = request.node
        names = tuple(sorted(set(request.resource_names)))
        changed = self._names is None or names != self._names
        self._names = names
        return Received(respond=changed, rejected=rejected, names=names)

    def update(self, content: Hashable) -> bool:
        """Take what the caller's secrets are made of now; True when they changed and a request
        is waiting for them."""
        if self._content is not None and content == self._content:
            return False
        self._content = content
        self._version += 1
        return self._names is not None

    def sent(self) -> tuple[str, str]:
        """The ``(version_info, nonce)`` of the response about to be sent, remembered to judge
        the client's next request."""
        self._nonce = self._nonces()
        self._sent_version = str(self._version)
        return self._sent_version, self._nonce


@dataclass(frozen=True)
class DeltaChanges:
    """An incremental response's content: ``(name, version, encoded secret)`` to send and the
    names to report removed."""

    resources: tuple[tuple[str, str, bytes], ...]
    removed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.resources or self.removed)


def resource_version(secret: bytes) -> str:
    """The version of a resource: a digest of its bytes, the same in every run."""
    return hashlib.sha256(secret).hexdigest()[:16]


class DeltaStream:
    """Incremental xDS bookkeeping of one ``DeltaSecrets`` call."""

    def __init__(self, nonces: Callable[[], str] = new_nonce) -> None:
        self._nonces = nonces
        self._first = True
        self._wildcard = False
        self._subscribed: set[str] = set()
        self._held: dict[str, str | None] = {}  # name -> version held, None: told it is gone
        self._node: Node | None = None
        self._content: Hashable | None = None
        self._responses = 0

    @property
    def node(self) -> Node | None:
        """The node of the latest request that carried one."""
        return self._node

    def receive(self, request: DeltaDiscoveryRequest) -> Received:
        """Take a request: its subscriptions count whatever its nonce; a NACK is reported."""
        if request.node is not None:
            self._node = request.node
        subscribe = list(request.resource_names_subscribe)
        if self._first:
            self._first = False
            self._wildcard = not subscribe
            self._held.update(request.initial_resource_versions)
        for name in subscribe:
            if name == WILDCARD:
                self._wildcard = True
            else:
                self._subscribed.add(name)
        for name in request.resource_names_unsubscribe:
            if name == WILDCARD:
                self._wildcard = False
            else:
                self._subscribed.discard(name)
                self._held.pop(name, None)
        status = request.error_detail
        rejected = _rejection(status, status.message if status else None, None)
        return Received(respond=True, rejected=rejected, names=tuple(subscribe))

    def update(self, content: Hashable) -> bool:
        """Take what the caller's secrets are made of now; True when they changed and the
        client has subscribed (its first request came)."""
        if self._content is not None and content == self._content:
            return False
        self._content = content
        return not self._first

    def changes(
        self, everything: Sequence[tuple[str, bytes]], lookup: Callable[[str], bytes | None]
    ) -> DeltaChanges:
        """What to send, given all the caller's secrets by canonical name and a lookup of any
        name; what is returned is taken as held by the client from now on."""
        current: dict[str, bytes | None] = {}
        if self._wildcard:
            # Held wildcard resources the caller no longer has are reported gone.
            current.update((name, None) for name, held in self._held.items() if held)
            current.update(everything)
        for name in sorted(self._subscribed):
            current[name] = lookup(name)
        send: list[tuple[str, str, bytes]] = []
        removed: list[str] = []
        for name, secret in current.items():
            if secret is None:
                if name not in self._held or self._held[name] is not None:
                    removed.append(name)
                    self._held[name] = None
                continue
            version = resource_version(secret)
            if self._held.get(name) != version:
                send.append((name, version, secret))
                self._held[name] = version
        return DeltaChanges(tuple(send), tuple(removed))

    def sent(self) -> tuple[str, str]:
        """The ``(system_version_info, nonce)`` of the response about to be sent."""
        self._responses += 1
        return str(self._responses), self._nonces()
