"""Names in KMS: the alias of each key and the description that marks a key as ours.

A key is found again by its alias, ``alias/SPIRE_SERVER/<trust domain>/<server id>/<key id>``
as SPIRE names it, so servers of one trust domain (an HA pair, say) share an account without
touching each other's keys. KMS allows only letters, digits, ``/``, ``_`` and ``-`` in an alias
and at most 256 characters, while a key ID is any printable ASCII without ``/``: the key ID and
the trust domain are written with every other character escaped as ``_XX`` (hex; SPIRE escapes
``.`` and ``+`` the same way, as ``_2e`` and ``_2b``), and a key ID too long for the alias is
written as ``_h`` and its SHA-256, the key ID itself then being read from the key's tag. Pure
functions; no I/O.
"""

from __future__ import annotations

__all__ = [
    "ALIAS_PREFIX",
    "KEY_ID_TAG",
    "MAX_ALIAS_LENGTH",
    "alias_name",
    "key_description",
    "key_id_from_alias",
    "server_prefix",
    "trust_domain_prefix",
]

import hashlib
import string

ALIAS_PREFIX = "alias/SPIRE_SERVER/"
"""SPIRE's prefix of every alias the plugin makes."""

MAX_ALIAS_LENGTH = 256
"""The longest alias name KMS accepts."""

KEY_ID_TAG = "pyspire-key-id"
"""The tag that holds the key ID on every key the plugin makes."""

_PLAIN = frozenset(string.ascii_letters + string.digits + "-")
_HASHED = "_h"


def trust_domain_prefix(trust_domain: str) -> str:
    """The alias prefix shared by every server of ``trust_domain``."""
    return f"{ALIAS_PREFIX}{_encode(trust_domain)}/"


def server_prefix(trust_domain: str, server_id: str) -> str:
    """The alias prefix of one server's keys."""
    return f"{trust_domain_prefix(trust_domain)}{server_id}/"


def key_description(trust_domain: str) -> str:
    """The description of every key made for ``trust_domain`` (SPIRE's), by which keys left
    without an alias are recognised as the plugin's own."""
    return f"SPIRE_SERVER/{trust_domain}"


def _encode(key_id: str) -> str:
    return "".join(
        character if character in _PLAIN else f"_{ord(character):02x}" for character in key_id
    )


def alias_name(trust_domain: str, server_id: str, key_id: str) -> str:
    """The alias of the key stored under ``key_id`` by server ``server_id``."""
    prefix = server_prefix(trust_domain, server_id)
    encoded = _encode(key_id)
    if len(prefix) + len(encoded) > MAX_ALIAS_LENGTH:
        encoded = _HASHED + hashlib.sha256(key_id.encode("ascii")).hexdigest()
    return prefix + encoded


def key_id_from_alias(alias: str, prefix: str) -> str | None:
    """The key ID an alias below ``prefix`` names; None when it cannot tell (an alias that is
    not below ``prefix``, is malformed, or holds a hashed key ID, which the key's
    :data:`KEY_ID_TAG` tag then tells)."""
    if not alias.startswith(prefix):
        return None
    encoded = alias[len(prefix) :]
    if not encoded or encoded.startswith(_HASHED):
        return None
    characters: list[str] = []
    position = 0
    while position < len(encoded):
        character = encoded[position]
        if character in _PLAIN:
            characters.append(character)
            position += 1
            continue
        code = encoded[position + 1 : position + 3]
        if character != "_" or len(code) != 2 or not all(c in string.hexdigits for c in code):
            return None
        characters.append(chr(int(code, 16)))
        position += 3
    return "".join(characters)
