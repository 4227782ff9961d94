"""Configuration files of the pyspire server and agent: TOML, validated all at once.

``load_server_config`` and ``load_agent_config`` read a file and return the process settings
(frozen dataclasses declared with :func:`pyspire_sdk.config.setting`) with the raw plugins
table, or raise :class:`~pyspire_sdk.errors.ConfigError` listing every problem by key path.
"""

from __future__ import annotations

from pyspire.config.agent import BOOTSTRAP_KEYS, AgentConfig
from pyspire.config.common import KeyType
from pyspire.config.document import (
    AGENT_SCHEMA,
    SERVER_SCHEMA,
    ConfigSchema,
    LoadedConfig,
    expand_env_vars,
    load_agent_config,
    load_document,
    load_server_config,
    parse_toml,
    plugins_table,
    read_document,
)
from pyspire.config.join_token import read_join_token, read_join_token_file
from pyspire.config.server import CaSubject, ServerConfig

__all__ = [
    "AGENT_SCHEMA",
    "BOOTSTRAP_KEYS",
    "SERVER_SCHEMA",
    "AgentConfig",
    "CaSubject",
    "ConfigSchema",
    "KeyType",
    "LoadedConfig",
    "ServerConfig",
    "expand_env_vars",
    "load_agent_config",
    "load_document",
    "load_server_config",
    "parse_toml",
    "plugins_table",
    "read_document",
    "read_join_token",
    "read_join_token_file",
]
