"""moto as KMS for these tests, with its ``Sign`` taught what AWS does with
``MessageType=DIGEST``.

moto's server hashes the ``Message`` of every ``Sign`` call whatever its ``MessageType``, and
makes RSA-PSS salts as long as possible; AWS signs a DIGEST message as the digest it is, with a
PSS salt as long as the digest. The key manager signs digests (that is all the key manager
interface gives it), so its tests against plain moto would only show moto's mistake (one test
does show it, and that the key manager refuses such a signature). ``kms_signs_digests`` replaces
moto's handler of DIGEST requests, inside the test process where the server thread runs, with
one signing the digest with the key moto keeps, the way AWS documents; RAW requests still go
to moto. Every signature is still checked by the tests against the public key KMS returns.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from pyspire_sdk.keys import sign_digest
from pyspire_sdk.plugins.key_manager import HashAlgorithm
from pyspire_sdk.testing.aws import MotoServer

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


@pytest.fixture
def kms_signs_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's KMS signs DIGEST messages as AWS does, for the duration of a test."""
    from moto.kms.responses import KmsResponse

    original = KmsResponse.sign

    def sign(self: Any) -> str:
        if self._get_param("MessageType") != "DIGEST":
            return str(original(self))
        return _sign_digest_as_aws(self)

    monkeypatch.setattr(KmsResponse, "sign", sign)


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """moto on loopback, found by the AWS SDK through the environment."""
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    return moto_server
