"""The settings of both halves, with SPIRE's keys, defaults and rules."""

from __future__ import annotations

__all__ = ["PLUGIN_NAME", "HttpChallengeAgentConfig", "HttpChallengeServerConfig"]

import re
from collections.abc import Iterator
from dataclasses import dataclass

from pyspire_nodeattestor_http_challenge.protocol import agent_name_problem, hostname_problem
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue

PLUGIN_NAME = "http_challenge"
ROOT_PORTS = 1024
"""Ports below this are open only to privileged processes."""


def _port_issue(key: str, port: int, *, zero: bool) -> ConfigIssue | None:
    low = 0 if zero else 1
    if not low <= port <= 65535:
        return ConfigIssue(key, f"must be a TCP port ({low} to 65535), found {port}")
    return None


@dataclass(frozen=True, kw_only=True)
class HttpChallengeServerConfig:
    """The server half's settings (``[server.plugins.node_attestor.http_challenge]``)."""

    allowed_dns_patterns: tuple[str, ...] = setting(
        (),
        description="regular expressions the host name must match, any one of them (searched "
        "anywhere in the name, as SPIRE does: anchor them with `^` and `$`); empty allows "
        "every host name",
    )
    required_port: int | None = setting(
        None, description="the only port agents may be called back on; unset allows any"
    )
    allow_non_root_ports: bool = setting(
        True,
        description="allow ports from 1024 up, which any process of the node can listen on",
    )
    tofu: bool = setting(
        True,
        description="trust on first use: a host name attests once (its agent renews rather "
        "than attests again); may be off only when agents must use a port below 1024",
    )

    def validate(self) -> Iterator[ConfigIssue]:
        """Patterns compile, the port is a port, and TOFU stays on whenever a port any local
        process can open is allowed (SPIRE's rule)."""
        for index, pattern in enumerate(self.allowed_dns_patterns):
            try:
                re.compile(pattern)
            except re.error as error:
                yield ConfigIssue(
                    f"allowed_dns_patterns[{index}]", f"{pattern!r} does not compile: {error}"
                )
        if self.required_port is not None:
            issue = _port_issue("required_port", self.required_port, zero=False)
            if issue is not None:
                yield issue
        if not self.tofu and self.open_to_any_process:
            yield ConfigIssue(
                "tofu",
                "trust on first use cannot be turned off while ports from 1024 up are "
                "allowed: set required_port below 1024 or allow_non_root_ports = false",
            )

    @property
    def open_to_any_process(self) -> bool:
        """Whether an agent may be called back on a port any process of the node can open."""
        if self.required_port is not None:
            return self.required_port >= ROOT_PORTS
        return self.allow_non_root_ports


@dataclass(frozen=True, kw_only=True)
class HttpChallengeAgentConfig:
    """The agent half's settings (``[agent.plugins.node_attestor.http_challenge]``)."""

    hostname: str = setting(
        "", description="the host name the server calls back; empty means this host's name"
    )
    agentname: str = setting(
        "default",
        description="this agent's name on the host, in the challenge's path; lets agents of "
        "several servers share one port (behind a proxy)",
    )
    port: int = setting(
        0, description="the port to listen on during attestation; 0 picks a free one"
    )
    advertised_port: int = setting(
        0,
        description="the port the server is told to call; 0 means the port listened on "
        "(another port needs a proxy forwarding the challenge's path)",
    )

    def validate(self) -> Iterator[ConfigIssue]:
        """Names the server would refuse are refused here, at the agent's start."""
        problem = agent_name_problem(self.agentname)
        if problem is not None:
            yield ConfigIssue("agentname", problem)
        if self.hostname:
            problem = hostname_problem(self.hostname)
            if problem is not None:
                yield ConfigIssue("hostname", problem)
        for key, port in (("port", self.port), ("advertised_port", self.advertised_port)):
            issue = _port_issue(key, port, zero=True)
            if issue is not None:
                yield issue
