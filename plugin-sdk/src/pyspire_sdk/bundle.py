"""Trust bundles: the public keys that verify a trust domain's SVIDs.

A :class:`Bundle` holds X.509 authorities (CA certificates, for X509-SVIDs) and JWT authorities
(public keys with a key ID, for JWT-SVIDs), plus the SPIFFE sequence number that changes on every
content change and the refresh hint that tells consumers how often to poll.

It converts to and from the formats SPIFFE and the Workload API speak:

- the SPIFFE bundle document (:meth:`Bundle.to_spiffe_json`, :meth:`Bundle.from_spiffe_json`):
  a JWK set whose keys carry ``use`` ``x509-svid`` (one CA certificate in ``x5c``, key
  parameters matching it, no ``kid``) or ``jwt-svid`` (``kid`` required), with
  ``spiffe_sequence`` and ``spiffe_refresh_hint``;
- PEM for the X.509 authorities (:meth:`Bundle.to_pem`, :meth:`Bundle.from_pem`);
- the plain JWK set of the Workload API's ``JWTBundlesResponse`` (:meth:`Bundle.jwt_bundle_jwks`);
- concatenated DER of the Workload API's X.509 bundle fields
  (:meth:`Bundle.x509_authorities_der`).

``tainted`` and ``expires_at`` are pyspire's own bookkeeping and are not part of these formats:
they are not written, and parsed authorities are untainted without an expiry.
"""

from __future__ import annotations

__all__ = [
    "SPIFFE_USE_JWT_SVID",
    "SPIFFE_USE_X509_SVID",
    "Bundle",
    "JwtAuthority",
    "X509Authority",
]

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.jwk import jwk_to_spki, public_key_from_jwk, public_key_to_jwk, spki_to_jwk
from pyspire_sdk.spiffeid import TrustDomain

SPIFFE_USE_X509_SVID = "x509-svid"
"""The JWK ``use`` of an X.509 authority in a SPIFFE bundle document."""

SPIFFE_USE_JWT_SVID = "jwt-svid"
"""The JWK ``use`` of a JWT authority in a SPIFFE bundle document."""

_KNOWN_KTY = frozenset({"EC", "RSA", "OKP"})
_MAX_UINT64 = 2**64 - 1
_MAX_INT64 = 2**63 - 1
_PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL | re.ASCII
)
_PEM_LINE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class X509Authority:
    """One CA certificate (DER). A tainted authority is on its way out and must not be used."""

    der: bytes
    tainted: bool = False

    @classmethod
    def from_certificate(
        cls, certificate: x509.Certificate, *, tainted: bool = False
    ) -> X509Authority:
        """The authority of a parsed certificate."""
        return cls(certificate.public_bytes(serialization.Encoding.DER), tainted)

    def certificate(self) -> x509.Certificate:
        """The parsed certificate; raises :class:`InvalidArgumentError` when the DER is broken."""
        try:
            return x509.load_der_x509_certificate(self.der)
        except ValueError:
            raise InvalidArgumentError("x509 authority is not a valid DER certificate") from None


@dataclass(frozen=True, slots=True)
class JwtAuthority:
    """One JWT signing public key (SubjectPublicKeyInfo DER) under its ``kid``."""

    key_id: str
    public_key: bytes
    expires_at: datetime | None = None
    tainted: bool = False


