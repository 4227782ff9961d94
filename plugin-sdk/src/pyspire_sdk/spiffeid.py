"""SPIFFE IDs and trust domains, strictly by the SPIFFE-ID standard.

Parsing rejects everything the standard forbids and the error says which rule broke: the scheme
(``spiffe``, lower case), the trust domain (present, at most 255 bytes, only ``a-z 0-9 . - _``,
no port, no user info, no percent-encoding), the path (segments of ``a-z A-Z 0-9 . - _`` only,
no empty segment, no trailing ``/``, no ``.`` or ``..`` segment, no percent-encoding), no query,
no fragment, and a total of at most 2048 bytes.

Upper-case schemes and trust domains are rejected rather than folded, so that an ID is never
silently rewritten and output is always canonical: what :func:`str` returns is exactly what was
accepted. Equality and hashing are by value.

Parsing a valid ID is one regular-expression match plus a few substring checks; the slower
character-by-character diagnosis runs only for input that is already known to be invalid.
"""

from __future__ import annotations

__all__ = [
    "MAX_SPIFFE_ID_BYTES",
    "MAX_TRUST_DOMAIN_BYTES",
    "SCHEME_PREFIX",
    "SERVER_ID_PATH",
    "SpiffeId",
    "TrustDomain",
    "parse_many",
    "server_id",
]

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pyspire_sdk.errors import InvalidSpiffeIdError

SCHEME_PREFIX = "spiffe://"
"""The only accepted prefix of a SPIFFE ID: lower-case scheme and the authority marker."""

MAX_SPIFFE_ID_BYTES = 2048
"""The longest SPIFFE ID (in UTF-8 bytes) the standard requires support for; longer is rejected."""

MAX_TRUST_DOMAIN_BYTES = 255
"""The longest trust domain name (in bytes) the standard allows."""

_TRUST_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")

_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]+")
_PATH_RE = re.compile(r"(?:/[a-zA-Z0-9._-]+)*")
_ID_RE = re.compile(r"spiffe://([a-z0-9._-]+)((?:/[a-zA-Z0-9._-]+)*)")


def _has_dot_segment(path: str) -> bool:
    """True when a path made of valid characters has a ``.`` or ``..`` segment."""
    if "/." not in path:
        return False
    return any(segment in (".", "..") for segment in path.split("/"))


def _trust_domain_problem(name: str) -> str:
    """Explain why ``name`` is not a valid trust domain name (it is known to be invalid)."""
    if not name:
        return "trust domain is missing"
    if "@" in name:
        return "trust domain must not include user info ('@')"
    if name.startswith("["):
        return "trust domain must not be an IPv6 address"
    if ":" in name:
        return "trust domain must not include a port (':')"
    if "%" in name:
        return "trust domain must not be percent-encoded ('%')"
    for char in name:
        if char in _TRUST_DOMAIN_CHARS:
            continue
        if "A" <= char <= "Z":
            return "trust domain must be lower case: only a-z, 0-9, '.', '-' and '_' are allowed"
        return (
            f"trust domain has a forbidden character {char!r}: only a-z, 0-9, '.', '-' and '_' "
            "are allowed"
        )
    size = len(name.encode())
    if size > MAX_TRUST_DOMAIN_BYTES:
        return f"trust domain is {size} bytes, longer than the {MAX_TRUST_DOMAIN_BYTES} allowed"
    return "trust domain is invalid"


def _check_trust_domain_name(name: object) -> None:
    if not isinstance(name, str):
        raise InvalidSpiffeIdError(f"trust domain must be a string, found {type(name).__name__}")
    if len(name) <= MAX_TRUST_DOMAIN_BYTES and _TRUST_DOMAIN_RE.fullmatch(name) is not None:
        return
    if "://" in name:
        raise InvalidSpiffeIdError(
            "trust domain name must not include a scheme: give the bare name or use "
            "TrustDomain.parse"
        )
    raise InvalidSpiffeIdError(_trust_domain_problem(name))


