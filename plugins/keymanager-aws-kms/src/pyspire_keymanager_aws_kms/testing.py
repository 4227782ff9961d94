"""moto's KMS, made to sign digests the way AWS does, for tests and benchmarks.

moto's server hashes the ``Message`` of every ``Sign`` call whatever its ``MessageType``, and
makes RSA-PSS salts as long as possible; AWS signs a ``DIGEST`` message as the digest it is,
with a PSS salt as long as the digest. The key manager signs digests (that is all the key
manager interface gives it), so against plain moto every signature it gets is wrong, and it
refuses them (it verifies each one). :func:`moto_kms_signs_digests` replaces moto's handler of
``DIGEST`` requests, inside the process where a :class:`~pyspire_sdk.testing.aws.MotoServer`
thread runs, with one that signs the digest with the key moto keeps, as AWS documents; ``RAW``
requests still go to moto. moto is imported only when this is used.
"""

from __future__ import annotations

__all__ = ["moto_kms_signs_digests"]

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyspire_sdk.keys import sign_digest
from pyspire_sdk.plugins.key_manager import HashAlgorithm

_HASHES = {"256": HashAlgorithm.SHA256, "384": HashAlgorithm.SHA384, "512": HashAlgorithm.SHA512}


def _sign_digest_as_aws(response: Any) -> str:
    algorithm = str(response._get_param("SigningAlgorithm"))
    key = response.kms_backend.describe_key(response._get_param("KeyId"))
    message = response._get_param("Message")
    digest = message.encode("latin-1") if isinstance(message, str) else bytes(message)
    hash_algorithm = _HASHES[algorithm[-3:]]
    if len(digest) != hash_algorithm.digest_size:
        digest = base64.b64decode(digest)
    signature = sign_digest(
        key.private_key.private_key, digest, hash_algorithm, rsa_pss="PSS" in algorithm
    )
    return json.dumps(
        {
            "KeyId": key.arn,
            "Signature": base64.b64encode(signature).decode("ascii"),
            "SigningAlgorithm": algorithm,
        }
    )


@contextmanager
def moto_kms_signs_digests() -> Iterator[None]:
    """Within the block, moto's KMS (in this process) signs ``DIGEST`` messages as AWS does."""
    from moto.kms.responses import KmsResponse

    original = KmsResponse.sign

    def sign(self: Any) -> str:
        if self._get_param("MessageType") != "DIGEST":
            return str(original(self))
        return _sign_digest_as_aws(self)

    KmsResponse.sign = sign  # type: ignore[method-assign]
    try:
        yield
    finally:
        KmsResponse.sign = original  # type: ignore[method-assign]
