"""Reading a pyspire configuration file: TOML, environment expansion, top-level layout.

A server file has one ``[server]`` table, an agent file one ``[agent]`` table. Each holds the
process settings and a ``plugins`` table of plugin configurations,
``[<section>.plugins.<type>.<name>]``, whose document order is the order of plugin chains.
Any other top-level table is an error, so a misspelt or misplaced table is not silently ignored.

Every problem is reported at once in a :class:`~pyspire_sdk.errors.ConfigError`, each
:class:`~pyspire_sdk.errors.ConfigIssue` with its dotted key path (``server.bind_port``). Only
an unreadable file or a TOML syntax error stops early: then there is nothing to check.
"""

from __future__ import annotations

__all__ = [
    "AGENT_SCHEMA",
    "SERVER_SCHEMA",
    "ConfigSchema",
    "LoadedConfig",
    "expand_env_vars",
    "load_agent_config",
    "load_document",
    "load_server_config",
    "parse_toml",
    "plugins_table",
    "read_document",
]

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pyspire.config.agent import AgentConfig
from pyspire.config.server import ServerConfig
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, ConfigIssue

SettingsT = TypeVar("SettingsT")

PLUGINS_KEY = "plugins"
"""The key, inside the process table, of the plugin configurations."""

_ENV_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_TOML_POSITION = re.compile(
    r"^(?P<reason>.*?)\s*\(at line (?P<line>\d+), column (?P<column>\d+)\)$"
)


@dataclass(frozen=True)
class ConfigSchema(Generic[SettingsT]):
    """What one process's configuration file looks like: its table and settings type."""

    section: str
    settings_type: type[SettingsT]
    default_path: Path

    @property
    def plugins_path(self) -> str:
        """The key path of the plugins table, e.g. ``server.plugins``."""
        return f"{self.section}.{PLUGINS_KEY}"


SERVER_SCHEMA = ConfigSchema("server", ServerConfig, Path("conf/server/server.toml"))
"""The server's file: a ``[server]`` table."""

AGENT_SCHEMA = ConfigSchema("agent", AgentConfig, Path("conf/agent/agent.toml"))
"""The agent's file: an ``[agent]`` table."""


@dataclass(frozen=True)
class LoadedConfig(Generic[SettingsT]):
    """A validated configuration: the process settings and the raw plugins table.

    ``plugins`` is the ``[<section>.plugins]`` table as written, in document order; the plugin
    catalog validates it against the installed plugins. ``warnings`` are advice that does not
    stop the process (a risky but legal setting), with full key paths.
    """

    settings: SettingsT
    plugins: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None
    warnings: tuple[ConfigIssue, ...] = ()


def expand_env_vars(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``$VAR`` and ``${VAR}`` in ``text`` with their values from ``environ``.

    Like SPIRE's ``-expandEnv`` (Go's ``os.ExpandEnv``), it runs on the file text before
    parsing and an unset variable expands to the empty string. A ``$`` not followed by a
    variable name is kept as is.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return environ.get(name, "")

    return _ENV_REFERENCE.sub(replace, text)


