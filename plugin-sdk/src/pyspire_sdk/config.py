"""Typed, declarative configuration shared by the kernel and every plugin.

A configuration is a frozen dataclass whose fields are declared with :func:`setting` (a default
and a description). :func:`load_config` turns a TOML table into an instance, rejecting unknown
keys and wrong types and reporting *every* problem at once, each with its dotted key path
(``server.plugins.datastore.sqlite.pool.size``, ``items[2].name``), the type that was expected
and the value that was found. The same declaration produces the documentation table
(:func:`describe_config`), so docs and behaviour cannot drift apart.

Supported field types: ``str``, ``int``, ``float``, ``bool``, :class:`~datetime.timedelta`
(written ``"1h30m"``), :class:`~pathlib.Path`, :class:`~pyspire_sdk.spiffeid.SpiffeId`,
:class:`~pyspire_sdk.spiffeid.TrustDomain`, :class:`~enum.Enum` subclasses (matched by value),
``Literal[...]``, ``X | None``, unions of these, ``tuple[X, ...]``, ``list[X]``,
``dict[str, X]`` / ``Mapping[str, X]`` and nested configuration dataclasses.

A field declared ``secret=True`` never shows its value: not in an error message, not in the
dataclass ``repr`` and not as a default in the documentation table.

A configuration class may define ``validate(self) -> Iterable[ConfigIssue]`` for rules that
span several fields; it runs only when every field parsed, and its issue paths are relative to
the class's own table (``""`` means the table itself). A ``ValueError`` raised while the class
is built (from ``__post_init__``) is reported as an issue on the table too.
:func:`check_port` is the one rule for a TCP port setting, for such a ``validate``.
"""

from __future__ import annotations

__all__ = [
    "SettingDoc",
    "check_port",
    "describe_config",
    "issues_from",
    "load_config",
    "setting",
    "settings_table",
    "type_name",
]

import dataclasses
import enum
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from pyspire_sdk._duration import format_duration, parse_duration
from pyspire_sdk.errors import ConfigError, ConfigIssue, InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

T = TypeVar("T")

_DESCRIPTION = "pyspire.description"
_HIDDEN = "pyspire.secret"
_MISSING: Any = dataclasses.MISSING
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_DATACLASSES: tuple[type[Any], ...] = (SpiffeId, TrustDomain)


def setting(
    default: Any = _MISSING,
    *,
    description: str,
    default_factory: Callable[[], Any] | Any = _MISSING,
    secret: bool = False,
) -> Any:
    """Declare one configuration field with its documentation.

    Leave out ``default`` (and ``default_factory``) to make the key required. Mark
    ``secret=True`` for values that must never appear in logs or error messages; such a field
    is also left out of the dataclass ``repr``.
    """
    if default is not _MISSING and default_factory is not _MISSING:
        raise TypeError("setting takes default or default_factory, not both")
    metadata = {_DESCRIPTION: description, _HIDDEN: secret}
    if default_factory is not _MISSING:
        return dataclasses.field(
            default_factory=default_factory, metadata=metadata, repr=not secret
        )
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


@dataclass(frozen=True)
class SettingDoc:
    """One row of a configuration's documentation table.

    ``key`` is the dotted path below the configuration's own table (``pool.size``; an array of
    tables contributes ``items[].name``). ``default`` is empty for a required key and
    ``"(hidden)"`` for a secret with a non-empty default.
    """

    key: str
    type_name: str
    required: bool
    default: str
    description: str
    secret: bool = False


def _is_table_type(annotation: Any) -> bool:
    """True for a nested configuration dataclass (SPIFFE types are dataclasses but scalars)."""
    return (
        isinstance(annotation, type)
        and dataclasses.is_dataclass(annotation)
        and annotation not in _SCALAR_DATACLASSES
    )


