"""Trust bundles on the wire: ``spire.api.types.Bundle`` from and to SDK bundles."""

from __future__ import annotations

__all__ = ["decode_bundle", "encode_bundle"]

from datetime import datetime

from pyspire.proto.convert import bundle_from_proto
from pyspire.proto.gen.codec.spire_api_types import (
    decode_Bundle,
    write_Bundle,
    write_JWTKey,
    write_X509Certificate,
)
from pyspire_sdk.bundle import Bundle


def _seconds(moment: datetime | None) -> int:
    return int(moment.timestamp()) if moment is not None else 0


def encode_bundle(bundle: Bundle) -> bytes:
    """The encoding of ``bundle`` as a ``spire.api.types.Bundle``."""
    return write_Bundle(
        trust_domain=bundle.trust_domain.name,
        x509_authorities=[
            write_X509Certificate(asn1=authority.der, tainted=authority.tainted)
            for authority in bundle.x509_authorities
        ],
        jwt_authorities=[
            write_JWTKey(
                public_key=authority.public_key,
                key_id=authority.key_id,
                expires_at=_seconds(authority.expires_at),
                tainted=authority.tainted,
            )
            for authority in bundle.jwt_authorities
        ],
        refresh_hint=bundle.refresh_hint,
        sequence_number=bundle.sequence_number,
    )


def decode_bundle(data: bytes, field: str = "bundle") -> Bundle:
    """The bundle an encoded ``spire.api.types.Bundle`` holds, validated (errors name
    ``field``); :class:`~pyspire.proto.errors.DecodeError` when the bytes are not one."""
    return bundle_from_proto(decode_Bundle(data), field)
