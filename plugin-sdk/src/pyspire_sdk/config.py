"""Typed, declarative configuration shared by the kernel and every plugin.

A configuration is a frozen dataclass whose fields are declared with :func:`setting` (a default
and a description). :func:`load_config` turns a TOML table into an instance, rejecting unknown
keys and wrong types and reporting *every* problem at once, each with its dotted key path, the
type that was expected and the value that was found. The same declaration produces the
documentation table (:func:`describe_config`), so docs and behaviour cannot drift apart.

Supported field types: ``str``, ``int``, ``float``, ``bool``, :class:`~datetime.timedelta`
(written ``"1h30m"``), :class:`~pathlib.Path`, :class:`~pyspire_sdk.spiffeid.SpiffeId`,
:class:`~pyspire_sdk.spiffeid.TrustDomain`, :class:`~enum.Enum` subclasses, ``Literal[...]``,
``X | None``, ``tuple[X, ...]``, ``dict[str, X]`` and nested configuration dataclasses.

A configuration class may define ``validate(self) -> Iterable[ConfigIssue]`` for rules that
span several fields; it runs only when every field parsed, and its issue paths are relative to
the class's own table.
"""

from __future__ import annotations

__all__ = ["SettingDoc", "describe_config", "load_config", "setting"]

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from pyspire_sdk.duration import format_duration, parse_duration
from pyspire_sdk.errors import ConfigError, ConfigIssue, InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

T = TypeVar("T")

_DESCRIPTION = "pyspire.description"
_SECRET = "pyspire.secret"
_MISSING: Any = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    *,
    description: str,
    default_factory: Callable[[], Any] | Any = _MISSING,
    secret: bool = False,
) -> Any:
    """Declare one configuration field with its documentation.

    Leave out ``default`` (and ``default_factory``) to make the key required. Mark
    ``secret=True`` for values that must never appear in logs or error messages.
    """
    metadata = {_DESCRIPTION: description, _SECRET: secret}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class SettingDoc:
    """One row of a configuration's documentation table."""

    key: str
    type_name: str
    required: bool
    default: str
    description: str


class _Invalid(Exception):
    """Raised inside the converter for one value; carries the reason."""


def _path(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def _found(value: object, *, secret: bool = False) -> str:
    if secret:
        return "a value (hidden)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:60] + "..."
        return f"string {shown!r}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def type_name(annotation: Any) -> str:
    """A human phrase for what a field expects: 'an integer', "one of 'a', 'b'", ..."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        return " or ".join(type_name(arg) for arg in inner)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin in (tuple, list):
        return f"an array of {_plural(args[0])}"
    if origin in (dict, Mapping):
        return f"a table of {_plural(args[1])}"
    simple = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        timedelta: "a duration like '1h30m'",
        Path: "a file path",
        SpiffeId: "a SPIFFE ID",
        TrustDomain: "a trust domain name",
    }
    if annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in annotation)
    if dataclasses.is_dataclass(annotation):
        return "a table"
    return getattr(annotation, "__name__", str(annotation))


def _plural(annotation: Any) -> str:
    phrase = type_name(annotation)
    for article in ("an ", "a "):
        if phrase.startswith(article):
            return phrase[len(article) :] + "s"
    return phrase


def _convert(annotation: Any, value: Any, path: str, issues: list[ConfigIssue], secret: bool) -> Any:
    """Convert ``value`` to ``annotation``, appending issues; returns ``_MISSING`` on failure."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    expected = type_name(annotation)

    def fail(reason: str | None = None) -> Any:
        message = reason or f"expected {expected}, found {_found(value, secret=secret)}"
        issues.append(ConfigIssue(path, message))
        return _MISSING

    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        if value is None and len(inner) < len(args):
            return None
        if len(inner) == 1:
            return _convert(inner[0], value, path, issues, secret)
        for candidate in inner:
            trial: list[ConfigIssue] = []
            result = _convert(candidate, value, path, trial, secret)
            if not trial:
                return result
        return fail()
    if origin is typing.Literal:
        return value if value in args and type(value) is type(args[0]) else fail()
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            return fail()
        before = len(issues)
        items = [
            _convert(args[0], item, _path(path, index), issues, secret)
            for index, item in enumerate(value)
        ]
        return tuple(items) if len(issues) == before else _MISSING
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            return fail()
        before = len(issues)
        converted = {
            str(key): _convert(args[1], item, _path(path, str(key)), issues, secret)
            for key, item in value.items()
        }
        return converted if len(issues) == before else _MISSING
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, Mapping):
            return fail()
        return _load(annotation, value, path, issues)
    if annotation is bool:
        return value if isinstance(value, bool) else fail()
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else fail()
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return fail()
    if annotation is str:
        return value if isinstance(value, str) else fail()
    if annotation is Path:
        return Path(value) if isinstance(value, str) and value else fail()
    if annotation is timedelta:
        if isinstance(value, str | int) and not isinstance(value, bool):
            try:
                return parse_duration(value)
            except InvalidArgumentError as error:
                return fail(f"expected {expected}: {error}")
        return fail()
    if annotation in (SpiffeId, TrustDomain):
        if not isinstance(value, str):
            return fail()
        try:
            return annotation.parse(value)
        except InvalidArgumentError as error:
            return fail(str(error))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        for member in annotation:
            if member.value == value:
                return member
        return fail()
    raise TypeError(f"configuration field type {annotation!r} at {path!r} is not supported")


