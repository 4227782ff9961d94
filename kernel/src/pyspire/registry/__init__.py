"""The identity registry: entry validation and the in-memory authorized-entries index.

- :mod:`pyspire.registry.validation`: SPIRE's rules for registration entries, pure functions.
- :mod:`pyspire.registry.authorized`: :class:`AuthorizedEntriesIndex`, which entries each agent
  may hold (direct children, node aliases, descendants), sans-IO.
- :mod:`pyspire.registry.cache`: :class:`RegistryCache`, the index kept current from the
  datastore's change feed on an injected clock.
"""

from __future__ import annotations

__all__ = [
    "AuthorizedEntriesIndex",
    "IndexStats",
    "RegistryCache",
    "is_node_alias",
    "is_reserved_path",
    "node_alias_parent",
    "validate_dns_name",
    "validate_entry",
    "validate_entry_id",
    "validate_text",
]

from pyspire.registry.authorized import AuthorizedEntriesIndex, IndexStats
from pyspire.registry.cache import RegistryCache
from pyspire.registry.validation import (
    is_node_alias,
    is_reserved_path,
    node_alias_parent,
    validate_dns_name,
    validate_entry,
    validate_entry_id,
    validate_text,
)
