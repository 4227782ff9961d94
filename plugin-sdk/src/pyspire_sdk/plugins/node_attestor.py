"""Node attestors: how an agent proves which node it runs on, and how the server checks it.

A node attestor comes in two halves that share a plugin name. The agent half produces evidence
(an attestation payload) and answers challenges; the server half verifies the evidence and
concludes who the agent is. The exchange mirrors SPIRE's ``AttestAgent`` stream::

    agent                                   server
      attestation_payload()  ── payload ──►   attest(payload, challenge)
                                               │
      answer_challenge(c)    ◄── c ───────────  await challenge(c)     (zero or more times)
                             ── answer ──►      │
                                               ▼
                                             AttestationResult

The server half never talks to the network itself: it calls the :data:`Challenger` it is given,
and the host carries the bytes to the agent and back. That keeps a plugin testable with an
in-memory challenger (see :func:`pyspire_sdk.testing.node_attestor_contract.run_attestation`).

The host trusts nothing the plugin returns blindly: the agent ID must be in the server's trust
domain under ``/spire/agent/`` (:func:`check_agent_id`), and selector values become selectors
whose type is the plugin's name (:func:`attestation_selectors`), so a plugin cannot claim
another's selectors.

Two facts reach a plugin beside the agent's evidence, each without changing the methods above,
so attestors written before them keep working:

- **Who is on the other end** (server half). While ``attest`` runs, :func:`current_peer` tells
  the address the agent connects from, the way SPIRE hands its attestors the caller's address
  in the call's metadata; a host sets it with :func:`attesting_peer`.
- **How long one attestation lasts** (agent half). An agent half that must hold something for
  the length of one attestation, such as a listener the server calls back, implements
  ``attestation_scope()`` (:class:`ScopedAgentNodeAttestor`); the host enters it around the
  whole exchange with :func:`agent_attestation`, and leaves it once the server has answered,
  whatever the outcome.
"""

from __future__ import annotations

__all__ = [
    "AGENT_PATH_PREFIX",
    "AgentNodeAttestor",
    "AttestationPeer",
    "Challenger",
    "ScopedAgentNodeAttestor",
    "ServerNodeAttestor",
    "agent_attestation",
    "agent_id",
    "attestation_selectors",
    "attesting_peer",
    "check_agent_id",
    "current_peer",
    "is_agent_id",
    "pyspire_agent_node_attestors",
    "pyspire_server_node_attestors",
]

import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pyspire_sdk.errors import InvalidArgumentError, InvalidSpiffeIdError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import Plugin, PluginRegistration, hookspec
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

AGENT_PATH_PREFIX = "/spire/agent/"
"""Every agent ID's path starts with this; the rest is ``<plugin name>/<plugin's segments>``."""

Challenger = Callable[[bytes], Awaitable[bytes]]
"""Sends one challenge to the agent being attested and returns the agent's answer.

Raises :class:`~pyspire_sdk.errors.UnavailableError` when the agent went away mid-handshake;
a server attestor lets that propagate.
"""


def agent_id(trust_domain: TrustDomain | str, plugin_name: str, *segments: str) -> SpiffeId:
    """The agent ID ``spiffe://<td>/spire/agent/<plugin_name>/<segments...>``.

    Every server node attestor builds its IDs with this function so they all share one shape.
    Each segment must be a valid SPIFFE path segment (letters, digits, ``.``, ``-``, ``_``);
    at least one segment is required so that two nodes never collapse onto the plugin's
    prefix alone.

    Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` when ``segments`` is empty or a
    segment is not a valid path segment.
    """
    if not segments:
        raise InvalidArgumentError(
            f"agent id for plugin {plugin_name!r} needs at least one segment naming the node"
        )
    try:
        return SpiffeId.from_segments(trust_domain, "spire", "agent", plugin_name, *segments)
    except InvalidSpiffeIdError as error:
        raise InvalidArgumentError(
            f"agent id for plugin {plugin_name!r} is invalid: {error}"
        ) from None


def is_agent_id(spiffe_id: SpiffeId, trust_domain: TrustDomain) -> bool:
    """True when ``spiffe_id`` is an agent ID of ``trust_domain`` (path under ``/spire/agent/``
    with at least one segment after it)."""
    return (
        spiffe_id.trust_domain == trust_domain
        and spiffe_id.path.startswith(AGENT_PATH_PREFIX)
        and len(spiffe_id.path) > len(AGENT_PATH_PREFIX)
    )


def check_agent_id(result: AttestationResult, trust_domain: TrustDomain) -> SpiffeId:
    """Return the result's agent ID after checking it is an agent ID of ``trust_domain``.

    The host calls this on every :class:`~pyspire_sdk.model.AttestationResult`; a plugin that
    names an agent of another trust domain, or an ID outside ``/spire/agent/``, is refused with
    :class:`~pyspire_sdk.errors.InvalidArgumentError` rather than trusted.
    """
    spiffe_id = result.agent_id
    if spiffe_id.trust_domain != trust_domain:
        raise InvalidArgumentError(
            f"agent_id {str(spiffe_id)!r} is not in trust domain {trust_domain.name!r}"
        )
    if not is_agent_id(spiffe_id, trust_domain):
        raise InvalidArgumentError(
            f"agent_id {str(spiffe_id)!r} is not under {AGENT_PATH_PREFIX!r}"
        )
    return spiffe_id