def _load(config_type: type[T], data: Mapping[str, Any], prefix: str, issues: list[ConfigIssue]) -> T:
    hints = typing.get_type_hints(config_type)
    fields = {field.name: field for field in dataclasses.fields(config_type) if field.init}  # type: ignore[arg-type]
    before = len(issues)
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "(none: this takes no settings)"
            issues.append(ConfigIssue(_path(prefix, str(key)), f"unknown key; known keys: {known}"))
    values: dict[str, Any] = {}
    for name, field in fields.items():
        path = _path(prefix, name)
        if name not in data:
            if field.default is _MISSING and field.default_factory is _MISSING:
                issues.append(
                    ConfigIssue(path, f"required key is missing (expected {type_name(hints[name])})")
                )
            continue
        secret = bool(field.metadata.get(_SECRET, False))
        converted = _convert(hints[name], data[name], path, issues, secret)
        if converted is not _MISSING:
            values[name] = converted
    if len(issues) != before:
        return _MISSING  # type: ignore[no-any-return]
    instance = config_type(**values)
    validate = getattr(instance, "validate", None)
    if callable(validate):
        for issue in validate():
            issues.append(ConfigIssue(_path(prefix, issue.path) if issue.path else prefix, issue.message))
    return instance


def load_config(config_type: type[T], data: Mapping[str, Any] | None, *, path: str = "") -> T:
    """Build a ``config_type`` from a TOML table, or raise :class:`ConfigError` with every issue.

    ``path`` is the table's own key path in the document (``server.plugins.datastore.sqlite``),
    so each issue names the exact key an operator has to fix.
    """
    issues: list[ConfigIssue] = []
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([ConfigIssue(path, f"expected a table, found {_found(data)}")])
    instance = _load(config_type, data, path, issues)
    if issues:
        raise ConfigError(issues)
    return instance


def describe_config(config_type: type[Any]) -> list[SettingDoc]:
    """The documentation table of a configuration class, one row per key."""
    hints = typing.get_type_hints(config_type)
    rows: list[SettingDoc] = []
    for field in dataclasses.fields(config_type):
        if not field.init:
            continue
        required = field.default is _MISSING and field.default_factory is _MISSING
        if required:
            default = ""
        elif field.default is not _MISSING:
            default = _show_default(field.default)
        else:
            default = _show_default(field.default_factory())
        rows.append(
            SettingDoc(
                key=field.name,
                type_name=type_name(hints[field.name]),
                required=required,
                default=default,
                description=str(field.metadata.get(_DESCRIPTION, "")),
            )
        )
    return rows


def _show_default(value: Any) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return repr(value.value)
    if value is None:
        return "(unset)"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple | list) and not value:
        return "[]"
    return str(value)


def issues_from(problems: Iterable[tuple[str, str]]) -> list[ConfigIssue]:
    """Turn ``(key, message)`` pairs into :class:`ConfigIssue` objects (for ``validate``)."""
    return [ConfigIssue(key, message) for key, message in problems]
