"""Reading the secrets this store writes, as a workload would, for tests.

:func:`read_secret` decodes SPIRE's JSON document of a stored SVID back to DER, and
:func:`read_stored` fetches it from Secrets Manager with boto3 (a secret unknown or scheduled
for deletion reads as ``None``): the SDK's SVID store contract suite reads through them.
"""

from __future__ import annotations

__all__ = ["read_secret", "read_stored"]

import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.svid_store_contract import ReadBack


def _certificates(pem: str) -> tuple[bytes, ...]:
    return tuple(
        certificate.public_bytes(serialization.Encoding.DER)
        for certificate in x509.load_pem_x509_certificates(pem.encode("ascii"))
    )


def read_secret(value: bytes) -> ReadBack:
    """The stored SVID in a secret's value (SPIRE's document)."""
    document = json.loads(value)
    key = serialization.load_pem_private_key(document["x509SVIDKey"].encode("ascii"), None)
    return ReadBack(
        spiffe_id=SpiffeId.parse(document["spiffeID"]),
        cert_chain=_certificates(document["x509SVID"]),
        private_key=key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        bundle=_certificates(document["bundle"]),
        federated_bundles={
            TrustDomain.parse(trust_domain): _certificates(pem)
            for trust_domain, pem in document.get("federatedBundles", {}).items()
        },
    )


def read_stored(client: Any, secret_id: str) -> ReadBack | None:
    """The SVID in the current version of secret ``secret_id``, read with the boto3
    ``client``; ``None`` when the secret is unknown or scheduled for deletion."""
    from botocore.exceptions import ClientError

    try:
        description = client.describe_secret(SecretId=secret_id)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise
    if description.get("DeletedDate") is not None:
        return None
    answer = client.get_secret_value(SecretId=secret_id)
    return read_secret(answer["SecretBinary"])
