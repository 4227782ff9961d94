"""Workload X509-SVIDs kept across agent restarts, so a restarted agent serves at once.

An agent restarted while its server is away would otherwise hold nothing to serve until the
server returns. So the agent keeps what its workload cache holds in ``<data_dir>/``
:data:`FILE_NAME`: the authorized entries (a workload's selectors are matched against them),
each X509-SVID's certificate chain with the entry revision it was minted for, and the bundles.
On start the still-valid SVIDs are served before the first sync, which then renews what needs
renewing.

**Private keys stay with the agent's key manager.** A workload SVID's private key is written
only sealed (AES-256-GCM) under a key derived from a key the agent's key manager holds
(:data:`SEAL_KEY_ID`), bound to its entry and certificate. With the ``disk`` key manager that
key survives restarts, so the SVIDs can be restored; with the ``memory`` key manager it does
not, so nothing can be restored (the file is then useless, never a leak) and the agent starts
empty, as before. (Generating each workload key inside the key manager instead would make the
disk key manager rewrite its whole file for every SVID minted.)

The file is replaced atomically with mode 0600 (:func:`~pyspire.agent.storage.write_atomically`),
off the event loop. Reading never crashes the agent: a missing, corrupt, foreign or unsealable
file is logged and treated as "nothing kept"; single SVIDs that do not check out (expired, a key
that does not open or does not match the certificate) are left out.
"""

from __future__ import annotations

__all__ = ["FILE_NAME", "SEAL_KEY_ID", "WorkloadSvidStore"]

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pyspire.agent.cache import CacheContents, IssuedSvid
from pyspire.agent.storage import read_bounded, remove_file, write_atomically
from pyspire.proto.bundles import decode_bundle, encode_bundle
from pyspire.proto.convert import entry_from_proto
from pyspire.proto.entries import encode_entry
from pyspire.proto.gen.codec.spire_api_types import decode_Entry
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError, NotFoundError, PyspireError
from pyspire_sdk.model import RegistrationEntry, X509Svid
from pyspire_sdk.plugins.key_manager import KeyManager, KeyType, PrivateKeyExport
from pyspire_sdk.spiffeid import SpiffeId

FILE_NAME = "workload-svids.json"
FILE_VERSION = 1
MAX_FILE_BYTES = 512 * 1024 * 1024
"""A file larger than this is refused as corrupt (about 2 KiB per SVID)."""

SEAL_KEY_ID = "workload-svid-seal"
"""The key manager key the sealing key of workload private keys is derived from."""

_HKDF_INFO = b"pyspire agent workload svid private keys v1"
_NONCE_BYTES = 12

_log = structlog.get_logger("pyspire.agent.workload_storage")


class SealingKeyManager(KeyManager, PrivateKeyExport, Protocol):
    """The agent's key manager: it makes keys and hands this process their private half."""


@dataclass(frozen=True)
class _Sealer:
    fingerprint: str
    aead: AESGCM


def _sealer(fingerprint: str, pkcs8: bytes) -> _Sealer:
    secret = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(pkcs8)
    return _Sealer(fingerprint, AESGCM(secret))


def _binding(entry_id: str, leaf_der: bytes) -> bytes:
    """What a sealed key is bound to: its entry and its certificate."""
    return entry_id.encode() + b"\0" + hashlib.sha256(leaf_der).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name!r} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise InvalidArgumentError(f"{name!r} is not valid base64") from None


