"""What a signing worker process does: check CSR signatures and sign with a CA key it was handed.

These functions run in worker processes (:mod:`pyspire.ca.worker_pool`), so they take and return
only bytes and strings (which cross a process boundary cheaply) and keep no state beyond a cache
of parsed CA keys: the same key arrives with every job, and parsing it costs as much as signing.
A server without worker processes signs in a worker thread with the same function
(:mod:`pyspire.ca.thread_signer`); the cache is then shared by threads, which only add to it or
clear it whole.
"""

from __future__ import annotations

__all__ = ["check_csrs", "ready", "sign_payloads"]

import os
from collections.abc import Sequence

from pyspire.ca.x509svid import checked_csr
from pyspire_sdk.errors import PyspireError
from pyspire_sdk.keys import PrivateKey, private_key_from_pkcs8, sign_digest
from pyspire_sdk.plugins.key_manager import HashAlgorithm

_MAX_CACHED_KEYS = 8
"""CA keys a worker keeps parsed: the active one, the prepared one, and a few retired ones."""
_keys: dict[bytes, PrivateKey] = {}


def ready() -> int:
    """The worker's process ID: answering proves the worker started and imported this module."""
    return os.getpid()


def check_csrs(csrs: Sequence[bytes]) -> list[bytes | str]:
    """The SubjectPublicKeyInfo DER of each CSR whose self-signature holds and whose key type
    is supported, or the message of the error :func:`checked_csr` raises for it."""
    checked: list[bytes | str] = []
    for csr in csrs:
        try:
            checked.append(checked_csr(csr).spki)
        except PyspireError as error:
            checked.append(str(error))
    return checked


def _key(pkcs8: bytes) -> PrivateKey:
    key = _keys.get(pkcs8)
    if key is None:
        if len(_keys) >= _MAX_CACHED_KEYS:
            _keys.clear()
        key = _keys[pkcs8] = private_key_from_pkcs8(pkcs8)
    return key


def sign_payloads(pkcs8: bytes, algorithm: str, payloads: Sequence[bytes]) -> list[bytes]:
    """Each payload hashed with ``algorithm`` and signed with the key ``pkcs8`` holds, as the
    key manager that exported it signs a digest (DER ECDSA, RSA PKCS#1 v1.5)."""
    key = _key(pkcs8)
    hash_algorithm = HashAlgorithm.parse(algorithm)
    return [
        sign_digest(key, hash_algorithm.digest(payload), hash_algorithm) for payload in payloads
    ]
