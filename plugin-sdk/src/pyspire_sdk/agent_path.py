"""Agent path templates: how an operator shapes the agent IDs a node attestor makes.

SPIRE's attestors take ``agent_path_template``, a Go ``text/template`` rendered with facts the
attestor verified (``{{ .PluginName }}/{{ .Fingerprint }}``, ``/cn/{{ .Subject.CommonName }}``,
``static/{{ index .ValidPrincipals 0 }}``); the result, below ``/spire/agent``, is the agent's
path. This module renders the part of that language those templates use, by substitution only:
text and actions, where an action is

- a field, ``.Name`` or ``.Name.Inner`` (a mapping's key or a nested field), or
- ``index <field> <key>...``, a list item by integer or a mapping's value by quoted string.

Nothing else is accepted (no pipelines, functions other than ``index``, conditions or
variables), so a template can never run code. As in SPIRE, a field the facts lack is an error
rather than an empty string. The leading ``/`` is optional: ``x509pop/{{ .Fingerprint }}`` and
``/x509pop/{{ .Fingerprint }}`` name the same path. A plugin that knows its facts' names passes
them to :meth:`AgentPathTemplate.parse`, so a misspelt field fails the configuration, not the
first attestation.
"""

from __future__ import annotations

__all__ = ["AgentPathTemplate"]

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from pyspire_sdk.errors import InvalidArgumentError, InvalidSpiffeIdError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_FIELD = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(-?\d+)|(\S+))')


@dataclass(frozen=True)
class _Field:
    names: tuple[str, ...]

    def text(self) -> str:
        return "." + ".".join(self.names)


@dataclass(frozen=True)
class _Index:
    target: _Field
    keys: tuple[str | int | _Field, ...]


_Action = _Field | _Index


def _field(token: str, template: str) -> _Field:
    if not _FIELD.fullmatch(token):
        raise InvalidArgumentError(
            f"agent path template {template!r}: {token!r} is not supported; an action holds a "
            "field (.Name) or index .Field key"
        )
    return _Field(tuple(token[1:].split(".")))


class _Keyword(str):
    """The ``index`` function's name, told apart from a quoted string that reads the same."""


def _parse_action(source: str, template: str) -> _Action:
    tokens: list[str | int | _Field] = []
    text = source.strip()
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # only spaces are left
            break
        position = match.end()
        quoted, number, word = match.groups()
        if quoted is not None:
            tokens.append(quoted[1:-1].replace('\\"', '"').replace("\\\\", "\\"))
        elif number is not None:
            tokens.append(int(number))
        elif word == "index" and not tokens:
            tokens.append(_Keyword(word))
        else:
            tokens.append(_field(word, template))
    if len(tokens) == 1 and isinstance(tokens[0], _Field):
        return tokens[0]
    if len(tokens) >= 3 and isinstance(tokens[0], _Keyword) and isinstance(tokens[1], _Field):
        return _Index(tokens[1], tuple(tokens[2:]))
    raise InvalidArgumentError(
        f"agent path template {template!r}: action {{{{{source}}}}} is not supported; "
        "use a field (.Name) or index .Field key"
    )


def _missing(what: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"agent path template refers to {what}, which is not known")


def _lookup(value: object, field: _Field) -> object:
    current = value
    for depth, name in enumerate(field.names):
        if not isinstance(current, Mapping) or name not in current:
            shown = "." + ".".join(field.names[: depth + 1])
            raise _missing(shown)
        current = current[name]
    return current