def attestation_selectors(plugin_name: str, values: Iterable[str]) -> tuple[Selector, ...]:
    """The selectors a plugin's selector values stand for: type = ``plugin_name``.

    Duplicates are dropped and the result is sorted, so equal evidence yields equal selectors.
    Raises :class:`~pyspire_sdk.errors.InvalidSelectorError` for an empty value.
    """
    return tuple(sorted({Selector(plugin_name, value) for value in values}))


@dataclass(frozen=True)
class AttestationPeer:
    """What the server knows of the agent it is attesting, beyond the agent's evidence."""

    address: str | None = None
    """The IP address the agent's connection comes from, as the server's listener sees it: the
    immediate peer, so a proxy's or load balancer's address when there is one. ``None`` when
    the host does not know it."""


_UNKNOWN_PEER = AttestationPeer()
_PEER: contextvars.ContextVar[AttestationPeer | None] = contextvars.ContextVar(
    "pyspire_attestation_peer", default=None
)


def current_peer() -> AttestationPeer:
    """The agent being attested in this task, as the host described it.

    A server half calls this inside ``attest``; outside an attestation, or under a host that
    tells nothing, it is ``AttestationPeer()`` (nothing known), and an attestor that needs a
    fact it lacks refuses the attestation rather than guess.
    """
    return _PEER.get() or _UNKNOWN_PEER


@contextlib.contextmanager
def attesting_peer(peer: AttestationPeer) -> Iterator[None]:
    """Host side: make ``peer`` the :func:`current_peer` of the code run inside, and of tasks
    created inside (they copy the context when created)."""
    token = _PEER.set(peer)
    try:
        yield
    finally:
        _PEER.reset(token)


@runtime_checkable
class ServerNodeAttestor(Plugin, Protocol):
    """The server half: verifies an agent's evidence and names the agent.

    Guarantees the host relies on:

    - ``attest`` either returns a result whose ``agent_id`` was built with :func:`agent_id`
      from evidence it verified, or raises; it never returns a partial result.
    - Evidence that does not hold (a bad signature, an unknown or used token, a wrong challenge
      answer) raises :class:`~pyspire_sdk.errors.PermissionDeniedError` with the reason; a
      payload or answer that cannot be parsed raises
      :class:`~pyspire_sdk.errors.InvalidArgumentError`. The host reports either as a failed
      attestation to the agent.
    - ``challenge`` may be awaited zero or more times, in sequence (never concurrently).
    - ``attest`` is safe to run concurrently for different agents.
    - ``selector_values`` are values only, without the plugin name as a prefix.
    """

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        """Verify ``payload`` (and any challenge answers) and return who the agent is."""
        ...


@runtime_checkable
class AgentNodeAttestor(Plugin, Protocol):
    """The agent half: produces evidence about the node and answers the server's challenges.

    ``attestation_payload`` is called once per attestation (so it may include a fresh nonce);
    ``answer_challenge`` is then called once per challenge the server sends, in order. Either
    raises :class:`~pyspire_sdk.errors.UnavailableError` when the evidence cannot be produced
    now (a metadata service down, a file missing) and
    :class:`~pyspire_sdk.errors.InvalidArgumentError` for a challenge it cannot parse.
    """

    async def attestation_payload(self) -> bytes:
        """The evidence to send to the server to start attestation."""
        ...

    async def answer_challenge(self, challenge: bytes) -> bytes:
        """The answer to one challenge from the server half of the same plugin."""
        ...


@runtime_checkable
class ScopedAgentNodeAttestor(AgentNodeAttestor, Protocol):
    """An agent half that holds something for the length of one attestation.

    SPIRE's ``http_challenge`` agent listens on a port from before it sends its payload (which
    names the port) until the server has fetched the challenge from it, that is until the
    server's verdict. Such an attestor implements ``attestation_scope``; the host enters the
    scope before ``attestation_payload`` and leaves it after the server's answer (result or
    refusal), so what the scope opened is closed in every case.
    """

    def attestation_scope(self) -> AbstractAsyncContextManager[None]:
        """A context entered around one whole attestation; raises like ``attestation_payload``
        when what it needs cannot be had (a port already in use)."""
        ...


@contextlib.asynccontextmanager
async def agent_attestation(attestor: AgentNodeAttestor) -> AsyncIterator[None]:
    """Host side: the scope of one attestation with ``attestor``, its own
    ``attestation_scope()`` when it is a :class:`ScopedAgentNodeAttestor`, else nothing."""
    if isinstance(attestor, ScopedAgentNodeAttestor):
        async with attestor.attestation_scope():
            yield
    else:
        yield


@hookspec
def pyspire_server_node_attestors() -> list[PluginRegistration[Any, ServerNodeAttestor]]:  # type: ignore[empty-body]
    """Return the server node attestors this plugin module provides.

    Each :class:`~pyspire_sdk.plugin.PluginRegistration` names the attestor as operators write
    it in TOML; that name is also the selector type of the node selectors it reports and the
    first segment after ``/spire/agent/`` in the agent IDs it builds. The agent half of the
    same attestor must be registered under the same name through
    :func:`pyspire_agent_node_attestors`.

    Return ``[]`` when the module provides none. The hook is synchronous and must not do I/O:
    it only describes; the factory builds and ``configure`` prepares.
    """


@hookspec
def pyspire_agent_node_attestors() -> list[PluginRegistration[Any, AgentNodeAttestor]]:  # type: ignore[empty-body]
    """Return the agent node attestors this plugin module provides.

    Names must match the server half they talk to. Return ``[]`` when the module provides none.
    The hook is synchronous and must not do I/O.
    """