def _field(document: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in document:
        raise InvalidArgumentError(f"{name!r} is missing")
    value = document[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgumentError(f"{name!r} must be of type {kind.__name__}")
    return value


def _encode(
    contents: CacheContents,
    agent_id: SpiffeId,
    sealer: _Sealer,
    sealed: Mapping[tuple[str, bytes], str],
) -> bytes:
    svids = []
    for item in contents.issued:
        svids.append(
            {
                "entry_id": item.entry_id,
                "entry_revision": item.entry_revision,
                "cert_chain": [_b64(der) for der in item.svid.cert_chain],
                "sealed_key": sealed[(item.entry_id, item.svid.cert_chain[0])],
            }
        )
    document: dict[str, Any] = {
        "version": FILE_VERSION,
        "agent_id": str(agent_id),
        "seal_key": {"key_id": SEAL_KEY_ID, "fingerprint": sealer.fingerprint},
        "bundle": _b64(encode_bundle(contents.bundle)) if contents.bundle else None,
        "federated_bundles": [
            _b64(encode_bundle(bundle)) for bundle in contents.federated_bundles.values()
        ],
        "entries": [_b64(encode_entry(entry)) for entry in contents.entries],
        "svids": svids,
    }
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def _seal_missing(
    sealer: _Sealer, issued: Sequence[IssuedSvid], sealed: dict[tuple[str, bytes], str]
) -> dict[tuple[str, bytes], str]:
    """The sealed key of every SVID in ``issued``, reusing those already in ``sealed``."""
    current: dict[tuple[str, bytes], str] = {}
    for item in issued:
        key = (item.entry_id, item.svid.cert_chain[0])
        found = sealed.get(key)
        if found is None:
            nonce = os.urandom(_NONCE_BYTES)
            private_key = item.svid.private_key or b""
            found = _b64(nonce + sealer.aead.encrypt(nonce, private_key, _binding(*key)))
        current[key] = found
    return current


@dataclass(frozen=True)
class _Document:
    seal_fingerprint: str
    contents: CacheContents
    svids: list[dict[str, Any]]


def _parse(data: bytes, agent_id: SpiffeId) -> _Document:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgumentError(f"not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise InvalidArgumentError("expected a JSON object")
    version = _field(document, "version", int)
    if version != FILE_VERSION:
        raise InvalidArgumentError(f"unknown version {version}, expected {FILE_VERSION}")
    trust_domain = agent_id.trust_domain
    stored_agent = _field(document, "agent_id", str)
    if stored_agent != str(agent_id):
        raise InvalidArgumentError(f"it belongs to agent {stored_agent!r}, not {str(agent_id)!r}")
    seal_key = _field(document, "seal_key", dict)
    if _field(seal_key, "key_id", str) != SEAL_KEY_ID:
        raise InvalidArgumentError(f"'seal_key.key_id' is not {SEAL_KEY_ID!r}")
    fingerprint = _field(seal_key, "fingerprint", str)
    bundle_value = document.get("bundle")
    bundle: Bundle | None = None
    if bundle_value is not None:
        bundle = decode_bundle(_unb64(bundle_value, "bundle"), "bundle")
        if bundle.trust_domain != trust_domain:
            raise InvalidArgumentError("'bundle' is of another trust domain")
    federated = {}
    for index, value in enumerate(_field(document, "federated_bundles", list)):
        name = f"federated_bundles[{index}]"
        found = decode_bundle(_unb64(value, name), name)
        federated[found.trust_domain] = found
    entries: list[RegistrationEntry] = []
    for index, value in enumerate(_field(document, "entries", list)):
        name = f"entries[{index}]"
        entries.append(entry_from_proto(decode_Entry(_unb64(value, name)), name))
    svids = _field(document, "svids", list)
    if not all(isinstance(item, dict) for item in svids):
        raise InvalidArgumentError("'svids' must be a list of objects")
    contents = CacheContents(
        entries=tuple(entries), issued=(), bundle=bundle, federated_bundles=federated
    )
    return _Document(fingerprint, contents, svids)


def _unseal(document: _Document, sealer: _Sealer, now: datetime) -> tuple[CacheContents, int]:
    """The contents with every SVID that checks out; also how many were left out."""
    entries = {entry.id: entry for entry in document.contents.entries}
    issued: list[IssuedSvid] = []
    dropped = 0
    for index, item in enumerate(document.svids):
        try:
            issued.append(_unseal_one(item, index, entries, sealer))
        except InvalidArgumentError as error:
            _log.warning("kept workload svid left out", reason=str(error))
            dropped += 1
    fresh = [item for item in issued if now < item.not_after]
    return replace(document.contents, issued=tuple(fresh)), dropped + len(issued) - len(fresh)


def _unseal_one(
    item: Mapping[str, Any],
    index: int,
    entries: Mapping[str, RegistrationEntry],
    sealer: _Sealer,
) -> IssuedSvid:
    name = f"svids[{index}]"
    entry_id = _field(item, "entry_id", str)
    entry = entries.get(entry_id)
    if entry is None:
        raise InvalidArgumentError(f"{name} is for entry {entry_id!r}, which is not kept")
    revision = _field(item, "entry_revision", int)
    chain = tuple(_unb64(der, f"{name}.cert_chain") for der in _field(item, "cert_chain", list))
    if not chain:
        raise InvalidArgumentError(f"{name}.cert_chain is empty")
    sealed = _unb64(_field(item, "sealed_key", str), f"{name}.sealed_key")
    try:
        private_key = sealer.aead.decrypt(
            sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _binding(entry_id, chain[0])
        )
    except InvalidTag:
        raise InvalidArgumentError(f"{name}.sealed_key does not open") from None
    try:
        leaf = x509.load_der_x509_certificate(chain[0])
    except ValueError:
        raise InvalidArgumentError(f"{name}.cert_chain holds an invalid certificate") from None
    svid = X509Svid(
        spiffe_id=entry.spiffe_id,
        cert_chain=chain,
        expires_at=leaf.not_valid_after_utc,
        private_key=private_key,
        hint=entry.hint,
    )
    try:
        checked = IssuedSvid.inspect(entry, svid)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"{name}: {error}") from None
    return replace(checked, entry_revision=revision)


class WorkloadSvidStore:
    """Keeps a :class:`~pyspire.agent.cache.CacheContents` in ``data_dir`` for the agent
    ``agent_id`` (what another agent kept is not served), private keys sealed under a key of
    ``key_manager``."""

    def __init__(self, data_dir: Path, agent_id: SpiffeId, key_manager: SealingKeyManager) -> None:
        self._path = Path(data_dir) / FILE_NAME
        self._agent_id = agent_id
        self._keys = key_manager
        self._sealer: _Sealer | None = None
        self._sealed: dict[tuple[str, bytes], str] = {}
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        """The file."""
        return self._path

    async def save(self, contents: CacheContents) -> None:
        """Replace what is kept with ``contents`` (nothing is kept when it has no entry).

        Raises :class:`~pyspire_sdk.errors.PyspireError` naming the file when it cannot be
        written (what was kept before is then untouched)."""
        async with self._lock:
            if not contents.entries:
                await asyncio.to_thread(remove_file, self._path)
                self._sealed = {}
                return
            sealer = await self._sealer_for_saving()
            self._sealed = await asyncio.to_thread(
                _seal_missing, sealer, contents.issued, self._sealed
            )
            data = await asyncio.to_thread(_encode, contents, self._agent_id, sealer, self._sealed)
            try:
                await asyncio.to_thread(write_atomically, self._path, data)
            except OSError as error:
                raise PyspireError(
                    f"cannot write workload svids {str(self._path)!r}: {error.strerror or error}"
                ) from None

    async def load(self, now: datetime) -> CacheContents | None:
        """What was kept, with only the SVIDs still valid at ``now``; None when nothing usable
        was kept (the reason is logged)."""
        log = _log.bind(path=str(self._path))
        try:
            data = await asyncio.to_thread(read_bounded, self._path, MAX_FILE_BYTES)
            if data is None:
                return None
            document = await asyncio.to_thread(_parse, data, self._agent_id)
        except OSError as error:
            log.warning("cannot read kept workload svids", error=str(error.strerror or error))
            return None
        except InvalidArgumentError as error:
            log.warning("ignoring kept workload svids: the file is unusable", reason=str(error))
            return None
        sealer = await self._existing_sealer()
        if sealer is None:
            log.info(
                "kept workload svids cannot be restored: the key that sealed their private "
                "keys is gone (a memory key manager keeps no key across restarts)"
            )
            return None
        if sealer.fingerprint != document.seal_fingerprint:
            log.warning("kept workload svids were sealed with another key; ignoring them")
            return None
        contents, dropped = await asyncio.to_thread(_unseal, document, sealer, now)
        log.info(
            "kept workload svids read",
            svids=len(contents.issued),
            left_out=dropped,
            entries=len(contents.entries),
        )
        return contents

    async def _existing_sealer(self) -> _Sealer | None:
        if self._sealer is None:
            try:
                public = await self._keys.get_public_key(SEAL_KEY_ID)
                pkcs8 = await self._keys.export_private_key(SEAL_KEY_ID)
            except NotFoundError:
                return None
            self._sealer = _sealer(public.fingerprint, pkcs8)
        return self._sealer

    async def _sealer_for_saving(self) -> _Sealer:
        sealer = await self._existing_sealer()
        if sealer is None:
            await self._keys.generate_key(SEAL_KEY_ID, KeyType.EC_P256)
            sealer = await self._existing_sealer()
            assert sealer is not None  # the key was just made
        return sealer
