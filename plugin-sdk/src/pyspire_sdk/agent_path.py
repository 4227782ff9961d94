"""Agent path templates: how a node attestor's facts become the path of an agent ID.

SPIRE lets operators shape agent IDs with ``agent_path_template``, a Go text/template such as
``/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}``; the result is the path after
``/spire/agent``. This module reads the form those templates take in practice: literal text
and ``{{ .Name }}`` fields. Anything else Go's template language has (pipelines, functions,
conditionals) is refused when the template is parsed, naming what is not supported, rather
than rendered differently from SPIRE. Field names are checked when the template is parsed,
against the names the plugin offers, so a typo fails the configuration and not the first
attestation.
"""

from __future__ import annotations

__all__ = ["AgentPathTemplate"]

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from pyspire_sdk.errors import InvalidArgumentError, InvalidSpiffeIdError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class AgentPathTemplate:
    """A parsed template: literal text and field names, alternating."""

    text: str
    parts: tuple[str, ...]
    """Literal, field, literal, field, ..., literal (fields at odd positions)."""

    @classmethod
    def parse(cls, text: str, fields: Collection[str]) -> AgentPathTemplate:
        """Parse ``text``, whose fields must be among ``fields``; raises
        :class:`~pyspire_sdk.errors.InvalidArgumentError` naming what is wrong."""
        parts: list[str] = []
        position = 0
        for match in _ACTION.finditer(text):
            parts.append(text[position : match.start()])
            action = match.group(1)
            field = _FIELD.fullmatch(action)
            if field is None:
                raise InvalidArgumentError(
                    f"agent path template action {{{{ {action} }}}} is not supported: "
                    "only fields such as {{ .Name }} are"
                )
            name = field.group(1)
            if name not in fields:
                raise InvalidArgumentError(
                    f"agent path template field .{name} is unknown: use one of "
                    + ", ".join(f".{known}" for known in sorted(fields))
                )
            parts.append(name)
            position = match.end()
        rest = text[position:]
        if "{{" in rest or "}}" in rest:
            raise InvalidArgumentError("agent path template has an unclosed {{ or a stray }}")
        parts.append(rest)
        return cls(text=text, parts=tuple(parts))

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names the template uses, in order."""
        return self.parts[1::2]

    def render(self, values: Mapping[str, str]) -> str:
        """The template with each field replaced by its value (``values`` has every field)."""
        return "".join(values[part] if index % 2 else part for index, part in enumerate(self.parts))

    def agent_id(self, trust_domain: TrustDomain, values: Mapping[str, str]) -> SpiffeId:
        """``spiffe://<trust domain>/spire/agent<rendered path>``, as SPIRE's ``AgentID``.

        The rendered path must start with ``/`` and consist of valid SPIFFE path segments;
        otherwise :class:`~pyspire_sdk.errors.InvalidArgumentError` names the problem (a value
        with a character a SPIFFE ID may not hold, say).
        """
        path = self.render(values)
        if not path.startswith("/"):
            raise InvalidArgumentError(f"agent path {path!r} does not start with '/'")
        try:
            return SpiffeId.from_segments(trust_domain, "spire", "agent", *path[1:].split("/"))
        except InvalidSpiffeIdError as error:
            raise InvalidArgumentError(f"agent path {path!r} is not valid: {error}") from None
