"""The settings of both halves, with SPIRE's keys and defaults."""

from __future__ import annotations

__all__ = [
    "DEFAULT_SVID_PREFIX",
    "PLUGIN_NAME",
    "X509PopAgentConfig",
    "X509PopServerConfig",
    "default_template",
]

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pyspire_sdk.agent_path import AgentPathTemplate
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue, InvalidArgumentError

PLUGIN_NAME = "x509pop"
DEFAULT_SVID_PREFIX = "/spire-exchange"

_DEFAULT_TEMPLATES = {
    "external_pki": "{{ .PluginName }}/{{ .Fingerprint }}",
    "spiffe": "{{ .PluginName }}/{{ .SVIDPathTrimmed }}",
}


def default_template(mode: str) -> str:
    """The agent path template of ``mode`` when ``agent_path_template`` is empty."""
    return _DEFAULT_TEMPLATES[mode]


@dataclass(frozen=True, kw_only=True)
class X509PopServerConfig:
    """The server half's settings (``[server.plugins.node_attestor.x509pop]``)."""

    mode: Literal["external_pki", "spiffe"] = setting(
        "external_pki",
        description="`external_pki` verifies agents' certificates against `ca_bundle_path(s)`; "
        "`spiffe` against the server's own trust bundle, so agents attest with an X509-SVID",
    )
    svid_prefix: str = setting(
        DEFAULT_SVID_PREFIX,
        description="in `spiffe` mode, the path prefix the X509-SVID's SPIFFE ID must have; it is "
        'removed to make `.SVIDPathTrimmed`; `""` allows every path',
    )
    ca_bundle_path: Path | None = setting(
        None,
        description="a PEM file of the CA certificates agents' certificates must chain to "
        "(`external_pki` mode; this or `ca_bundle_paths`)",
    )
    ca_bundle_paths: tuple[Path, ...] = setting(
        (),
        description="several such PEM files, all trusted (`external_pki` mode; this or "
        "`ca_bundle_path`)",
    )
    agent_path_template: str = setting(
        "",
        description="the agent ID's path below `/spire/agent`, with `{{ .PluginName }}`, "
        "`{{ .Fingerprint }}`, `{{ .TrustDomain }}`, `{{ .Subject.CommonName }}`, "
        "`{{ .SerialNumberHex }}`, `{{ .SVIDPathTrimmed }}` and "
        '`{{ index .URISanSelectors "<key>" }}`; empty means '
        "`{{ .PluginName }}/{{ .Fingerprint }}` (`spiffe` mode: "
        "`{{ .PluginName }}/{{ .SVIDPathTrimmed }}`)",
    )
    max_intermediates: int = setting(
        4, description="the most intermediate certificates an agent may send with its own"
    )
    max_rsa_key_size: int = setting(
        8192, description="the largest RSA key, in bits, of any certificate an agent sends"
    )
    verify_client_ip: bool = setting(
        False,
        description="also require the address the agent connects from among the IP SANs of "
        "its certificate (the immediate peer: a proxy's address when there is one)",
    )

    def validate(self) -> Iterator[ConfigIssue]:
        """SPIRE's rules across keys: the CA files belong to `external_pki` mode, exactly
        one way; limits are positive; the template parses."""
        paths = self.ca_bundle_path is not None or bool(self.ca_bundle_paths)
        if self.mode == "external_pki":
            if self.ca_bundle_path is not None and self.ca_bundle_paths:
                yield ConfigIssue(
                    "ca_bundle_paths", "set ca_bundle_path or ca_bundle_paths, not both"
                )
            elif not paths:
                yield ConfigIssue(
                    "ca_bundle_path",
                    "external_pki mode needs the CA certificates: set ca_bundle_path or "
                    "ca_bundle_paths",
                )
        elif paths:
            yield ConfigIssue(
                "ca_bundle_path" if self.ca_bundle_path is not None else "ca_bundle_paths",
                "spiffe mode verifies with the server's own bundle: remove the CA files",
            )
        for key, value in (
            ("max_intermediates", self.max_intermediates),
            ("max_rsa_key_size", self.max_rsa_key_size),
        ):
            if value <= 0:
                yield ConfigIssue(key, f"must be greater than 0, found {value}")
        try:
            AgentPathTemplate.parse(self.agent_path_template)
        except InvalidArgumentError as error:
            yield ConfigIssue("agent_path_template", str(error))

    @property
    def template(self) -> AgentPathTemplate:
        """The agent path template in force (the mode's default when none is set)."""
        return AgentPathTemplate.parse(self.agent_path_template or default_template(self.mode))

    @property
    def exchange_prefix(self) -> str:
        """``svid_prefix`` as compared with SVID paths: always ending with ``/``."""
        return self.svid_prefix if self.svid_prefix.endswith("/") else self.svid_prefix + "/"


@dataclass(frozen=True, kw_only=True)
class X509PopAgentConfig:
    """The agent half's settings (``[agent.plugins.node_attestor.x509pop]``)."""

    private_key_path: Path = setting(
        description="the PEM private key (PKCS#1, PKCS#8 or SEC 1) of the node's certificate"
    )
    certificate_path: Path = setting(
        description="a PEM file: the node's certificate first (with the digitalSignature key "
        "usage), then any intermediates the server needs to reach its CA"
    )
    intermediates_path: Path | None = setting(
        None,
        description="more intermediate certificates (PEM), sent after those of `certificate_path`",
    )
