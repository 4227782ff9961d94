"""SPIFFE IDs and trust domains, strictly by the SPIFFE-ID standard.

Parsing rejects everything the standard forbids and says which rule broke. Output is always in
canonical form: lower-case scheme and trust domain, path exactly as given.
"""

from __future__ import annotations

__all__ = ["MAX_SPIFFE_ID_BYTES", "MAX_TRUST_DOMAIN_BYTES", "SpiffeId", "TrustDomain"]

from collections.abc import Iterable
from dataclasses import dataclass

from pyspire_sdk.errors import InvalidSpiffeIdError

SCHEME_PREFIX = "spiffe://"
MAX_SPIFFE_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255

_TRUST_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


def _check_trust_domain_name(name: str) -> None:
    if not name:
        raise InvalidSpiffeIdError("trust domain is missing")
    if len(name.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeIdError(
            f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
        )
    for char in name:
        if char in _TRUST_DOMAIN_CHARS:
            continue
        if char == ":":
            raise InvalidSpiffeIdError("trust domain must not include a port")
        if char == "@":
            raise InvalidSpiffeIdError("trust domain must not include user info")
        if char == "%":
            raise InvalidSpiffeIdError("trust domain must not be percent-encoded")
        if char.isupper():
            raise InvalidSpiffeIdError(
                "trust domain must be lower case (letters a-z, digits, '.', '-', '_')"
            )
        raise InvalidSpiffeIdError(
            f"trust domain has a forbidden character {char!r}: only a-z, 0-9, '.', '-' "
            "and '_' are allowed"
        )


def _check_path(path: str) -> None:
    """Check a path that is empty or starts with '/' against the standard's segment rules."""
    if not path:
        return
    if not path.startswith("/"):
        raise InvalidSpiffeIdError("path must start with '/'")
    for segment in path[1:].split("/"):
        if segment == "":
            raise InvalidSpiffeIdError(
                "path has an empty segment (no '//' and no trailing '/')"
            )
        if segment in (".", ".."):
            raise InvalidSpiffeIdError("path must not have a '.' or '..' segment")
        for char in segment:
            if char not in _PATH_CHARS:
                if char == "%":
                    raise InvalidSpiffeIdError("path must not be percent-encoded")
                raise InvalidSpiffeIdError(
                    f"path has a forbidden character {char!r}: only letters, digits, '.', "
                    "'-' and '_' are allowed in a segment"
                )


@dataclass(frozen=True, slots=True)
class TrustDomain:
    """A SPIFFE trust domain name such as ``example.org``."""

    name: str

    def __post_init__(self) -> None:
        _check_trust_domain_name(self.name)

    @classmethod
    def parse(cls, text: str) -> TrustDomain:
        """Accept a bare name (``example.org``) or a trust domain ID (``spiffe://example.org``)."""
        if "://" in text:
            spiffe_id = SpiffeId.parse(text)
            if spiffe_id.path:
                raise InvalidSpiffeIdError(
                    f"invalid trust domain {text!r}: a trust domain ID has no path"
                )
            return spiffe_id.trust_domain
        try:
            return cls(text)
        except InvalidSpiffeIdError as error:
            raise InvalidSpiffeIdError(f"invalid trust domain {text!r}: {error}") from None

    @property
    def id(self) -> SpiffeId:
        """The SPIFFE ID of the trust domain itself: ``spiffe://<name>``."""
        return SpiffeId(self, "")

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A SPIFFE ID: a trust domain and a path (``""`` for the trust domain's own ID)."""

    trust_domain: TrustDomain
    path: str = ""

    def __post_init__(self) -> None:
        _check_path(self.path)
        size = len(SCHEME_PREFIX) + len(self.trust_domain.name.encode()) + len(self.path.encode())
        if size > MAX_SPIFFE_ID_BYTES:
            raise InvalidSpiffeIdError(
                f"SPIFFE ID is {size} bytes, longer than the {MAX_SPIFFE_ID_BYTES} allowed"
            )

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse ``spiffe://<trust-domain>[/<path>]``, naming the broken rule on failure."""
        try:
            return cls._parse(text)
        except InvalidSpiffeIdError as error:
            raise InvalidSpiffeIdError(f"invalid SPIFFE ID {_shorten(text)!r}: {error}") from None

    @classmethod
    def _parse(cls, text: str) -> SpiffeId:
        if not text:
            raise InvalidSpiffeIdError("it is empty")
        if len(text.encode()) > MAX_SPIFFE_ID_BYTES:
            raise InvalidSpiffeIdError(f"it is longer than {MAX_SPIFFE_ID_BYTES} bytes")
        scheme, separator, rest = text.partition("://")
        if not separator:
            raise InvalidSpiffeIdError("scheme is missing or is not 'spiffe://'")
        if scheme != "spiffe":
            if scheme.lower() == "spiffe":
                raise InvalidSpiffeIdError("scheme must be lower case 'spiffe'")
            raise InvalidSpiffeIdError(f"scheme must be 'spiffe', found {scheme!r}")
        if "?" in rest:
            raise InvalidSpiffeIdError("query is not allowed")
        if "#" in rest:
            raise InvalidSpiffeIdError("fragment is not allowed")
        authority, slash, path = rest.partition("/")
        return cls(TrustDomain(authority), slash + path)

    @classmethod
    def from_segments(cls, trust_domain: TrustDomain | str, *segments: str) -> SpiffeId:
        """Build ``spiffe://<td>/<seg1>/<seg2>...``; each segment is checked, none may hold '/'."""
        domain = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain(trust_domain)
        for segment in segments:
            if "/" in segment:
                raise InvalidSpiffeIdError(
                    f"invalid path segment {segment!r}: a segment must not contain '/'"
                )
        return cls(domain, "".join("/" + segment for segment in segments))

    @classmethod
    def from_path(cls, trust_domain: TrustDomain | str, path: str) -> SpiffeId:
        """Build an ID from a trust domain and a path that starts with '/' (or is empty)."""
        domain = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain(trust_domain)
        return cls(domain, path)

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

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain.name}{self.path}"


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def parse_many(texts: Iterable[str]) -> list[SpiffeId]:
    """Parse several IDs, failing on the first invalid one."""
    return [SpiffeId.parse(text) for text in texts]