def _path_problem(path: str) -> str:
    """Explain why ``path`` is not a valid SPIFFE ID path (it is known to be invalid)."""
    if not path.startswith("/"):
        return "path must start with '/'"
    segments = path[1:].split("/")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "":
            if index == last:
                return "path must not end with '/' (the trust domain's own ID has no path)"
            return "path has an empty segment ('//')"
        if segment in (".", ".."):
            return f"path must not have a {segment!r} segment"
        for char in segment:
            if char in _PATH_CHARS:
                continue
            if char == "%":
                return "path must not be percent-encoded ('%')"
            return (
                f"path has a forbidden character {char!r}: only letters, digits, '.', '-' and "
                "'_' are allowed in a segment"
            )
    return "path is invalid"


def _check_path(path: object) -> None:
    """Check a path that is empty or starts with '/' against the standard's segment rules."""
    if not isinstance(path, str):
        raise InvalidSpiffeIdError(f"path must be a string, found {type(path).__name__}")
    if not path:
        return
    if _PATH_RE.fullmatch(path) is None:
        raise InvalidSpiffeIdError(_path_problem(path))
    if _has_dot_segment(path):
        raise InvalidSpiffeIdError(_path_problem(path))


def _check_size(trust_domain: str, path: str) -> None:
    size = len(SCHEME_PREFIX) + len(trust_domain) + len(path)
    if size > MAX_SPIFFE_ID_BYTES:
        raise InvalidSpiffeIdError(
            f"SPIFFE ID is {size} bytes, longer than the {MAX_SPIFFE_ID_BYTES} allowed"
        )


@dataclass(frozen=True, slots=True, order=True, repr=False)
class TrustDomain:
    """A SPIFFE trust domain name such as ``example.org``.

    Construction validates the name (bare, lower case, at most 255 bytes); instances are
    immutable, compare and hash by name, and order by name.
    """

    name: str

    def __post_init__(self) -> None:
        _check_trust_domain_name(self.name)

    @classmethod
    def _trusted(cls, name: str) -> TrustDomain:
        """Build from a name already known to be valid, skipping the checks (parsers only)."""
        domain = object.__new__(cls)
        object.__setattr__(domain, "name", name)
        return domain

    @classmethod
    def parse(cls, text: str) -> TrustDomain:
        """Accept a bare name (``example.org``) or a trust domain ID (``spiffe://example.org``).

        A SPIFFE ID with a path is rejected: a trust domain ID has none.
        """
        if isinstance(text, str) and "://" in text:
            spiffe_id = SpiffeId.parse(text)
            if spiffe_id.path:
                raise InvalidSpiffeIdError(
                    f"invalid trust domain {_shorten(text)!r}: a trust domain ID has no path"
                )
            return spiffe_id.trust_domain
        try:
            return cls(text)
        except InvalidSpiffeIdError as error:
            raise InvalidSpiffeIdError(
                f"invalid trust domain {_shorten(str(text))!r}: {error}"
            ) from None

    @property
    def id(self) -> SpiffeId:
        """The SPIFFE ID of the trust domain itself: ``spiffe://<name>``."""
        return SpiffeId._trusted(self, "")

    def __repr__(self) -> str:
        return f"TrustDomain({self.name!r})"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, order=True, repr=False)
