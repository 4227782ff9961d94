"""The agent's persisted state: what it needs to resume after a restart without attesting again.

One JSON document, ``<data_dir>/agent-data.json``, holds everything, so it can never be half
old and half new:

- ``svid``: the agent SVID chain, leaf first, as PEM;
- ``bundle``: the trust domain's bundle, as a SPIFFE bundle document, and ``bundle_details``:
  what that format cannot say (JWT authority expiry, tainted authorities), so the bundle read
  back equals the bundle written;
- ``key_id``: the key manager's ID of the SVID's private key (the key itself stays in the key
  manager);
- ``reattestable``: whether the agent renews by attesting again;
- ``trust_domain`` and ``version``, so state from another trust domain or format is not used.

The file is written atomically (temporary file, fsync, rename, directory fsync) with mode 0600,
off the event loop; a missing data directory is created with mode 0700. Reading never
crashes the agent: a missing file is "no state", and a corrupt, partial or foreign one is
reported (:class:`AgentStateError` from :meth:`AgentStateStore.read`, a warning from
:meth:`AgentStateStore.load`) and also treated as "no state", so the agent attests again.
"""

from __future__ import annotations

__all__ = [
    "STATE_FILE_NAME",
    "STATE_VERSION",
    "AgentState",
    "AgentStateError",
    "AgentStateStore",
    "read_bounded",
    "remove_file",
    "write_atomically",
]

import asyncio
import contextlib
import hashlib
import json
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.proto.convert import from_timestamp, to_timestamp
from pyspire.transport.tls import spiffe_id_of
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError, PyspireError
from pyspire_sdk.files import make_private_directory, write_private_file
from pyspire_sdk.model import X509Svid
from pyspire_sdk.plugins.key_manager import validate_key_id
from pyspire_sdk.plugins.node_attestor import is_agent_id
from pyspire_sdk.spiffeid import TrustDomain

STATE_FILE_NAME = "agent-data.json"
STATE_VERSION = 1
MAX_STATE_BYTES = 4 * 1024 * 1024
"""A state file larger than this is refused as corrupt (it is a few kilobytes)."""

_log = structlog.get_logger("pyspire.agent.storage")


class AgentStateError(PyspireError):
    """The state file exists but cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class AgentState:
    """What the agent keeps between runs. ``svid`` has no private key: ``key_id`` names it in
    the agent's key manager."""

    svid: X509Svid
    key_id: str
    reattestable: bool
    bundle: Bundle


def _chain_pem(chain: tuple[bytes, ...]) -> str:
    return "".join(
        x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()
        for der in chain
    )


def _encode(state: AgentState, trust_domain: TrustDomain) -> bytes:
    document: dict[str, Any] = {
        "version": STATE_VERSION,
        "trust_domain": trust_domain.name,
        "key_id": state.key_id,
        "reattestable": state.reattestable,
        "svid": _chain_pem(state.svid.cert_chain),
        "bundle": state.bundle.to_spiffe_document(),
        "bundle_details": _bundle_details(state.bundle),
    }
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def _bundle_details(bundle: Bundle) -> dict[str, Any]:
    return {
        "jwt_authorities": {
            authority.key_id: {
                "expires_at": to_timestamp(authority.expires_at),
                "tainted": authority.tainted,
            }
            for authority in bundle.jwt_authorities
        },
        "tainted_x509_authorities": [
            hashlib.sha256(authority.der).hexdigest()
            for authority in bundle.x509_authorities
            if authority.tainted
        ],
    }


def _apply_bundle_details(bundle: Bundle, details: dict[str, Any]) -> Bundle:
    jwt = _field(details, "jwt_authorities", dict)
    tainted = _field(details, "tainted_x509_authorities", list)
    jwt_authorities = []
    for authority in bundle.jwt_authorities:
        extra = jwt.get(authority.key_id)
        if not isinstance(extra, dict):
            raise InvalidArgumentError(f"'bundle_details' lacks JWT authority {authority.key_id!r}")
        expires_at = _field(extra, "expires_at", int)
        jwt_authorities.append(
            replace(
                authority,
                expires_at=from_timestamp(expires_at),
                tainted=_field(extra, "tainted", bool),
            )
        )
    x509_authorities = tuple(
        replace(authority, tainted=hashlib.sha256(authority.der).hexdigest() in tainted)
        for authority in bundle.x509_authorities
    )
    return replace(
        bundle, x509_authorities=x509_authorities, jwt_authorities=tuple(jwt_authorities)
    )