def _key_text(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _path(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    text = _key_text(key)
    return f"{prefix}.{text}" if prefix else text


def _join(prefix: str, relative: str) -> str:
    """Join a table's path and a path relative to it (which may start with ``[index]``)."""
    if not relative:
        return prefix
    if not prefix or relative.startswith("["):
        return prefix + relative
    return f"{prefix}.{relative}"


def _found(value: object, *, secret: bool = False) -> str:
    if secret:
        return "a value (hidden)"
    if value is None:
        return "nothing (null)"
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
    if _is_table_type(annotation):
        return "a table"
    return getattr(annotation, "__name__", str(annotation))


def _plural(annotation: Any) -> str:
    phrase = type_name(annotation)
    for article in ("an ", "a "):
        if phrase.startswith(article):
            return phrase[len(article) :] + "s"
    return phrase


def _convert(
    annotation: Any, value: Any, path: str, issues: list[ConfigIssue], secret: bool
) -> Any:
    """Convert ``value`` to ``annotation``, appending issues; returns ``_MISSING`` on failure."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    expected = type_name(annotation)

    def fail(reason: str | None = None) -> Any:
        if reason is None or secret:
            reason = f"expected {expected}, found {_found(value, secret=secret)}"
        issues.append(ConfigIssue(path, reason))
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
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        return fail()
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(
                f"configuration field type {annotation!r} at {path!r} is not supported: "
                "use tuple[X, ...]"
            )
        return _convert_items(args[0], value, path, issues, secret, fail, tuple)
    if origin is list:
        return _convert_items(args[0], value, path, issues, secret, fail, list)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            return fail()
        before = len(issues)
        converted = {
            str(key): _convert(args[1], item, _path(path, str(key)), issues, secret)
            for key, item in value.items()
        }
        return converted if len(issues) == before else _MISSING
    if _is_table_type(annotation):
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
        if isinstance(value, str) and not value:
            return fail("expected a file path, found an empty string")
        return Path(value) if isinstance(value, str) else fail()
    if annotation is timedelta:
        if isinstance(value, str | int) and not isinstance(value, bool):
            try:
                return parse_duration(value)
            except InvalidArgumentError as error:
                return fail(str(error))
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
            if member.value == value and type(member.value) is type(value):
                return member
        return fail()
    raise TypeError(f"configuration field type {annotation!r} at {path!r} is not supported")


def _convert_items(
    item_type: Any,
    value: Any,
    path: str,
    issues: list[ConfigIssue],
    secret: bool,
    fail: Callable[[], Any],
    container: type[tuple[Any, ...]] | type[list[Any]],
) -> Any:
    if not isinstance(value, list | tuple):
        return fail()
    before = len(issues)
    items = [
        _convert(item_type, item, _path(path, index), issues, secret)
        for index, item in enumerate(value)
    ]
    return container(items) if len(issues) == before else _MISSING


def _is_required(field: dataclasses.Field[Any]) -> bool:
    return field.default is _MISSING and field.default_factory is _MISSING


def _load(
    config_type: type[T], data: Mapping[str, Any], prefix: str, issues: list[ConfigIssue]
) -> T:
    hints = typing.get_type_hints(config_type)
    fields = {
        field.name: field
        for field in dataclasses.fields(config_type)  # type: ignore[arg-type]
        if field.init
    }
    before = len(issues)
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "(none: this table takes no settings)"
            issues.append(ConfigIssue(_path(prefix, str(key)), f"unknown key; known keys: {known}"))
    values: dict[str, Any] = {}
    for name, field in fields.items():
        path = _path(prefix, name)
        if name not in data:
            if _is_required(field):
                issues.append(
                    ConfigIssue(
                        path, f"required key is missing (expected {type_name(hints[name])})"
                    )
                )
            continue
        secret = bool(field.metadata.get(_HIDDEN, False))
        converted = _convert(hints[name], data[name], path, issues, secret)
        if converted is not _MISSING:
            values[name] = converted
    if len(issues) != before:
        return cast(T, _MISSING)
    try:
        instance = config_type(**values)
    except ValueError as error:
        issues.append(ConfigIssue(prefix, str(error)))
        return cast(T, _MISSING)
    validate = getattr(instance, "validate", None)
    if callable(validate):
        found = validate()
        for issue in found if found is not None else ():
            if not isinstance(issue, ConfigIssue):
                raise TypeError(
                    f"{config_type.__name__}.validate must yield ConfigIssue objects, "
                    f"found {type(issue).__name__}"
                )
            issues.append(ConfigIssue(_join(prefix, issue.path), issue.message))
    return instance


def load_config(config_type: type[T], data: Mapping[str, Any] | None, *, path: str = "") -> T:
    """Build a ``config_type`` from a TOML table, or raise :class:`ConfigError` with every issue.

    ``path`` is the table's own key path in the document (``server.plugins.datastore.sqlite``),
    so each issue names the exact key an operator has to fix. ``None`` means an empty table.
    """
    if not (dataclasses.is_dataclass(config_type) and isinstance(config_type, type)):
        raise TypeError(f"load_config needs a dataclass type, found {config_type!r}")
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
    """The documentation table of a configuration class, one row per key.

    A nested configuration table gets its own row followed by rows for its keys
    (``pool``, ``pool.size``, ...); an array of tables lists its keys under ``name[]``, a
    table of tables keyed by names of the operator's choosing under ``name.<name>``.
    """
    rows: list[SettingDoc] = []
    _describe(config_type, "", rows)
    return rows


def settings_table(config_type: type[Any]) -> str:
    """The documentation table of a configuration class as Markdown, one row per key: the
    table a plugin's README shows, so a test can check the README against the declaration."""
    lines = ["| key | type | required | default | description |", "|---|---|---|---|---|"]
    for row in describe_config(config_type):
        required = "yes" if row.required else "no"
        cells = (_markdown_text(row.type_name), _markdown_text(row.default))
        lines.append(
            f"| `{row.key}` | {cells[0]} | {required} | {cells[1]} | "
            f"{_markdown_text(row.description)} |"
        )
    return "\n".join(lines)


def _markdown_text(text: str) -> str:
    """``text`` as a Markdown table cell shows it: outside code spans ``<name>`` would be read
    as an HTML tag and vanish (inside them an entity would show as written), and ``|`` ends
    the cell anywhere."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def _nested_config(annotation: Any) -> tuple[type[Any], str] | None:
    """The dataclass a field's type holds (directly, optionally or in an array), with a suffix."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        return _nested_config(inner[0]) if len(inner) == 1 else None
    if origin in (tuple, list) and args:
        found = _nested_config(args[0])
        return (found[0], "[]" + found[1]) if found else None
    if origin in (dict, Mapping) and len(args) == 2:
        found = _nested_config(args[1])
        return (found[0], ".<name>" + found[1]) if found else None
    if _is_table_type(annotation):
        return (annotation, "")
    return None


def _describe(config_type: type[Any], prefix: str, rows: list[SettingDoc]) -> None:
    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        if not field.init:
            continue
        required = _is_required(field)
        secret = bool(field.metadata.get(_HIDDEN, False))
        if required:
            default = ""
        else:
            value = (
                field.default
                if field.default is not _MISSING
                else cast(Callable[[], Any], field.default_factory)()
            )
            default = "(hidden)" if secret and value not in ("", None) else _show_default(value)
        key = _path(prefix, field.name)
        rows.append(
            SettingDoc(
                key=key,
                type_name=type_name(hints[field.name]),
                required=required,
                default=default,
                description=str(field.metadata.get(_DESCRIPTION, "")),
                secret=secret,
            )
        )
        nested = _nested_config(hints[field.name])
        if nested is not None:
            _describe(nested[0], key + nested[1], rows)


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
    if isinstance(value, dict) and not value:
        return "{}"
    if _is_table_type(type(value)):
        return "(see keys below)"
    return str(value)


def issues_from(problems: Iterable[tuple[str, str]]) -> list[ConfigIssue]:
    """Turn ``(key, message)`` pairs into :class:`ConfigIssue` objects (for ``validate``)."""
    return [ConfigIssue(key, message) for key, message in problems]


def check_port(key: str, port: int, *, allow_zero: bool) -> Iterator[ConfigIssue]:
    """An issue when ``port`` is not a TCP port number (0 means "any free port" if allowed)."""
    lowest = 0 if allow_zero else 1
    if not lowest <= port <= 65535:
        yield ConfigIssue(key, f"must be between {lowest} and 65535, found {port}")
