"""What a worker's agents did, phase by phase: sync latencies, counts and failures by kind.

Failures are counted from two places: a sync or start that raised (kind ``<ErrorType>: <message
with numbers masked>``), and the warnings and errors the agent code itself logs while it
retries on its own (kind ``log: <event> (<error type>: <its message, numbers masked>)``), which
:func:`count_log_events` turns into counts instead of printed lines.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import structlog

_NUMBERS = re.compile(r"[0-9a-f]{8,}|\d+")

SLOW = 0.5
"""Seconds past which a sync is listed with its start time (to see whether slow ones cluster)."""


def failure_kind(error: BaseException) -> str:
    """A short, stable name for ``error``: its type and its message with numbers (ports,
    addresses, IDs) masked, so that one cause counts as one kind across agents."""
    message = _NUMBERS.sub("#", " ".join(str(error).split()))
    return f"{type(error).__name__}: {message[:100]}"


@dataclass
class PhaseTally:
    """One phase's figures in one worker."""

    latencies: list[float] = field(default_factory=list)
    """Seconds each completed sync took."""
    failures: Counter[str] = field(default_factory=Counter)
    svids_issued: int = 0
    agents_synced: set[int] = field(default_factory=set)
    agent_renewals: int = 0
    slow: list[tuple[float, float]] = field(default_factory=list)
    """``(wall time it started, seconds)`` of each sync slower than :data:`SLOW`."""

    def as_json(self) -> dict[str, Any]:
        return {
            "slow": self.slow,
            "latencies": self.latencies,
            "failures": dict(self.failures),
            "svids_issued": self.svids_issued,
            "agents_synced": sorted(self.agents_synced),
            "agent_renewals": self.agent_renewals,
        }


class Tally:
    """The phases of one worker; agents record into :attr:`current`."""

    def __init__(self) -> None:
        self.phases: dict[str, PhaseTally] = {}
        self.phase = ""
        self.enter("start")

    def enter(self, phase: str) -> PhaseTally:
        """Record into a fresh tally for ``phase`` from now on."""
        self.phase = phase
        self.phases[phase] = PhaseTally()
        return self.phases[phase]

    @property
    def current(self) -> PhaseTally:
        return self.phases[self.phase]


def count_log_events(tally: Tally) -> None:
    """Configure structlog so that the agent code's warnings and errors become counts in
    ``tally`` (printing thousands of agents' lines would cost more than the agents) and
    everything below warning is dropped before it is formatted."""

    def count(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        kind = f"log: {event_dict.get('event', '')}"
        if "error_type" in event_dict:
            # The message tells one refusal from another (a full admission queue, too little
            # of the deadline left, the rate limit, a connection closed before TLS).
            message = _NUMBERS.sub("#", " ".join(str(event_dict.get("error", "")).split()))
            kind += f" ({event_dict['error_type']}: {message[:100]})"
        tally.current.failures[kind] += 1
        raise structlog.DropEvent

    structlog.configure(
        processors=[count],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
