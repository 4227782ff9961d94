"""The digest of the bundles an agent holds, offered beside SyncAuthorizedEntries' answer.

A pyspire server sends, in the initial metadata of its SyncAuthorizedEntries answer, the header
:data:`BUNDLES_DIGEST_HEADER`: the digest of the GetBundle answer it would give and of the
GetFederatedBundle answers for every trust domain the agent's entries federate with. A pyspire
agent that holds answers with the same digest skips those calls, so a sync with nothing changed
is one call instead of two or more. SPIRE's agents ignore metadata they do not know, so the wire
stays compatible; an agent talking to a server that sends no header fetches every time.

Both sides compute the digest with :func:`bundles_digest` over the encoded answers themselves
(never over a revision number), so an agent that holds what another server (or an older read)
gave sees a difference and fetches again: the rule corrects itself.
"""

from __future__ import annotations

__all__ = [
    "BUNDLES_DIGEST_HEADER",
    "answer_digest",
    "bundles_digest",
    "federated_trust_domains",
]

import hashlib
from collections.abc import Iterable

from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.spiffeid import TrustDomain

BUNDLES_DIGEST_HEADER = "pyspire-bundles-digest"
"""The initial-metadata key of the digest (lower case, as gRPC metadata keys are)."""

_ABSENT = b"\x00" * 32
"""What stands for a federated trust domain the server holds no bundle for."""


def answer_digest(encoded: bytes | None) -> bytes:
    """The digest of one encoded bundle answer (None: the server has no such bundle)."""
    return _ABSENT if encoded is None else hashlib.sha256(encoded).digest()


def bundles_digest(own: bytes, federated: Iterable[tuple[str, bytes]]) -> str:
    """The header value for our bundle's answer digest ``own`` and the ``(trust domain name,
    answer digest)`` pairs of the federated bundles (in any order: they are sorted here)."""
    hashed = hashlib.sha256(own)
    for name, digest in sorted(federated):
        hashed.update(name.encode())
        hashed.update(b"\x00")
        hashed.update(digest)
    return hashed.hexdigest()[:32]


def federated_trust_domains(
    entries: Iterable[RegistrationEntry], ours: TrustDomain
) -> tuple[TrustDomain, ...]:
    """The trust domains other than ``ours`` that ``entries`` federate with, sorted by name:
    the federated bundles an agent fetches at each sync, and the ones the digest covers."""
    names = {name for entry in entries for name in entry.federates_with if name != ours}
    return tuple(sorted(names, key=lambda name: name.name))