@dataclass(frozen=True, slots=True)
class Bundle:
    """The trust bundle of one trust domain."""

    trust_domain: TrustDomain
    x509_authorities: tuple[X509Authority, ...] = ()
    jwt_authorities: tuple[JwtAuthority, ...] = ()
    sequence_number: int = 0
    refresh_hint: int = 0

    def with_changes(self, **changes: object) -> Bundle:
        """A copy with ``changes`` applied and the sequence number moved on by one."""
        return replace(self, sequence_number=self.sequence_number + 1, **changes)  # type: ignore[arg-type]

    # -- SPIFFE bundle document -------------------------------------------------------------

    def to_spiffe_document(self) -> dict[str, Any]:
        """The SPIFFE bundle document as a JSON-ready dict (see :meth:`to_spiffe_json`)."""
        keys: list[dict[str, Any]] = []
        for index, authority in enumerate(self.x509_authorities):
            certificate = _load_authority(authority, index)
            try:
                public_key = certificate.public_key()
            except (ValueError, UnsupportedAlgorithm):
                raise InvalidArgumentError(
                    f"x509 authority {index}: its public key cannot be read"
                ) from None
            try:
                jwk = public_key_to_jwk(public_key, use=SPIFFE_USE_X509_SVID)  # type: ignore[arg-type]
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"x509 authority {index}: {error}") from None
            jwk["x5c"] = [base64.b64encode(authority.der).decode("ascii")]
            keys.append(jwk)
        for index, jwt_authority in enumerate(self.jwt_authorities):
            keys.append(_jwt_authority_jwk(jwt_authority, index, use=SPIFFE_USE_JWT_SVID))
        document: dict[str, Any] = {"keys": keys}
        if self.sequence_number:
            document["spiffe_sequence"] = self.sequence_number
        if self.refresh_hint:
            document["spiffe_refresh_hint"] = self.refresh_hint
        return document

    def to_spiffe_json(self, *, indent: int | None = None) -> str:
        """The SPIFFE bundle document (a JWK set) as JSON text.

        X.509 authorities become ``x509-svid`` keys holding exactly one certificate in ``x5c``
        (standard base64) with key parameters matching it and no ``kid``; JWT authorities become
        ``jwt-svid`` keys with their ``kid``. ``spiffe_sequence`` and ``spiffe_refresh_hint``
        are written when non-zero. Raises :class:`InvalidArgumentError` naming the authority
        when one cannot be expressed.
        """
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.to_spiffe_document(), indent=indent, separators=separators)

    @classmethod
    def from_spiffe_json(
        cls, trust_domain: TrustDomain, data: str | bytes | Mapping[str, Any]
    ) -> Bundle:
        """Parse a SPIFFE bundle document (JSON text, UTF-8 bytes or an already-decoded dict).

        Keys with an unknown ``kty`` or a missing or unknown ``use`` are ignored, as are
        ``x509-svid`` keys without ``x5c``, as the standard asks. Anything else malformed
        raises :class:`InvalidArgumentError` naming the key index and the problem: a missing
        ``keys`` array, more than one certificate in ``x5c``, key parameters that do not match
        the certificate, a ``jwt-svid`` key without ``kid`` or with a duplicate one, a negative
        or non-integer sequence number or refresh hint.
        """
        document = _decode_document(data)
        keys = document.get("keys")
        if keys is None:
            raise _bundle_error("'keys' is missing")
        if not isinstance(keys, list):
            raise _bundle_error(f"'keys' must be an array, found {_json_type(keys)}")
        x509_authorities: list[X509Authority] = []
        jwt_authorities: list[JwtAuthority] = []
        seen_kids: set[str] = set()
        for index, key in enumerate(keys):
            if not isinstance(key, Mapping):
                raise _bundle_error(f"key {index}: expected an object, found {_json_type(key)}")
            kty = key.get("kty")
            if kty is None:
                raise _bundle_error(f"key {index}: 'kty' is missing")
            if not isinstance(kty, str):
                raise _bundle_error(f"key {index}: 'kty' must be a string")
            use = key.get("use")
            if kty not in _KNOWN_KTY or use not in (SPIFFE_USE_X509_SVID, SPIFFE_USE_JWT_SVID):
                continue
            if use == SPIFFE_USE_X509_SVID:
                authority = _parse_x509_key(key, index)
                if authority is not None:
                    x509_authorities.append(authority)
            else:
                jwt_authority = _parse_jwt_key(key, index)
                if jwt_authority.key_id in seen_kids:
                    raise _bundle_error(
                        f"key {index}: 'kid' {jwt_authority.key_id!r} is used by another key"
                    )
                seen_kids.add(jwt_authority.key_id)
                jwt_authorities.append(jwt_authority)
        return cls(
            trust_domain=trust_domain,
            x509_authorities=tuple(x509_authorities),
            jwt_authorities=tuple(jwt_authorities),
            sequence_number=_non_negative(document, "spiffe_sequence", _MAX_UINT64),
            refresh_hint=_non_negative(document, "spiffe_refresh_hint", _MAX_INT64),
        )

    # -- PEM --------------------------------------------------------------------------------

    def to_pem(self) -> str:
        """The X.509 authorities as concatenated PEM ``CERTIFICATE`` blocks, in order."""
        blocks = []
        for authority in self.x509_authorities:
            body = base64.b64encode(authority.der).decode("ascii")
            lines = [
                body[start : start + _PEM_LINE_LENGTH]
                for start in range(0, len(body), _PEM_LINE_LENGTH)
            ]
            blocks.append(
                "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
            )
        return "".join(blocks)

    @classmethod
    def from_pem(cls, trust_domain: TrustDomain, data: str | bytes) -> Bundle:
        """A bundle of the X.509 authorities in PEM ``data`` (no JWT authorities).

        Text outside PEM blocks is ignored. Raises :class:`InvalidArgumentError` when there is
        no block, a block is not a ``CERTIFICATE`` or a certificate does not parse.
        """
        if isinstance(data, bytes):
            try:
                text = data.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidArgumentError("pem bundle is not ASCII text") from None
        else:
            text = data
        authorities = []
        for index, match in enumerate(_PEM_BLOCK.finditer(text)):
            label, body = match.groups()
            if label != "CERTIFICATE":
                raise InvalidArgumentError(
                    f"pem block {index} is {label!r}, expected 'CERTIFICATE'"
                )
            try:
                der = base64.b64decode("".join(body.split()), validate=True)
            except binascii.Error:
                raise InvalidArgumentError(f"pem block {index} is not valid base64") from None
            authority = X509Authority(der)
            try:
                x509.load_der_x509_certificate(der)
            except ValueError:
                raise InvalidArgumentError(
                    f"pem block {index} is not a valid certificate"
                ) from None
            authorities.append(authority)
        if not authorities:
            raise InvalidArgumentError("pem bundle has no CERTIFICATE block")
        return cls(trust_domain=trust_domain, x509_authorities=tuple(authorities))

    # -- Workload API -----------------------------------------------------------------------

    def jwt_bundle_jwks(self) -> bytes:
        """The JWT authorities as the plain JWK set the Workload API's JWT bundles carry.

        Every key has its ``kid`` (clients reject a set with any key lacking one); there is no
        ``use``, no X.509 authority and no ``spiffe_*`` member. UTF-8 JSON bytes, ready for the
        ``JWTBundlesResponse.bundles`` map.
        """
        keys = [
            _jwt_authority_jwk(authority, index, use=None)
            for index, authority in enumerate(self.jwt_authorities)
        ]
        return json.dumps({"keys": keys}, separators=(",", ":")).encode()

    def x509_authorities_der(self) -> bytes:
        """The X.509 authorities' certificates as concatenated DER, as the Workload API sends."""
        return b"".join(authority.der for authority in self.x509_authorities)


