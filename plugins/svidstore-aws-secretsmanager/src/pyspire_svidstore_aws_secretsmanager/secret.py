"""The secret's value: SPIRE's JSON document of a stored SVID.

Field names are those SPIRE's ``svidstore.Data`` writes (``spiffeID``, ``x509SVID``,
``x509SVIDKey``, ``bundle`` and, when the entry federates, ``federatedBundles`` keyed by the
trust domain's ID ``spiffe://<name>``); each value is PEM: the chain leaf first, the key as
PKCS#8, the roots. The bytes are what Go's ``encoding/json`` makes of it (compact, map keys in
order; SPIFFE IDs and PEM hold none of the characters Go escapes beyond JSON's own), so a
reader of SPIRE's secrets reads these unchanged. The SVID store writes it as the secret's
binary value, as SPIRE does.
"""

from __future__ import annotations

__all__ = ["FIELD_NAMES", "encode_secret"]

import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugins.svid_store import StoredSvid

FIELD_NAMES = ("spiffeID", "x509SVID", "x509SVIDKey", "bundle", "federatedBundles")
"""The document's fields, in the order SPIRE writes them."""


def _certificates_pem(field: str, certificates: tuple[bytes, ...]) -> str:
    blocks = []
    for index, der in enumerate(certificates):
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError as error:
            raise InvalidArgumentError(f"{field}[{index}] is not a certificate: {error}") from None
        blocks.append(certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return "".join(blocks)


def _key_pem(private_key: bytes) -> str:
    try:
        key = serialization.load_der_private_key(private_key, password=None)
    except (ValueError, TypeError):
        raise InvalidArgumentError("private_key is not a PKCS#8 private key") from None
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode("ascii")


def encode_secret(svid: StoredSvid) -> bytes:
    """The secret value of ``svid``; :class:`InvalidArgumentError` when a certificate or the
    key does not parse."""
    document: dict[str, object] = {
        "spiffeID": str(svid.spiffe_id),
        "x509SVID": _certificates_pem("cert_chain", svid.cert_chain),
        "x509SVIDKey": _key_pem(svid.private_key),
        "bundle": _certificates_pem("bundle", svid.bundle),
    }
    if svid.federated_bundles:
        document["federatedBundles"] = {
            str(trust_domain.id): _certificates_pem(
                f"federated_bundles[{trust_domain.name}]", roots
            )
            for trust_domain, roots in sorted(
                svid.federated_bundles.items(), key=lambda item: str(item[0].id)
            )
        }
    return json.dumps(document, separators=(",", ":")).encode("ascii")