class SpiffeId:
    """A SPIFFE ID: a trust domain and a path (``""`` for the trust domain's own ID).

    Construction validates the path and the total size; instances are immutable, compare and
    hash by value, and order by trust domain then path. ``str()`` gives the canonical text.
    """

    trust_domain: TrustDomain
    path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.trust_domain, TrustDomain):
            raise InvalidSpiffeIdError(
                f"trust domain must be a TrustDomain, found {type(self.trust_domain).__name__}"
            )
        _check_path(self.path)
        _check_size(self.trust_domain.name, self.path)

    @classmethod
    def _trusted(cls, trust_domain: TrustDomain, path: str) -> SpiffeId:
        """Build from parts already known to be valid, skipping the checks (parsers only)."""
        spiffe_id = object.__new__(cls)
        object.__setattr__(spiffe_id, "trust_domain", trust_domain)
        object.__setattr__(spiffe_id, "path", path)
        return spiffe_id

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse ``spiffe://<trust-domain>[/<path>]``, naming the broken rule on failure."""
        if isinstance(text, str) and len(text) <= MAX_SPIFFE_ID_BYTES:
            match = _ID_RE.fullmatch(text)
            if match is not None:
                name, path = match.groups()
                if len(name) <= MAX_TRUST_DOMAIN_BYTES and not (path and _has_dot_segment(path)):
                    return cls._trusted(TrustDomain._trusted(name), path)
        raise InvalidSpiffeIdError(
            f"invalid SPIFFE ID {_shorten(str(text))!r}: {_id_problem(text)}"
        )

    @classmethod
    def from_segments(cls, trust_domain: TrustDomain | str, *segments: str) -> SpiffeId:
        """Build ``spiffe://<td>/<seg1>/<seg2>...``; each segment is checked, none may hold '/'.

        With no segments the result is the trust domain's own ID.
        """
        domain = _as_trust_domain(trust_domain)
        for segment in segments:
            if not isinstance(segment, str):
                raise InvalidSpiffeIdError(
                    f"path segment must be a string, found {type(segment).__name__}"
                )
            if "/" in segment:
                raise InvalidSpiffeIdError(
                    f"invalid path segment {_shorten(segment)!r}: a segment must not contain '/'"
                )
            if not segment:
                raise InvalidSpiffeIdError("invalid path segment '': a segment must not be empty")
        return cls(domain, "".join("/" + segment for segment in segments))

    @classmethod
    def from_path(cls, trust_domain: TrustDomain | str, path: str) -> SpiffeId:
        """Build an ID from a trust domain and a path that starts with '/' (or is empty)."""
        return cls(_as_trust_domain(trust_domain), path)

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments, ``()`` for a trust domain ID."""
        return tuple(self.path[1:].split("/")) if self.path else ()

    def is_member_of(self, trust_domain: TrustDomain) -> bool:
        """True when this ID belongs to ``trust_domain``."""
        return self.trust_domain == trust_domain

    def is_trust_domain_id(self) -> bool:
        """True for ``spiffe://<td>`` with no path."""
        return not self.path

    def __repr__(self) -> str:
        return f"SpiffeId({str(self)!r})"

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain.name}{self.path}"


def _as_trust_domain(value: TrustDomain | str) -> TrustDomain:
    return value if isinstance(value, TrustDomain) else TrustDomain(value)


def _id_problem(text: object) -> str:
    """Explain why ``text`` is not a SPIFFE ID (it is known to be invalid)."""
    if not isinstance(text, str):
        return f"expected a string, found {type(text).__name__}"
    if not text:
        return "it is empty"
    size = len(text.encode())
    if size > MAX_SPIFFE_ID_BYTES:
        return f"it is {size} bytes, longer than the {MAX_SPIFFE_ID_BYTES} allowed"
    scheme, separator, rest = text.partition("://")
    if not separator or scheme != "spiffe":
        if separator and scheme.lower() == "spiffe":
            return "scheme must be lower case 'spiffe'"
        if not separator and text.lower().startswith("spiffe:"):
            return "scheme must be followed by '//' and the trust domain"
        return "scheme is missing or is not 'spiffe'"
    if "#" in rest:
        return "fragment is not allowed ('#')"
    if "?" in rest:
        return "query is not allowed ('?')"
    authority, slash, path = rest.partition("/")
    if authority == "":
        return "trust domain is missing"
    if len(authority) > MAX_TRUST_DOMAIN_BYTES or _TRUST_DOMAIN_RE.fullmatch(authority) is None:
        return _trust_domain_problem(authority)
    return _path_problem(slash + path)


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def parse_many(texts: Iterable[str]) -> list[SpiffeId]:
    """Parse several IDs, failing on the first invalid one."""
    return [SpiffeId.parse(text) for text in texts]


SERVER_ID_PATH = "/spire/server"
"""The path of a trust domain's server ID (SPIRE's scheme, which pyspire keeps)."""


def server_id(trust_domain: TrustDomain) -> SpiffeId:
    """``spiffe://<td>/spire/server``: the ID of the server of ``trust_domain``, which agents
    require of the server they talk to and which parents node aliases."""
    return SpiffeId._trusted(trust_domain, SERVER_ID_PATH)