def _bundle_error(problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"invalid SPIFFE bundle document: {problem}")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _decode_document(data: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(data, Mapping):
        return data
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _bundle_error("it is not UTF-8 text") from None
    if not isinstance(data, str):
        raise _bundle_error(f"expected JSON text, found {type(data).__name__}")
    try:
        document = json.loads(data)
    except json.JSONDecodeError as error:
        raise _bundle_error(f"it is not valid JSON ({error.msg} at {error.pos})") from None
    if not isinstance(document, dict):
        raise _bundle_error(f"expected a JSON object, found {_json_type(document)}")
    return document


def _non_negative(document: Mapping[str, Any], name: str, maximum: int) -> int:
    value = document.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bundle_error(f"{name!r} must be an integer, found {_json_type(value)}")
    if value < 0 or value > maximum:
        raise _bundle_error(f"{name!r} must be between 0 and {maximum}, found {value}")
    return value


def _load_authority(authority: X509Authority, index: int) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(authority.der)
    except ValueError:
        raise InvalidArgumentError(
            f"x509 authority {index} is not a valid DER certificate"
        ) from None


def _jwt_authority_jwk(authority: JwtAuthority, index: int, *, use: str | None) -> dict[str, Any]:
    if not authority.key_id:
        raise InvalidArgumentError(f"jwt authority {index} has an empty key_id")
    try:
        return spki_to_jwk(authority.public_key, kid=authority.key_id, use=use)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(
            f"jwt authority {index} ({authority.key_id!r}): {error}"
        ) from None


def _parse_x509_key(key: Mapping[str, Any], index: int) -> X509Authority | None:
    chain = key.get("x5c")
    if chain is None or chain == []:
        return None
    if not isinstance(chain, list):
        raise _bundle_error(f"key {index}: 'x5c' must be an array, found {_json_type(chain)}")
    if len(chain) != 1:
        raise _bundle_error(
            f"key {index}: 'x5c' must hold exactly one certificate, found {len(chain)}"
        )
    encoded = chain[0]
    if not isinstance(encoded, str):
        raise _bundle_error(f"key {index}: 'x5c' entry must be a string")
    try:
        der = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise _bundle_error(
            f"key {index}: 'x5c' entry is not standard base64 (base64url is not allowed)"
        ) from None
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise _bundle_error(f"key {index}: 'x5c' entry is not a valid DER certificate") from None
    try:
        declared = public_key_from_jwk(key)
    except InvalidArgumentError as error:
        raise _bundle_error(f"key {index}: {error}") from None
    try:
        certified = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise _bundle_error(f"key {index}: the certificate's public key cannot be read") from None
    if _spki(declared) != _spki(certified):
        raise _bundle_error(
            f"key {index}: key parameters do not match the certificate's public key"
        )
    return X509Authority(der)


def _spki(key: Any) -> bytes:
    encoded: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


def _parse_jwt_key(key: Mapping[str, Any], index: int) -> JwtAuthority:
    kid = key.get("kid")
    if kid is None or kid == "":
        raise _bundle_error(f"key {index}: 'kid' is required for a jwt-svid key")
    if not isinstance(kid, str):
        raise _bundle_error(f"key {index}: 'kid' must be a string, found {_json_type(kid)}")
    try:
        public_key = jwk_to_spki(key)
    except InvalidArgumentError as error:
        raise _bundle_error(f"key {index}: {error}") from None
    return JwtAuthority(key_id=kid, public_key=public_key)
