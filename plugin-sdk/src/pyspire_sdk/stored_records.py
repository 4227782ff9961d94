"""What datastores that keep records in storage share, whatever the database.

A datastore plugin decides how rows are laid out and queried; the rules for what a record may
be, how an update or a bundle append changes it, and how a value is put into a column and read
back out are the same for every backend, so they live here once:

- **Records before writing**: :func:`normalize_entry` (lists without duplicates, the entry's
  checks), :func:`updated_entry` (an update mask applied, the revision raised),
  :func:`check_mask`, :func:`new_entry_id`, the duplicate errors (and
  :func:`created_or_duplicate`), :func:`appended_bundle` and
  :func:`pruned_bundle` (the contract's bundle merge and prune rules),
  :func:`restorable_entries` (what a restore keeps as given).
- **Columns**: :func:`selectors_hash` (a digest of a selector *set*, for a unique index on an
  entry's identity), :func:`bundle_to_json` / :func:`bundle_from_json` (a bundle's authorities
  as one document), :func:`to_micros` / :func:`from_micros` (exact timestamps as integers),
  :func:`integer_page_token` / :func:`name_page_token` (page tokens checked before use).
- **Reading many records fast**: :class:`Decoder` builds values from stored columns without
  re-validating them; :func:`assemble_entries` and :func:`assemble_all_entries` build entries
  from an entry table and its list tables laid out as SPIRE's (see :data:`ENTRY_ROW`), and
  :func:`assemble_node_selectors` every node's selectors from a full read, and
  :func:`gc_paused` keeps the garbage collector out of a bulk build.
- **Rows of a relational schema** laid out as SPIRE's (an entry table with list tables, a node
  table, a relationship table): :func:`entry_columns`, :func:`node_columns`,
  :func:`node_from_row`, :func:`relationship_columns`, :func:`relationship_from_row`,
  :func:`change_event_from_row`, each time taken as the database stores it.
- **Batches against stored rows**: :func:`prepare_new_entries` and :func:`plan_entry_creates`,
  :func:`entry_update_candidates` and :func:`plan_entry_updates`, and :func:`plan_entry_deletes`
  decide, per item and in item order, what a batch create, update or delete does once the
  plugin has read the rows it needs; the plugin then writes the accepted items in bulk.
- **Connection strings' secrets**: :func:`scrub_secrets` keeps a password out of a message that
  quotes a driver's error.
- **Schema versions**: :class:`SchemaTooNewError`, raised for a database written by a newer
  release, which a plugin refuses rather than guesses at.
"""

from __future__ import annotations

__all__ = [
    "ENTRY_IDENTITY_FIELDS",
    "ENTRY_LIST_FIELDS",
    "ENTRY_ROW",
    "KIND_DNS",
    "KIND_FEDERATES",
    "KIND_SELECTOR",
    "NODE_ROW",
    "RELATIONSHIP_ROW",
    "Decoder",
    "EntryCreatePlan",
    "EntryIdentity",
    "EntryUpdatePlan",
    "SchemaTooNewError",
    "appended_bundle",
    "assemble_all_entries",
    "assemble_entries",
    "assemble_node_selectors",
    "bundle_from_json",
    "bundle_to_json",
    "change_event_from_row",
    "check_mask",
    "checked_bundle_update",
    "created_or_duplicate",
    "dedupe",
    "duplicate_entry_error",
    "entry_columns",
    "entry_identity",
    "entry_update_candidates",
    "from_micros",
    "gc_paused",
    "integer_page_token",
    "micros_or_none",
    "missing_bundles_error",
    "name_page_token",
    "new_entry_id",
    "node_columns",
    "node_from_row",
    "normalize_entry",
    "plan_entry_creates",
    "plan_entry_deletes",
    "plan_entry_updates",
    "prepare_new_entries",
    "pruned_bundle",
    "relationship_columns",
    "relationship_from_row",
    "restorable_entries",
    "scrub_secrets",
    "selectors_hash",
    "to_micros",
    "updated_entry",
]

import base64
import gc
import hashlib
import json
import secrets
import threading
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any, TypeVar
from urllib.parse import quote

from cryptography import x509

from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.clock import utc
from pyspire_sdk.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PluginError,
    PyspireError,
)
from pyspire_sdk.model import (
    ENTRY_FIELDS,
    AttestedNode,
    FederationProfile,
    FederationRelationship,
    RegistrationEntry,
)
from pyspire_sdk.plugins.datastore import ChangeEvent, ChangeKind, FailedPreconditionError
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SCHEME = "spiffe://"