def _field(document: dict[str, Any], name: str, kind: type) -> Any:
    if name not in document:
        raise InvalidArgumentError(f"{name!r} is missing")
    value = document[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgumentError(f"{name!r} must be of type {kind.__name__}")
    return value


def _decode(data: bytes, trust_domain: TrustDomain) -> AgentState:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgumentError(f"not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise InvalidArgumentError("expected a JSON object")
    version = _field(document, "version", int)
    if version != STATE_VERSION:
        raise InvalidArgumentError(f"unknown version {version}, expected {STATE_VERSION}")
    stored_domain = _field(document, "trust_domain", str)
    if stored_domain != trust_domain.name:
        raise InvalidArgumentError(
            f"it belongs to trust domain {stored_domain!r}, not {trust_domain.name!r}"
        )
    key_id = validate_key_id(_field(document, "key_id", str))
    reattestable = _field(document, "reattestable", bool)
    svid_pem = _field(document, "svid", str)
    try:
        certificates = x509.load_pem_x509_certificates(svid_pem.encode())
    except ValueError:
        raise InvalidArgumentError("'svid' is not a PEM certificate chain") from None
    chain = tuple(cert.public_bytes(serialization.Encoding.DER) for cert in certificates)
    try:
        agent_id = spiffe_id_of(chain[0])
    except PermissionDeniedError as error:
        raise InvalidArgumentError(f"'svid' is not an X509-SVID: {error}") from None
    if not is_agent_id(agent_id, trust_domain):
        raise InvalidArgumentError(
            f"'svid' is for {str(agent_id)!r}, not an agent of {trust_domain.name!r}"
        )
    bundle_document = _field(document, "bundle", dict)
    try:
        bundle = Bundle.from_spiffe_json(trust_domain, bundle_document)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"'bundle' is not a SPIFFE bundle: {error}") from None
    if not bundle.x509_authorities:
        raise InvalidArgumentError("'bundle' has no X.509 authority")
    bundle = _apply_bundle_details(bundle, _field(document, "bundle_details", dict))
    svid = X509Svid(
        spiffe_id=agent_id,
        cert_chain=chain,
        expires_at=certificates[0].not_valid_after_utc,
    )
    return AgentState(svid=svid, key_id=key_id, reattestable=reattestable, bundle=bundle)


def _ensure_directory(directory: Path) -> None:
    make_private_directory(directory)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o022:
        _log.warning(
            "data directory is writable by other users",
            data_dir=str(directory),
            mode=oct(mode),
        )


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a temporary file with mode 0600 in the same directory,
    flushed and synced, renamed over it, then the directory synced; a missing directory is
    made with mode 0700. Readers see the old file or the new one, never a mix (blocking: call
    it in a thread)."""
    _ensure_directory(path.parent)
    write_private_file(path, data)


def read_bounded(path: Path, limit: int = MAX_STATE_BYTES) -> bytes | None:
    """The contents of ``path``, None when it does not exist; InvalidArgumentError when it is
    larger than ``limit`` bytes (blocking: call it in a thread)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        return None
    if len(data) > limit:
        raise InvalidArgumentError(f"larger than {limit} bytes")
    return data


def remove_file(path: Path) -> None:
    """Remove ``path`` if it exists (blocking: call it in a thread)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class AgentStateStore:
    """Reads and writes :class:`AgentState` in ``data_dir`` for ``trust_domain``."""

    def __init__(self, data_dir: Path, trust_domain: TrustDomain) -> None:
        self._path = Path(data_dir) / STATE_FILE_NAME
        self._trust_domain = trust_domain
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        """The state file."""
        return self._path

    async def read(self) -> AgentState | None:
        """The stored state; None when there is none. :class:`AgentStateError` naming the
        file and the reason when it exists but is unreadable, corrupt, partial or foreign."""
        try:
            data = await asyncio.to_thread(read_bounded, self._path)
            if data is None:
                return None
            return _decode(data, self._trust_domain)
        except OSError as error:
            raise AgentStateError(
                f"cannot read agent state {str(self._path)!r}: {error.strerror or error}"
            ) from None
        except InvalidArgumentError as error:
            raise AgentStateError(f"agent state {str(self._path)!r} is unusable: {error}") from None

    async def load(self) -> AgentState | None:
        """Like :meth:`read`, but an unusable state is logged and reported as None (the agent
        then attests again) instead of raised."""
        try:
            return await self.read()
        except AgentStateError as error:
            _log.warning(
                "ignoring stored agent state; the agent will attest again", reason=str(error)
            )
            return None

    async def save(self, state: AgentState) -> None:
        """Replace the stored state with ``state``, atomically; :class:`AgentStateError` when
        the file cannot be written (the previous state is then untouched)."""
        if state.bundle.trust_domain != self._trust_domain:
            raise InvalidArgumentError(
                f"bundle is of trust domain {state.bundle.trust_domain.name!r}, "
                f"expected {self._trust_domain.name!r}"
            )
        validate_key_id(state.key_id)
        data = _encode(state, self._trust_domain)
        async with self._lock:
            try:
                await asyncio.to_thread(write_atomically, self._path, data)
            except OSError as error:
                raise AgentStateError(
                    f"cannot write agent state {str(self._path)!r}: {error.strerror or error}"
                ) from None

    async def clear(self) -> None:
        """Remove the stored state (the agent must attest on its next start)."""
        async with self._lock:
            await asyncio.to_thread(remove_file, self._path)