def parse_toml(text: str, source: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Parse TOML text, raising :class:`ConfigError` with the line and column of a syntax error
    and, when ``source`` is given, the file it came from (the one line an operator reads must
    say which file to open)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        where = f" in {str(source)!r}" if source is not None else ""
        message = str(error)
        found = _TOML_POSITION.match(message)
        if found is None:
            raise ConfigError(
                [ConfigIssue("", f"invalid toml{where}: {_lower_first(message)}")]
            ) from None
        reason = _lower_first(found.group("reason"))
        raise ConfigError(
            [
                ConfigIssue(
                    "",
                    f"invalid toml{where} at line {found.group('line')}, column "
                    f"{found.group('column')}: {reason}",
                )
            ]
        ) from None


def read_document(
    path: str | os.PathLike[str],
    *,
    expand_env: bool = False,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Read and parse a configuration file, expanding environment variables when asked.

    Raises :class:`ConfigError` when the file cannot be read, is not UTF-8, or is not TOML.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        reason = _lower_first(error.strerror or str(error))
        raise ConfigError(
            [ConfigIssue("", f"cannot read configuration file {str(source)!r}: {reason}")]
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            [
                ConfigIssue(
                    "",
                    f"configuration file {str(source)!r} is not UTF-8 text (byte {error.start})",
                )
            ]
        ) from None
    if expand_env:
        text = expand_env_vars(text, os.environ if environ is None else environ)
    return parse_toml(text, source)


def plugins_table(schema: ConfigSchema[Any], document: Mapping[str, Any]) -> Mapping[str, Any]:
    """The raw plugins table of a parsed document, or an empty table when it is absent or broken.

    A plugins value that is not a table is reported by :func:`load_document`; here it simply
    yields nothing to plan.
    """
    section = document.get(schema.section)
    if not isinstance(section, Mapping):
        return {}
    plugins = section.get(PLUGINS_KEY, {})
    return plugins if isinstance(plugins, Mapping) else {}


def load_document(
    schema: ConfigSchema[SettingsT],
    document: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    source: Path | None = None,
) -> LoadedConfig[SettingsT]:
    """Validate a parsed document against ``schema``, or raise :class:`ConfigError`.

    ``overrides`` (from command-line flags) replace keys of the process table before
    validation; a ``None`` value means "not given" and overrides nothing. The plugins table is
    returned unchecked except that it must be a table.
    """
    issues: list[ConfigIssue] = []
    for key, value in document.items():
        if key != schema.section:
            kind = "table" if isinstance(value, Mapping) else "key"
            issues.append(
                ConfigIssue(
                    str(key),
                    f"unknown top-level {kind}; the {schema.section} configuration has only "
                    f"[{schema.section}]",
                )
            )
    raw_section = document.get(schema.section, {})
    if not isinstance(raw_section, Mapping):
        issues.append(ConfigIssue(schema.section, "expected a table"))
        raw_section = {}
    table = dict(raw_section)
    raw_plugins = table.pop(PLUGINS_KEY, {})
    if not isinstance(raw_plugins, Mapping):
        issues.append(
            ConfigIssue(
                schema.plugins_path,
                f"expected a table of plugin types like [{schema.plugins_path}.<type>.<name>]",
            )
        )
        raw_plugins = {}
    for key, value in (overrides or {}).items():
        if value is not None:
            table[key] = value
    settings: SettingsT | None = None
    try:
        settings = load_config(schema.settings_type, table, path=schema.section)
    except ConfigError as error:
        issues.extend(error.issues)
    if issues or settings is None:
        raise ConfigError(issues)
    advice = getattr(settings, "warnings", None)
    warnings = tuple(
        ConfigIssue(
            f"{schema.section}.{issue.path}" if issue.path else schema.section, issue.message
        )
        for issue in (advice() if callable(advice) else ())
    )
    return LoadedConfig(settings=settings, plugins=raw_plugins, source=source, warnings=warnings)


def _load_file(
    schema: ConfigSchema[SettingsT],
    path: str | os.PathLike[str] | None,
    expand_env: bool,
    overrides: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None,
) -> LoadedConfig[SettingsT]:
    source = Path(path) if path is not None else schema.default_path
    document = read_document(source, expand_env=expand_env, environ=environ)
    return load_document(schema, document, overrides=overrides, source=source)


def load_server_config(
    path: str | os.PathLike[str] | None = None,
    *,
    expand_env: bool = False,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig[ServerConfig]:
    """Load and validate a server configuration file (default ``conf/server/server.toml``).

    Raises :class:`ConfigError` with every problem found, each with its key path.
    """
    return _load_file(SERVER_SCHEMA, path, expand_env, overrides, environ)


def load_agent_config(
    path: str | os.PathLike[str] | None = None,
    *,
    expand_env: bool = False,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig[AgentConfig]:
    """Load and validate an agent configuration file (default ``conf/agent/agent.toml``).

    Raises :class:`ConfigError` with every problem found, each with its key path.
    """
    return _load_file(AGENT_SCHEMA, path, expand_env, overrides, environ)


def _lower_first(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].lower() + text[1:]