ENTRY_IDENTITY_FIELDS: frozenset[str] = frozenset({"spiffe_id", "parent_id", "selectors"})
"""Entry fields that make up an entry's identity: no two entries share all three."""


class SchemaTooNewError(PluginError):
    """The database was written by a newer release whose schema this code does not know."""


def scrub_secrets(text: str, secrets: Iterable[str], mask: str = "***") -> str:
    """``text`` with every one of ``secrets`` (and its URL-encoded form) replaced by ``mask``:
    drivers' errors may quote the connection string or the password they were given."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, mask)
        quoted = quote(secret, safe="")
        if quoted != secret:
            text = text.replace(quoted, mask)
    return text


# -- records before writing ---------------------------------------------------------------------


def new_entry_id() -> str:
    """A random entry id (a version 4 UUID), for an entry created without one."""
    return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))


def dedupe(values: Iterable[T]) -> tuple[T, ...]:
    """The values in their order, each kept at its first occurrence."""
    return tuple(dict.fromkeys(values))


def normalize_entry(entry: RegistrationEntry) -> RegistrationEntry:
    """The entry as it will be stored (lists without duplicates), or InvalidArgumentError."""
    if not entry.selectors:
        raise InvalidArgumentError("entry selectors are empty: an entry needs at least one")
    if entry.x509_svid_ttl < 0:
        raise InvalidArgumentError(f"entry x509_svid_ttl {entry.x509_svid_ttl} is negative")
    if entry.jwt_svid_ttl < 0:
        raise InvalidArgumentError(f"entry jwt_svid_ttl {entry.jwt_svid_ttl} is negative")
    return replace(
        entry,
        expires_at=None if entry.expires_at is None else utc(entry.expires_at),
        selectors=dedupe(entry.selectors),
        dns_names=dedupe(entry.dns_names),
        federates_with=dedupe(entry.federates_with),
    )


def check_mask(mask: frozenset[str] | None, allowed: frozenset[str], what: str) -> frozenset[str]:
    """The fields to write: ``allowed`` for no mask, else the mask, which must be a subset."""
    if mask is None:
        return allowed
    unknown = sorted(mask - allowed)
    if unknown:
        raise InvalidArgumentError(
            f"mask names unknown {what} field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return mask


def updated_entry(
    current: RegistrationEntry, entry: RegistrationEntry, fields: frozenset[str]
) -> RegistrationEntry:
    """``current`` with the ``fields`` of ``entry`` and the next revision, normalized."""
    changes = {name: getattr(entry, name) for name in fields}
    return normalize_entry(replace(current, **changes, revision_number=current.revision_number + 1))


def duplicate_entry_error(entry: RegistrationEntry, other_id: str) -> AlreadyExistsError:
    """The error for an entry whose identity another stored entry (``other_id``) has."""
    return AlreadyExistsError(
        f"an entry for spiffe_id {entry.spiffe_id} under parent_id {entry.parent_id} "
        f"with the same selectors already exists (id {other_id!r})"
    )


def created_or_duplicate(
    entries: Sequence[RegistrationEntry],
    results: Sequence[tuple[RegistrationEntry, bool] | PyspireError],
) -> list[RegistrationEntry | PyspireError]:
    """``create_entries``' results from ``create_entries_if_not_exist``' for the same items:
    an entry that already existed is an :class:`~pyspire_sdk.errors.AlreadyExistsError`."""
    created: list[RegistrationEntry | PyspireError] = []
    for entry, result in zip(entries, results, strict=True):
        if isinstance(result, PyspireError):
            created.append(result)
        elif result[1]:
            created.append(duplicate_entry_error(entry, result[0].id))
        else:
            created.append(result[0])
    return created


def checked_bundle_update(trust_domain: TrustDomain, result: Bundle) -> Bundle:
    """``result`` of an ``update_bundle`` mutation, refused when it names another trust domain."""
    if result.trust_domain != trust_domain:
        raise InvalidArgumentError(
            f"bundle update for trust domain {trust_domain} returned a bundle for "
            f"{result.trust_domain}"
        )
    return result


def appended_bundle(current: Bundle, bundle: Bundle) -> Bundle | None:
    """``current`` with the authorities of ``bundle`` it lacks (X.509 compared by DER, JWT by key
    ID) added in order and its sequence number raised by one, or ``None`` when it lacks none."""
    known_der = {authority.der for authority in current.x509_authorities}
    known_kid = {authority.key_id for authority in current.jwt_authorities}
    new_x509: list[X509Authority] = []
    for x509_authority in bundle.x509_authorities:
        if x509_authority.der not in known_der:
            known_der.add(x509_authority.der)
            new_x509.append(x509_authority)
    new_jwt: list[JwtAuthority] = []
    for jwt_authority in bundle.jwt_authorities:
        if jwt_authority.key_id not in known_kid:
            known_kid.add(jwt_authority.key_id)
            new_jwt.append(jwt_authority)
    if not new_x509 and not new_jwt:
        return None
    return current.with_changes(
        x509_authorities=current.x509_authorities + tuple(new_x509),
        jwt_authorities=current.jwt_authorities + tuple(new_jwt),
    )


def _certificate_not_after(der: bytes) -> datetime | None:
    try:
        return x509.load_der_x509_certificate(der).not_valid_after_utc
    except ValueError:
        return None


def pruned_bundle(current: Bundle, expires_before: datetime) -> Bundle | None:
    """``current`` without the authorities that expire before ``expires_before`` and with its
    sequence number raised by one, or ``None`` when none expires. Raises
    ``FailedPreconditionError`` when every authority would go: pruning never empties a bundle."""
    keep_x509 = tuple(
        authority
        for authority in current.x509_authorities
        if (not_after := _certificate_not_after(authority.der)) is None
        or not_after >= expires_before
    )
    keep_jwt = tuple(
        authority
        for authority in current.jwt_authorities
        if authority.expires_at is None or authority.expires_at >= expires_before
    )
    if keep_x509 == current.x509_authorities and keep_jwt == current.jwt_authorities:
        return None
    if not keep_x509 and not keep_jwt:
        raise FailedPreconditionError(
            f"pruning the bundle of trust domain {current.trust_domain} would remove every "
            "authority; refusing to leave it empty"
        )
    return current.with_changes(x509_authorities=keep_x509, jwt_authorities=keep_jwt)


# -- columns ------------------------------------------------------------------------------------


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken to be UTC."""
    return (utc(moment) - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """The aware UTC datetime of a :func:`to_micros` value, exactly."""
    return _EPOCH + timedelta(microseconds=value)


def selectors_hash(selectors: Iterable[Selector]) -> bytes:
    """A digest of a selector *set*: equal sets (in any order) give equal digests."""
    canonical = json.dumps(sorted({(s.type, s.value) for s in selectors}), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def bundle_to_json(bundle: Bundle) -> bytes:
    """The authorities of a bundle as a JSON document (binary values in base64)."""
    document = {
        "x509": [
            {"der": base64.b64encode(a.der).decode(), "tainted": a.tainted}
            for a in bundle.x509_authorities
        ],
        "jwt": [
            {
                "kid": a.key_id,
                "key": base64.b64encode(a.public_key).decode(),
                "expires_at": None if a.expires_at is None else to_micros(a.expires_at),
                "tainted": a.tainted,
            }
            for a in bundle.jwt_authorities
        ],
    }
    return json.dumps(document, separators=(",", ":")).encode()


def bundle_from_json(
    trust_domain: str, sequence_number: int, refresh_hint: int, data: bytes
) -> Bundle:
    """The bundle stored as its trust domain, sequence number, refresh hint and
    :func:`bundle_to_json` document."""
    document: dict[str, Any] = json.loads(data)
    return Bundle(
        trust_domain=TrustDomain(trust_domain),
        x509_authorities=tuple(
            X509Authority(der=base64.b64decode(item["der"]), tainted=bool(item["tainted"]))
            for item in document["x509"]
        ),
        jwt_authorities=tuple(
            JwtAuthority(
                key_id=str(item["kid"]),
                public_key=base64.b64decode(item["key"]),
                expires_at=None if item["expires_at"] is None else from_micros(item["expires_at"]),
                tainted=bool(item["tainted"]),
            )
            for item in document["jwt"]
        ),
        sequence_number=sequence_number,
        refresh_hint=refresh_hint,
    )


def _bad_token(token: str) -> InvalidArgumentError:
    shown = repr(token) if len(token) <= 64 else f"{token[:64]!r}..."
    return InvalidArgumentError(f"page token {shown} is not one this datastore gave")


def integer_page_token(token: str) -> int:
    """The row key a page token over rows ordered by a 64-bit integer key stands for (0 for the
    first page); ``InvalidArgumentError`` for anything but ASCII digits below ``2**63``."""
    if not token:
        return 0
    if not (len(token) <= 19 and token.isascii() and token.isdigit() and int(token) < 2**63):
        raise _bad_token(token)
    return int(token)


def name_page_token(token: str) -> str:
    """The trust domain name a page token over rows ordered by that name stands for (``""`` for
    the first page); ``InvalidArgumentError`` for a token that is not a trust domain name."""
    if token:
        try:
            TrustDomain(token)
        except InvalidArgumentError:
            raise _bad_token(token) from None
    return token


# -- reading many records fast ------------------------------------------------------------------


class Decoder:
    """Builds SDK values from stored columns, reusing objects for repeated values.

    Values written to a datastore were validated when they were written (a ``SpiffeId`` or
    ``Selector`` cannot exist unless valid), so reading them back skips validation: the decoder
    builds identical objects without re-running the SPIFFE ID rules, and shares equal selectors
    and parent IDs between records. That is what keeps reading 100,000 entries in one go fast.
    One decoder serves one read; its caches die with it.
    """

    __slots__ = ("_ids", "_selectors", "_trust_domains")

    def __init__(self) -> None:
        self._ids: dict[str, SpiffeId] = {}
        self._selectors: dict[tuple[str, str], Selector] = {}
        self._trust_domains: dict[str, TrustDomain] = {}

    def trust_domain(self, name: str) -> TrustDomain:
        """The stored trust domain name as a value (not re-validated)."""
        found = self._trust_domains.get(name)
        if found is None:
            found = object.__new__(TrustDomain)
            object.__setattr__(found, "name", name)
            self._trust_domains[name] = found
        return found

    def spiffe_id(self, text: str) -> SpiffeId:
        """The stored ``spiffe://td/path`` string as a value (not re-validated)."""
        found = self._ids.get(text)
        if found is not None:
            return found
        rest = text[len(_SCHEME) :]
        slash = rest.find("/")
        name, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        found = object.__new__(SpiffeId)
        object.__setattr__(found, "trust_domain", self.trust_domain(name))
        object.__setattr__(found, "path", path)
        return found

    def shared_spiffe_id(self, text: str) -> SpiffeId:
        """Like :meth:`spiffe_id`, remembering the value for later rows (parent IDs repeat)."""
        found = self._ids.get(text)
        if found is None:
            found = self.spiffe_id(text)
            self._ids[text] = found
        return found

    def selector(self, kind: str, value: str) -> Selector:
        """The stored selector as a value, shared with equal selectors of other rows."""
        key = (kind, value)
        found = self._selectors.get(key)
        if found is None:
            found = object.__new__(Selector)
            object.__setattr__(found, "type", kind)
            object.__setattr__(found, "value", value)
            self._selectors[key] = found
        return found


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_resume = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a large batch of acyclic records.

    Building 100,000 entries allocates over a million objects, which would trigger hundreds of
    collections that find nothing to free (records hold no cycles) and double the build time.
    Reference counting still frees everything as usual. Pauses nest across threads: the
    collector resumes when the last pause ends, and only if it was running before the first.
    """
    global _gc_pauses, _gc_resume
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_resume:
                gc.enable()


ENTRY_LIST_FIELDS: tuple[str, ...] = ("selectors", "dns_names", "federates_with")
"""Entry fields stored as rows of their own (one per item), not as columns of the entry row."""

ENTRY_ROW: tuple[str, ...] = (
    "pk",
    "entry_id",
    *(name for name in ENTRY_FIELDS if name != "id" and name not in ENTRY_LIST_FIELDS),
)
"""The columns of an entry row, in the order :func:`assemble_entries` and
:func:`assemble_all_entries` read them. ``pk`` is the integer key that list rows refer to."""

KIND_SELECTOR = 0
"""The ``kind`` of a selector row given to :func:`assemble_entries`: ``(pk, 0, position, type,
value)``."""
KIND_DNS = 1
"""The ``kind`` of a DNS name row: ``(pk, 1, position, name, None)``."""
KIND_FEDERATES = 2
"""The ``kind`` of a federated trust domain row: ``(pk, 2, position, trust domain, None)``."""

_Row = Sequence[Any]


def _stored_time(value: Any) -> Any:
    return value


def assemble_entries(
    rows: Iterable[_Row],
    children: Iterable[_Row],
    timestamp: Callable[[Any], datetime] = _stored_time,
) -> list[RegistrationEntry]:
    """Entries from rows laid out as :data:`ENTRY_ROW` and list rows ``(pk, kind, position, a,
    b)`` in position order within each entry and kind (rows of different entries or kinds may
    come in any order, so one query per list table will do); ``timestamp`` turns a stored time
    into a ``datetime`` (the identity for a database that stores ``datetime`` values)."""
    decoder = Decoder()
    selectors: dict[int, list[Selector]] = {}
    dns_names: dict[int, list[str]] = {}
    federates: dict[int, list[TrustDomain]] = {}
    for pk, kind, _position, first, second in children:
        if kind == KIND_SELECTOR:
            selectors.setdefault(pk, []).append(decoder.selector(first, second))
        elif kind == KIND_DNS:
            dns_names.setdefault(pk, []).append(first)
        else:
            federates.setdefault(pk, []).append(decoder.trust_domain(first))
    empty: tuple[Any, ...] = ()
    result: list[RegistrationEntry] = []
    for row in rows:
        pk = row[0]
        dns = dns_names.get(pk)
        feds = federates.get(pk)
        expires_at = row[8]
        result.append(
            RegistrationEntry(
                decoder.spiffe_id(row[2]),
                decoder.shared_spiffe_id(row[3]),
                tuple(selectors.get(pk, empty)),
                row[1],
                row[4],
                row[5],
                tuple(feds) if feds else empty,
                bool(row[6]),
                bool(row[7]),
                None if expires_at is None else timestamp(expires_at),
                tuple(dns) if dns else empty,
                row[9],
                bool(row[10]),
                row[11],
                timestamp(row[12]),
            )
        )
    return result


def assemble_all_entries(
    rows: Sequence[_Row],
    selector_rows: Sequence[_Row],
    dns_rows: Sequence[_Row],
    federates_rows: Sequence[_Row],
    timestamp: Callable[[Any], datetime] = _stored_time,
) -> list[RegistrationEntry]:
    """Every entry from four full-table reads: entry rows laid out as :data:`ENTRY_ROW` ordered
    by ``pk``, selector rows ``(pk, type, value)`` ordered by ``(pk, position)``, DNS name rows
    ``(pk, name)`` and federated trust domain rows ``(pk, trust domain)``, each in position
    order. ``timestamp`` as in :func:`assemble_entries`.

    Each entry's selectors are one slice of the selector list, found by bisection; tuned for
    100,000 entries (run it off the event loop).
    """
    with gc_paused():
        decoder = Decoder()
        make_selector = decoder.selector
        selector_pks = [row[0] for row in selector_rows]
        all_selectors = [make_selector(row[1], row[2]) for row in selector_rows]
        dns_names: dict[int, list[str]] = {}
        for pk, name in dns_rows:
            dns_names.setdefault(pk, []).append(name)
        federates: dict[int, list[TrustDomain]] = {}
        for pk, name in federates_rows:
            federates.setdefault(pk, []).append(decoder.trust_domain(name))
        empty: tuple[Any, ...] = ()
        spiffe_id = decoder.spiffe_id
        parent_id = decoder.shared_spiffe_id
        result: list[RegistrationEntry] = []
        append = result.append
        start = 0
        for row in rows:
            pk = row[0]
            end = bisect_right(selector_pks, pk, start)
            dns = dns_names.get(pk) if dns_names else None
            feds = federates.get(pk) if federates else None
            expires_at = row[8]
            append(
                RegistrationEntry(
                    spiffe_id(row[2]),
                    parent_id(row[3]),
                    tuple(all_selectors[start:end]),
                    row[1],
                    row[4],
                    row[5],
                    tuple(feds) if feds else empty,
                    bool(row[6]),
                    bool(row[7]),
                    None if expires_at is None else timestamp(expires_at),
                    tuple(dns) if dns else empty,
                    row[9],
                    bool(row[10]),
                    row[11],
                    timestamp(row[12]),
                )
            )
            start = end
        return result


def assemble_node_selectors(rows: Iterable[_Row]) -> dict[SpiffeId, tuple[Selector, ...]]:
    """Every node's selectors from rows ``(spiffe_id, type, value)`` ordered by SPIFFE ID and
    position (a full read of a node selector table). Tuned for 50,000 agents: each ID is
    decoded once, equal selectors are shared, and the collector is paused (run it off the event
    loop)."""
    with gc_paused():
        decoder = Decoder()
        selector = decoder.selector
        spiffe_id = decoder.spiffe_id
        return {
            spiffe_id(key): tuple([selector(row[1], row[2]) for row in group])
            for key, group in groupby(rows, itemgetter(0))
        }


# -- rows of a relational schema ----------------------------------------------------------------

NODE_ROW = (
    "pk",
    "spiffe_id",
    "attestation_type",
    "serial_number",
    "expires_at",
    "new_serial_number",
    "new_expires_at",
    "banned",
    "can_reattest",
    "agent_version",
)
"""The columns of an attested node row, in the order :func:`node_from_row` reads them."""

EntryIdentity = tuple[str, str, bytes]
"""What no two entries share: SPIFFE ID, parent ID and :func:`selectors_hash` of the selectors
(the columns of the unique index on an entry's identity)."""


def micros_or_none(moment: datetime | None) -> int | None:
    """:func:`to_micros`, passing ``None`` through."""
    return None if moment is None else to_micros(moment)


def _optional_time(value: Any, timestamp: Callable[[Any], datetime]) -> datetime | None:
    return None if value is None else timestamp(value)


def entry_identity(entry: RegistrationEntry) -> EntryIdentity:
    """The entry's identity as its unique index stores it."""
    return str(entry.spiffe_id), str(entry.parent_id), selectors_hash(entry.selectors)


def entry_columns(
    entry: RegistrationEntry, moment: Callable[[datetime], Any] = _stored_time
) -> tuple[Any, ...]:
    """The stored columns of ``entry`` after its id: spiffe_id, parent_id, selectors_hash,
    x509_svid_ttl, jwt_svid_ttl, admin, downstream, expires_at, revision_number, store_svid,
    hint; ``moment`` turns a time into its column value (the identity for a database that
    stores ``datetime`` values)."""
    return (
        str(entry.spiffe_id),
        str(entry.parent_id),
        selectors_hash(entry.selectors),
        entry.x509_svid_ttl,
        entry.jwt_svid_ttl,
        entry.admin,
        entry.downstream,
        None if entry.expires_at is None else moment(entry.expires_at),
        entry.revision_number,
        entry.store_svid,
        entry.hint,
    )


def node_columns(
    node: AttestedNode, moment: Callable[[datetime], Any] = _stored_time
) -> tuple[Any, ...]:
    """The node's mutable columns in :data:`NODE_ROW` order (attestation_type to
    agent_version); ``moment`` as in :func:`entry_columns`."""
    return (
        node.attestation_type,
        node.x509_svid_serial_number,
        None if node.x509_svid_expires_at is None else moment(node.x509_svid_expires_at),
        node.new_x509_svid_serial_number,
        None if node.new_x509_svid_expires_at is None else moment(node.new_x509_svid_expires_at),
        node.banned,
        node.can_reattest,
        node.agent_version,
    )


def node_from_row(
    decoder: Decoder,
    row: _Row,
    selectors: tuple[Selector, ...],
    timestamp: Callable[[Any], datetime] = _stored_time,
) -> AttestedNode:
    """The node of a row laid out as :data:`NODE_ROW`; ``timestamp`` as in
    :func:`assemble_entries`."""
    return AttestedNode(
        spiffe_id=decoder.spiffe_id(row[1]),
        attestation_type=row[2],
        x509_svid_serial_number=row[3],
        x509_svid_expires_at=_optional_time(row[4], timestamp),
        selectors=selectors,
        banned=bool(row[7]),
        can_reattest=bool(row[8]),
        agent_version=row[9],
        new_x509_svid_serial_number=row[5],
        new_x509_svid_expires_at=_optional_time(row[6], timestamp),
    )


def change_event_from_row(
    row: _Row, timestamp: Callable[[Any], datetime] = _stored_time
) -> ChangeEvent:
    """The change event of a row ``(event_id, kind, object_id, created_at)``; ``timestamp``
    turns the stored time into a datetime, as in :func:`node_from_row`."""
    return ChangeEvent(
        event_id=row[0], kind=ChangeKind(row[1]), object_id=row[2], created_at=timestamp(row[3])
    )


RELATIONSHIP_ROW = ("trust_domain", "bundle_endpoint_url", "profile", "endpoint_spiffe_id")
"""The columns of a federation relationship row, in the order :func:`relationship_columns`
writes them and :func:`relationship_from_row` reads them."""


def relationship_columns(relationship: FederationRelationship) -> tuple[str, str, str, str | None]:
    """The relationship's columns in :data:`RELATIONSHIP_ROW` order."""
    endpoint = relationship.endpoint_spiffe_id
    return (
        relationship.trust_domain.name,
        relationship.bundle_endpoint_url,
        relationship.profile.value,
        None if endpoint is None else str(endpoint),
    )


def relationship_from_row(decoder: Decoder, row: _Row) -> FederationRelationship:
    """The relationship of a row in :data:`RELATIONSHIP_ROW` order."""
    return FederationRelationship(
        trust_domain=decoder.trust_domain(row[0]),
        bundle_endpoint_url=row[1],
        profile=FederationProfile(row[2]),
        endpoint_spiffe_id=None if row[3] is None else decoder.spiffe_id(row[3]),
    )


# -- batches against stored rows ----------------------------------------------------------------


def missing_bundles_error(
    entry: RegistrationEntry, bundled: set[str]
) -> InvalidArgumentError | None:
    """The error for an entry that federates with trust domains outside ``bundled`` (the names
    that have a bundle), or ``None``."""
    missing = sorted({td.name for td in entry.federates_with} - bundled)
    if not missing:
        return None
    return InvalidArgumentError(
        f"entry federates_with names trust domain(s) without a bundle: {', '.join(missing)}"
    )


def plan_entry_deletes(
    entry_ids: Sequence[str], found: dict[str, tuple[int, RegistrationEntry]]
) -> tuple[list[RegistrationEntry | PyspireError], list[tuple[int, str]]]:
    """What a batch delete does, per item in order: its result (the entry as it was, or
    :class:`~pyspire_sdk.errors.NotFoundError`, also for an id given twice), and the (primary
    key, id) of every row to delete. ``found`` holds the stored entries by id, with their
    primary keys, and is emptied of those deleted."""
    results: list[RegistrationEntry | PyspireError] = []
    deleted: list[tuple[int, str]] = []
    for entry_id in entry_ids:
        hit = found.pop(entry_id, None)
        if hit is None:
            results.append(NotFoundError(f"entry id {entry_id!r} not found"))
            continue
        deleted.append((hit[0], entry_id))
        results.append(hit[1])
    return results, deleted


def restorable_entries(entries: Sequence[RegistrationEntry]) -> list[RegistrationEntry]:
    """The entries a restore stores, normalized, exactly as given otherwise (see
    :class:`~pyspire_sdk.plugins.datastore.CopyableDataStore`).

    Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` for an entry without the id or
    the creation time it must keep, and the entry's own error for one that is not valid.
    """
    prepared: list[RegistrationEntry] = []
    for entry in entries:
        if not entry.id or entry.created_at is None:
            raise InvalidArgumentError(f"entry {entry.id!r} to restore needs its id and created_at")
        prepared.append(normalize_entry(entry))
    return prepared


def prepare_new_entries(
    entries: Sequence[RegistrationEntry], now: datetime
) -> list[RegistrationEntry | PyspireError]:
    """Per item, the entry as a create would store it (normalized, its id or a new one,
    ``created_at`` ``now``, revision 0) or why it cannot be stored."""
    prepared: list[RegistrationEntry | PyspireError] = []
    stamp = utc(now)
    for entry in entries:
        try:
            normalized = normalize_entry(entry)
        except PyspireError as error:
            prepared.append(error)
            continue
        prepared.append(
            replace(normalized, id=entry.id or new_entry_id(), created_at=stamp, revision_number=0)
        )
    return prepared


@dataclass(slots=True)
class EntryCreatePlan:
    """What a batch create does: per item its result, and the new entries to write, in order."""

    results: list[tuple[RegistrationEntry, bool] | PyspireError]
    accepted: list[RegistrationEntry] = field(default_factory=list)


def plan_entry_creates(
    prepared: Sequence[RegistrationEntry | PyspireError],
    taken_ids: set[str],
    stored: Mapping[EntryIdentity, RegistrationEntry],
    bundled: set[str],
) -> EntryCreatePlan:
    """Decide a batch create from :func:`prepare_new_entries`' items and what the database
    holds: ``taken_ids`` (stored ids among the given ones), ``stored`` (stored entries by the
    identities of the items) and ``bundled`` (trust domains the items federate with that have a
    bundle). An item whose identity is stored, or is an earlier item's, finds that entry
    (``(entry, True)``); a taken id is ``AlreadyExistsError``; a missing bundle
    ``InvalidArgumentError``; the rest are new (``(entry, False)``) and listed in ``accepted``.
    """
    taken = set(taken_ids)
    batch: dict[EntryIdentity, RegistrationEntry] = {}
    plan = EntryCreatePlan(results=[])
    for item in prepared:
        if isinstance(item, PyspireError):
            plan.results.append(item)
            continue
        key = entry_identity(item)
        found = stored.get(key) or batch.get(key)
        if found is not None:
            plan.results.append((found, True))
        elif item.id in taken:
            plan.results.append(AlreadyExistsError(f"entry id {item.id!r} already exists"))
        elif (missing := missing_bundles_error(item, bundled)) is not None:
            plan.results.append(missing)
        else:
            taken.add(item.id)
            batch[key] = item
            plan.accepted.append(item)
            plan.results.append((item, False))
    return plan


def entry_update_candidates(
    entries: Sequence[RegistrationEntry],
    fields: frozenset[str],
    current: Mapping[str, tuple[Any, RegistrationEntry]],
) -> list[RegistrationEntry]:
    """The entries a batch update could write (each item applied to its stored entry alone),
    so a plugin can read which stored entries hold their identities before planning."""
    candidates: list[RegistrationEntry] = []
    for entry in entries:
        hit = current.get(entry.id)
        if hit is None:
            continue
        try:
            candidates.append(updated_entry(hit[1], entry, fields))
        except PyspireError:
            continue
    return candidates


@dataclass(slots=True)
class EntryUpdatePlan:
    """What a batch update does: per item its result, the rows to write (their key to the
    entry as it will be stored, the last update of a row winning) and the ids of the change
    events, one per successful item in item order."""

    results: list[RegistrationEntry | PyspireError]
    changed: dict[Any, RegistrationEntry] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)


def plan_entry_updates(
    entries: Sequence[RegistrationEntry],
    fields: frozenset[str],
    current: Mapping[str, tuple[Any, RegistrationEntry]],
    identities: Mapping[EntryIdentity, tuple[Any, str]],
    bundled: set[str],
) -> EntryUpdatePlan:
    """Decide a batch update, items applied in order on top of each other.

    ``current`` maps each named id to its row key and stored entry (rows locked by the
    caller); ``identities`` the stored identities that matter (those of the candidates and of
    the current entries) to their row key and id, read when ``fields`` touch the identity;
    ``bundled`` the trust domains with a bundle, read when ``fields`` name ``federates_with``.
    """
    rows = dict(current)
    owners = dict(identities)
    for pk, entry in current.values():
        owners.setdefault(entry_identity(entry), (pk, entry.id))
    touches_identity = bool(fields & ENTRY_IDENTITY_FIELDS)
    plan = EntryUpdatePlan(results=[])
    for entry in entries:
        hit = rows.get(entry.id)
        if hit is None:
            plan.results.append(NotFoundError(f"entry id {entry.id!r} not found"))
            continue
        pk, before = hit
        try:
            updated = updated_entry(before, entry, fields)
        except PyspireError as error:
            plan.results.append(error)
            continue
        key = entry_identity(updated)
        other = owners.get(key) if touches_identity else None
        if other is not None and other[0] != pk:
            plan.results.append(duplicate_entry_error(updated, other[1]))
            continue
        if "federates_with" in fields:
            missing = missing_bundles_error(updated, bundled)
            if missing is not None:
                plan.results.append(missing)
                continue
        if touches_identity:
            old_key = entry_identity(before)
            if owners.get(old_key, (None, ""))[0] == pk:
                del owners[old_key]
            owners[key] = (pk, updated.id)
        rows[entry.id] = (pk, updated)
        plan.changed[pk] = updated
        plan.events.append(updated.id)
        plan.results.append(updated)
    return plan
