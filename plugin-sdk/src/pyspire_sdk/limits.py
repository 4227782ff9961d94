"""Limits on what registry records may hold: lengths, counts and characters.

The server checks every entry, bundle and agent record that arrives at its APIs against these
limits and refuses one that breaks any of them with an error naming the field, so no datastore is
ever asked to store such a record. A datastore plugin may rely on them (to size columns and index
keys), and any reader may print a stored string as it is: none holds a control character that
could forge an output line or move a terminal's cursor.

The values stay compatible with what SPIRE accepts: SPIRE's own rules where it has them (entry
IDs, hints, agent versions, TTLs), and where it has none, room for the longest real-world value
(a Linux path, up to 4096 bytes, as a selector value; 256 selectors per entry where entries hold
a handful). Lengths of free text are counted in bytes of UTF-8, lengths of ASCII-only fields in
characters. CONTRIBUTING.md lists every limit; a test keeps that list equal to this module.
"""

from __future__ import annotations

__all__ = [
    "ENTRY_ID_CHARACTERS",
    "MAX_AGENT_VERSION_BYTES",
    "MAX_DNS_NAMES_PER_ENTRY",
    "MAX_DNS_NAME_LENGTH",
    "MAX_ENTRY_ID_LENGTH",
    "MAX_FEDERATES_WITH_PER_ENTRY",
    "MAX_HINT_BYTES",
    "MAX_JWT_KEY_ID_BYTES",
    "MAX_SELECTORS_PER_ENTRY",
    "MAX_SELECTOR_TYPE_BYTES",
    "MAX_SELECTOR_VALUE_BYTES",
    "MAX_SEQUENCE_NUMBER",
    "MAX_TTL_SECONDS",
    "first_control_character",
]

import string
import unicodedata

MAX_ENTRY_ID_LENGTH = 255
"""The longest entry ID a caller may choose (SPIRE's limit)."""

ENTRY_ID_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._-")
"""The characters of an entry ID a caller chooses: ASCII letters, digits, ``.``, ``_`` and
``-``, as in SPIRE (UUIDs and names like ``web-frontend.v2`` fit; ``/`` does not, so an ID is
never a path). ``.`` and ``..`` alone are refused too."""

MAX_SELECTORS_PER_ENTRY = 256
"""The most selectors one entry may require."""

MAX_SELECTOR_TYPE_BYTES = 128
"""The longest selector type (an attestor's plugin name)."""

MAX_SELECTOR_VALUE_BYTES = 4096
"""The longest selector value: room for a Linux path (``PATH_MAX``) after its prefix."""

MAX_DNS_NAMES_PER_ENTRY = 256
"""The most DNS names one entry may give its X509-SVIDs."""

MAX_DNS_NAME_LENGTH = 253
"""The longest DNS name (without a trailing dot) RFC 1035 allows in its text form."""

MAX_FEDERATES_WITH_PER_ENTRY = 256
"""The most trust domains one entry may federate with."""

MAX_HINT_BYTES = 1024
"""The longest entry hint (SPIRE's limit)."""

MAX_TTL_SECONDS = 2**31 - 1
"""The longest SVID TTL of an entry: TTLs travel as ``int32`` in ``spire.api.types.Entry``."""

MAX_AGENT_VERSION_BYTES = 255
"""The longest agent version an agent may report (SPIRE's limit)."""

MAX_JWT_KEY_ID_BYTES = 255
"""The longest key ID of a JWT authority in a bundle."""

MAX_SEQUENCE_NUMBER = 2**63 - 1
"""The largest bundle sequence number: the wire allows ``uint64``, a SQL ``BIGINT`` does not."""

_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def first_control_character(text: str) -> int | None:
    """The position of the first control character in ``text``, or None when it has none.

    Control characters are those that change how text around them is shown rather than being
    shown: C0 and C1 controls and DEL (``\\n``, ``\\x1b``...), format characters (bidirectional
    overrides, zero-width marks), line and paragraph separators, and lone surrogates.
    """
    if text.isprintable():
        return None
    for position, character in enumerate(text):
        if unicodedata.category(character) in _CONTROL_CATEGORIES:
            return position
    return None