def _render_value(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidArgumentError(f"agent path template: {what} is not text or a number")
    return str(value)


def _item(container: object, key: str | int, shown: str) -> object:
    """``index``'s one step: a mapping's value by string, a list's item by integer."""
    if isinstance(container, Mapping) and isinstance(key, str) and key in container:
        return container[key]
    if isinstance(container, str) or not isinstance(container, Sequence):
        raise _missing(shown)
    if isinstance(key, int) and 0 <= key < len(container):
        return container[key]
    raise _missing(shown)


@dataclass(frozen=True)
class AgentPathTemplate:
    """A parsed ``agent_path_template``; see the module documentation."""

    source: str
    _parts: tuple[str | _Action, ...]

    @classmethod
    def parse(cls, source: str, fields: Collection[str] | None = None) -> AgentPathTemplate:
        """Parse ``source``; :class:`~pyspire_sdk.errors.InvalidArgumentError` naming the
        template and the action it cannot use, or, when ``fields`` names the facts the plugin
        offers, a field that is not among them."""
        parts: list[str | _Action] = []
        position = 0
        trim_next = False
        for match in _ACTION.finditer(source):
            text, action = source[position : match.start()], match.group(1)
            # Go's trim markers, "{{- " and " -}}", drop the white space beside the action.
            if trim_next:
                text = text.lstrip()
            if action[:1] == "-" and action[1:2].isspace():
                text, action = text.rstrip(), action[1:]
            trim_next = action[-1:] == "-" and action[-2:-1].isspace()
            if trim_next:
                action = action[:-1]
            if text:
                parts.append(text)
            parts.append(_parse_action(action, source))
            position = match.end()
        tail = source[position:].lstrip() if trim_next else source[position:]
        if "{{" in tail:
            raise InvalidArgumentError(f"agent path template {source!r} has an unclosed action")
        if any("}}" in part for part in parts if isinstance(part, str)) or "}}" in tail:
            raise InvalidArgumentError(f"agent path template {source!r} has '}}}}' without '{{{{'")
        if tail:
            parts.append(tail)
        template = cls(source, tuple(parts))
        if fields is not None:
            unknown = sorted(set(template.fields) - set(fields))
            if unknown:
                raise InvalidArgumentError(
                    f"agent path template field .{unknown[0]} is unknown: use one of "
                    + ", ".join(f".{known}" for known in sorted(fields))
                )
        return template

    @property
    def fields(self) -> tuple[str, ...]:
        """The top-level fact names the template uses, in order."""
        names: list[str] = []
        for part in self._parts:
            if isinstance(part, _Field):
                names.append(part.names[0])
            elif isinstance(part, _Index):
                names.append(part.target.names[0])
                names += [key.names[0] for key in part.keys if isinstance(key, _Field)]
        return tuple(names)

    def render(self, facts: Mapping[str, object]) -> str:
        """The path ``facts`` give, always starting with ``/``; an error names a field the
        facts lack or a value that is not text or a number."""
        pieces: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, _Field):
                pieces.append(_render_value(_lookup(facts, part), part.text()))
            else:
                pieces.append(self._render_index(part, facts))
        path = "".join(pieces)
        return path if path.startswith("/") else "/" + path

    @staticmethod
    def _render_index(action: _Index, facts: Mapping[str, object]) -> str:
        current = _lookup(facts, action.target)
        shown = f"index {action.target.text()}"
        for key in action.keys:
            if isinstance(key, _Field):
                key = _render_value(_lookup(facts, key), key.text())
            shown += f" {key!r}"
            current = _item(current, key, shown)
        return _render_value(current, shown)

    def agent_id(self, trust_domain: TrustDomain, facts: Mapping[str, object]) -> SpiffeId:
        """``spiffe://<trust domain>/spire/agent<rendered path>``.

        Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` when the facts lack a field
        or the rendered path is not a valid SPIFFE ID path (an empty segment, a character
        outside letters, digits, ``.``, ``-`` and ``_``).
        """
        path = self.render(facts)
        try:
            return SpiffeId.from_path(trust_domain, "/spire/agent" + path)
        except InvalidSpiffeIdError as error:
            raise InvalidArgumentError(
                f"agent path {path!r} from template {self.source!r} is not a valid SPIFFE ID "
                f"path: {error}"
            ) from None
