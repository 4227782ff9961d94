"""The settings of both halves, with SPIRE's keys and defaults."""

from __future__ import annotations

__all__ = [
    "DEFAULT_TEMPLATE",
    "PLUGIN_NAME",
    "SshPopAgentConfig",
    "SshPopServerConfig",
]

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.agent_path import AgentPathTemplate
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue, InvalidArgumentError

PLUGIN_NAME = "sshpop"
DEFAULT_TEMPLATE = "{{ .PluginName }}/{{ .Fingerprint }}"


@dataclass(frozen=True, kw_only=True)
class SshPopServerConfig:
    """The server half's settings (``[server.plugins.node_attestor.sshpop]``)."""

    cert_authorities: tuple[str, ...] = setting(
        (),
        description="public keys of the certificate authorities that sign host certificates, "
        "in `authorized_keys` format (`ssh-ed25519 AAAA... comment`)",
    )
    cert_authorities_path: Path | None = setting(
        None,
        description="a file of such keys, one a line; trusted together with `cert_authorities`",
    )
    canonical_domain: str = setting(
        "",
        description="a domain the certificate's first principal must end in (`.<domain>`); the "
        "host name is the principal without it (as CanonicalDomains in ssh_config(5))",
    )
    agent_path_template: str = setting(
        "",
        description="the agent ID's path below `/spire/agent`, with `{{ .PluginName }}`, "
        "`{{ .Fingerprint }}`, `{{ .Hostname }}`, `{{ .KeyId }}`, `{{ .Serial }}` and "
        "`{{ index .ValidPrincipals 0 }}`; empty means `{{ .PluginName }}/{{ .Fingerprint }}`",
    )

    def validate(self) -> Iterator[ConfigIssue]:
        """At least one source of CAs (each key parses at configure); the template parses."""
        if not self.cert_authorities and self.cert_authorities_path is None:
            yield ConfigIssue(
                "cert_authorities",
                "no certificate authority to trust: set cert_authorities or cert_authorities_path",
            )
        try:
            AgentPathTemplate.parse(self.agent_path_template)
        except InvalidArgumentError as error:
            yield ConfigIssue("agent_path_template", str(error))

    @property
    def template(self) -> AgentPathTemplate:
        """The agent path template in force."""
        return AgentPathTemplate.parse(self.agent_path_template or DEFAULT_TEMPLATE)


@dataclass(frozen=True, kw_only=True)
class SshPopAgentConfig:
    """The agent half's settings (``[agent.plugins.node_attestor.sshpop]``)."""

    host_key_path: Path = setting(
        Path("/etc/ssh/ssh_host_rsa_key"),
        description="the host's private key (OpenSSH or PEM format)",
    )
    host_cert_path: Path = setting(
        Path("/etc/ssh/ssh_host_rsa_key-cert.pub"),
        description="the host certificate of that key, as `ssh-keygen -s` writes it",
    )
